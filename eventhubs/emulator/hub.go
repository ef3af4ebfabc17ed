package emulator

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// hub is one event hub: partitions and consumer groups.
type hub struct {
	e          *Emulator
	name       string
	created    time.Time
	partitions []*partition
	rr         atomic.Uint32

	mu     sync.Mutex
	groups map[string]*group
}

func newHub(e *Emulator, name string, n int) *hub {
	h := &hub{e: e, name: name, created: time.UnixMilli(time.Now().UnixMilli()).UTC(), groups: map[string]*group{}}
	for i := 0; i < n; i++ {
		h.partitions = append(h.partitions, &partition{hub: h, id: i, subs: map[*conn]struct{}{}})
	}
	h.group(DefaultConsumerGroup, true)
	return h
}

// partition returns the partition with the given string id, or nil.
func (h *hub) partition(id string) *partition {
	n, err := strconv.Atoi(id)
	if err != nil || n < 0 || n >= len(h.partitions) || strconv.Itoa(n) != id {
		return nil
	}
	return h.partitions[n]
}

// pick chooses the partition for an event sent to the hub itself.
func (h *hub) pick(key *string) *partition {
	if key != nil {
		f := fnv.New32a()
		_, _ = f.Write([]byte(*key))
		return h.partitions[f.Sum32()%uint32(len(h.partitions))]
	}
	return h.partitions[(h.rr.Add(1)-1)%uint32(len(h.partitions))]
}

// group returns the consumer group, creating it when create.
func (h *hub) group(name string, create bool) *group {
	key := strings.ToLower(name)
	h.mu.Lock()
	defer h.mu.Unlock()
	g := h.groups[key]
	if g == nil && create {
		g = &group{name: name, parts: make([]*receiverSet, len(h.partitions))}
		for i := range g.parts {
			g.parts[i] = &receiverSet{}
		}
		h.groups[key] = g
	}
	return g
}

// event is one stored event, encoded as delivered to receivers.
type event struct {
	seq      int64
	offset   int64
	enqueued time.Time
	msg      []byte
}

// partition is an append-only log.
type partition struct {
	hub *hub
	id  int

	mu         sync.RWMutex
	events     []*event // retained events, oldest first
	nextSeq    int64
	nextOffset int64
	bytes      int64
	lastTime   time.Time
	subs       map[*conn]struct{}
}

// pendingEvent is an event before it is stamped.
type pendingEvent struct {
	key  *string
	body func(seq, offset int64, enqueued time.Time) []byte
}

// append stamps and stores events atomically and wakes subscribers.
func (p *partition) append(evs []pendingEvent) {
	p.mu.Lock()
	now := time.UnixMilli(time.Now().UnixMilli()).UTC()
	if now.Before(p.lastTime) {
		now = p.lastTime
	}
	for _, pe := range evs {
		ev := &event{seq: p.nextSeq, offset: p.nextOffset, enqueued: now}
		ev.msg = pe.body(ev.seq, ev.offset, now)
		p.events = append(p.events, ev)
		p.nextSeq++
		p.nextOffset += int64(len(ev.msg))
		p.bytes += int64(len(ev.msg))
	}
	p.lastTime = now
	p.trim()
	subs := make([]*conn, 0, len(p.subs))
	for c := range p.subs {
		subs = append(subs, c)
	}
	p.mu.Unlock()
	for _, c := range subs {
		c.notify()
	}
}

// trim applies retention; the newest event always stays.
func (p *partition) trim() {
	cfg := &p.hub.e.cfg
	drop := 0
	for len(p.events)-drop > 1 {
		over := cfg.RetentionCount > 0 && len(p.events)-drop > cfg.RetentionCount
		over = over || cfg.RetentionBytes > 0 && p.bytes > cfg.RetentionBytes
		if !over {
			break
		}
		p.bytes -= int64(len(p.events[drop].msg))
		p.events[drop] = nil
		drop++
	}
	if drop > 0 {
		p.events = p.events[drop:]
		if cap(p.events) > 64 && len(p.events) < cap(p.events)/4 {
			p.events = append([]*event(nil), p.events...)
		}
	}
}

// read returns up to max events with sequence number >= from.
func (p *partition) read(from int64, max int) []*event {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if len(p.events) == 0 {
		return nil
	}
	first := p.events[0].seq
	i := from - first
	if i < 0 {
		i = 0
	}
	if i >= int64(len(p.events)) {
		return nil
	}
	end := i + int64(max)
	if end > int64(len(p.events)) {
		end = int64(len(p.events))
	}
	return append([]*event(nil), p.events[i:end]...)
}

// partitionInfo is a consistent snapshot for management replies.
type partitionInfo struct {
	begin, last int64
	lastOffset  string
	lastTime    time.Time
	empty       bool
}

func (p *partition) info() partitionInfo {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if len(p.events) == 0 {
		return partitionInfo{begin: 0, last: -1, lastOffset: "-1", lastTime: time.UnixMilli(0).UTC(), empty: true}
	}
	last := p.events[len(p.events)-1]
	return partitionInfo{
		begin:      p.events[0].seq,
		last:       last.seq,
		lastOffset: strconv.FormatInt(last.offset, 10),
		lastTime:   last.enqueued,
	}
}

func (p *partition) subscribe(c *conn) {
	p.mu.Lock()
	p.subs[c] = struct{}{}
	p.mu.Unlock()
}

func (p *partition) unsubscribe(c *conn) {
	p.mu.Lock()
	delete(p.subs, c)
	p.mu.Unlock()
}

// startPosition is a parsed selector filter.
type startPosition struct {
	field     string // "offset", "seq", "time", "" for earliest
	inclusive bool
	latest    bool
	value     int64
}

// resolve returns the first sequence number the filter selects.
func (p *partition) resolve(sp startPosition) int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if sp.latest {
		return p.nextSeq
	}
	for _, ev := range p.events {
		var v int64
		switch sp.field {
		case "":
			return ev.seq
		case "offset":
			v = ev.offset
		case "seq":
			v = ev.seq
		case "time":
			v = ev.enqueued.UnixMilli()
		}
		if v > sp.value || sp.inclusive && v == sp.value {
			return ev.seq
		}
	}
	return p.nextSeq
}

// group is a consumer group: the receivers of each partition.
type group struct {
	name  string
	parts []*receiverSet
}

// receiverSet holds the receivers of one partition in one consumer group.
type receiverSet struct {
	mu        sync.Mutex
	receivers []*receiverReg
}

// receiverReg is one registered receiver link.
type receiverReg struct {
	c      *conn
	linkID uint64
	name   string
	epoch  *int64
}

// errRefused carries the condition of a refused attach.
type errRefused struct {
	cond string
	desc string
}

func (e *errRefused) Error() string { return e.cond + ": " + e.desc }

// register admits r under the epoch rules and returns the receivers it
// stole from.
func (rs *receiverSet) register(r *receiverReg, maxNonEpoch int, tracker string) ([]*receiverReg, *errRefused) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var highest *receiverReg
	nonEpoch := 0
	for _, o := range rs.receivers {
		if o.epoch != nil {
			if highest == nil || *o.epoch > *highest.epoch {
				highest = o
			}
		} else {
			nonEpoch++
		}
	}
	if r.epoch == nil {
		if highest != nil {
			return nil, &errRefused{CondLinkStolen, fmt.Sprintf(
				"Receiver '%s' with no epoch cannot be created because a receiver '%s' with epoch '%d' already exists. %s",
				r.name, highest.name, *highest.epoch, tracker)}
		}
		if nonEpoch >= maxNonEpoch {
			names := make([]string, 0, len(rs.receivers))
			for _, o := range rs.receivers {
				names = append(names, o.name)
			}
			return nil, &errRefused{CondResourceLimitExceeded, fmt.Sprintf(
				"Exceeded the maximum number of allowed receivers per partition in a consumer group which is %d. List of connected receivers - %s. %s",
				maxNonEpoch, strings.Join(names, ", "), tracker)}
		}
		rs.receivers = append(rs.receivers, r)
		return nil, nil
	}
	if highest != nil && *highest.epoch > *r.epoch {
		return nil, &errRefused{CondLinkStolen, fmt.Sprintf(
			"Receiver '%s' with epoch '%d' cannot be created because a receiver '%s' with a higher epoch of '%d' already exists. %s",
			r.name, *r.epoch, highest.name, *highest.epoch, tracker)}
	}
	stolen := rs.receivers
	rs.receivers = []*receiverReg{r}
	return stolen, nil
}

func (rs *receiverSet) unregister(linkID uint64) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for i, o := range rs.receivers {
		if o.linkID == linkID {
			rs.receivers = append(rs.receivers[:i], rs.receivers[i+1:]...)
			return
		}
	}
}
