package eventhubs_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/checkpoint"
	"github.com/isobroker/broker/eventhubs/emulator"
)

// Helpers of the load-balancing tests: a recorder that puts the members'
// store writes and handler calls into one order, a store wrapper that
// records and injects faults, and a cluster of members on one hub.

// recorder keeps, in one global order, the ownership claims won, the
// checkpoints written and the events handled by all members of a test.
type recorder struct {
	mu      sync.Mutex
	n       int64
	claims  map[string][]claimRec  // partition → claims won, in order
	cps     map[string][]cpRec     // partition → checkpoints written, in order
	handled map[string][]handleRec // partition → handler calls, in order
	ids     map[string]int         // event id → handler calls
}

type claimRec struct {
	at           int64
	owner        string // "" for a relinquish
	lastModified time.Time
}

type cpRec struct {
	at  int64
	seq int64
	by  string
}

type handleRec struct {
	at     int64
	member string
	seq    int64
}

func newRecorder() *recorder {
	return &recorder{claims: map[string][]claimRec{}, cps: map[string][]cpRec{}, handled: map[string][]handleRec{}, ids: map[string]int{}}
}

func (r *recorder) claimed(w checkpoint.Ownership) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	r.claims[w.PartitionID] = append(r.claims[w.PartitionID], claimRec{r.n, w.OwnerID, w.LastModified})
}

func (r *recorder) checkpointed(cp checkpoint.Checkpoint, by string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	r.cps[cp.PartitionID] = append(r.cps[cp.PartitionID], cpRec{r.n, cp.SequenceNumber, by})
}

func (r *recorder) handle(member string, d *broker.Delivery) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	p := d.Metadata.Partition
	r.handled[p] = append(r.handled[p], handleRec{r.n, member, d.Metadata.SequenceNumber})
	r.ids[d.ID]++
}

// missing returns the ids never handled.
func (r *recorder) missing(ids []string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, id := range ids {
		if r.ids[id] == 0 {
			out = append(out, id)
		}
	}
	return out
}

// maxHandled returns the highest sequence number handled per partition.
func (r *recorder) maxHandled() map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int64{}
	for p, hs := range r.handled {
		for _, h := range hs {
			if v, ok := out[p]; !ok || h.seq > v {
				out[p] = h.seq
			}
		}
	}
	return out
}

// claimsOf returns the claims of partition p won by owner, in order.
func (r *recorder) claimsOf(p, owner string) []claimRec {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []claimRec
	for _, c := range r.claims[p] {
		if c.owner == owner {
			out = append(out, c)
		}
	}
	return out
}

// dupReport summarises the duplicates of a test run.
type dupReport struct {
	handled, dups int
	handovers     int   // runs of ownership that followed another member's
	window        int64 // events handled but not checkpointed when those runs began, summed
	maxRunDups    int   // most duplicates handled in one run
}

func (d dupReport) String() string {
	return fmt.Sprintf("%d handler calls, %d duplicates over %d hand-overs (max %d in one), un-checkpointed window at hand-over summed %d",
		d.handled, d.dups, d.handovers, d.maxRunDups, d.window)
}

// checkDuplicates asserts that every duplicate handler call was within
// the un-checkpointed window: an event handled again by member M was not
// covered by any checkpoint written before M's ownership run of that
// partition began (a run is M's consecutive won claims, unbroken by a
// claim of anyone else or a relinquish). A new owner that started before
// the checkpoint it should have read — or from the earliest event — is
// caught here. It also fails for an event handled by a member that never
// claimed its partition.
func (r *recorder) checkDuplicates(t *testing.T) dupReport {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var rep dupReport
	for p, hs := range r.handled {
		runs := ownershipRuns(r.claims[p])
		if len(runs) == 0 {
			t.Errorf("partition %s: events handled, but nobody ever claimed it", p)
			continue
		}
		first := slices.Min(slices.Collect(maps.Keys(runs)))
		for start := range runs {
			if start == first {
				continue
			}
			rep.handovers++
			if w := handledBefore(hs, start) - checkpointBefore(r.cps[p], start); w > 0 {
				rep.window += w
			}
		}
		seen := map[int64]bool{}
		perRun := map[int64]int{}
		for _, h := range hs {
			rep.handled++
			start, ok := runStartBefore(runs, h.member, h.at)
			if !ok {
				t.Errorf("partition %s: %s handled sequence %d without ever claiming the partition", p, h.member, h.seq)
				continue
			}
			if !seen[h.seq] {
				seen[h.seq] = true
				continue
			}
			rep.dups++
			perRun[start]++
			if cp := checkpointBefore(r.cps[p], start); cp >= h.seq {
				t.Errorf("partition %s: %s handled sequence %d again although checkpoint %d was written before its ownership began",
					p, h.member, h.seq, cp)
			}
		}
		for _, n := range perRun {
			rep.maxRunDups = max(rep.maxRunDups, n)
		}
	}
	return rep
}

// ownershipRuns maps the global order of each run's first claim to its
// owner; a run is a sequence of consecutive claims by one owner.
func ownershipRuns(claims []claimRec) map[int64]string {
	runs := map[int64]string{}
	cur := ""
	for _, c := range claims {
		if c.owner != cur {
			cur = c.owner
			if c.owner != "" {
				runs[c.at] = c.owner
			}
		}
	}
	return runs
}

// runStartBefore returns the start of member's latest run begun before at.
func runStartBefore(runs map[int64]string, member string, at int64) (int64, bool) {
	best, ok := int64(0), false
	for start, owner := range runs {
		if owner == member && start < at && start > best {
			best, ok = start, true
		}
	}
	return best, ok
}

// checkpointBefore returns the highest checkpoint written before at, or -1.
func checkpointBefore(cps []cpRec, at int64) int64 {
	best := int64(-1)
	for _, c := range cps {
		if c.at < at && c.seq > best {
			best = c.seq
		}
	}
	return best
}

// handledBefore returns the highest sequence handled before at, or -1.
func handledBefore(hs []handleRec, at int64) int64 {
	best := int64(-1)
	for _, h := range hs {
		if h.at < at && h.seq > best {
			best = h.seq
		}
	}
	return best
}

// faultStore wraps the store a member uses: it records the claims won and
// checkpoints written, counts balancing rounds (one ListOwnership call
// each, plus one when a renewal raced), and injects faults on demand.
type faultStore struct {
	inner  checkpoint.Store
	rec    *recorder
	member string

	lists atomic.Int64 // ListOwnership calls
	down  atomic.Bool  // every call fails, retryably
	// conflictEvery > 0 makes every n-th claim that carries an ETag meet
	// a competing write first (the record is rewritten unchanged, which
	// gives it a new ETag), so that the claim loses its race.
	conflictEvery atomic.Int64
	withETag      atomic.Int64
	conflicts     atomic.Int64
	failures      atomic.Int64 // calls failed because down
}

var _ checkpoint.Store = (*faultStore)(nil)

func (f *faultStore) fail(op string) error {
	if f.down.Load() {
		f.failures.Add(1)
		return fmt.Errorf("test store of %s: %s: %w", f.member, op, broker.ErrUnavailable)
	}
	return nil
}

func (f *faultStore) ClaimOwnership(ctx context.Context, claims []checkpoint.Ownership) ([]checkpoint.Ownership, error) {
	if err := f.fail("claim"); err != nil {
		return nil, err
	}
	if k := f.conflictEvery.Load(); k > 0 {
		for _, c := range claims {
			if c.ETag == "" || f.withETag.Add(1)%k != 0 {
				continue
			}
			if err := f.compete(ctx, c); err != nil {
				return nil, err
			}
		}
	}
	won, err := f.inner.ClaimOwnership(ctx, claims)
	for _, w := range won {
		f.rec.claimed(w)
	}
	return won, err
}

// compete rewrites c's record as it is, changing its ETag.
func (f *faultStore) compete(ctx context.Context, c checkpoint.Ownership) error {
	list, err := f.inner.ListOwnership(ctx, c.Namespace, c.EventHub, c.ConsumerGroup)
	if err != nil {
		return err
	}
	for _, o := range list {
		if o.PartitionID == c.PartitionID {
			won, err := f.inner.ClaimOwnership(ctx, []checkpoint.Ownership{o})
			for _, w := range won {
				f.rec.claimed(w)
				f.conflicts.Add(1)
			}
			return err
		}
	}
	return nil
}

func (f *faultStore) ListOwnership(ctx context.Context, namespace, eventHub, consumerGroup string) ([]checkpoint.Ownership, error) {
	f.lists.Add(1)
	if err := f.fail("list ownership"); err != nil {
		return nil, err
	}
	return f.inner.ListOwnership(ctx, namespace, eventHub, consumerGroup)
}

func (f *faultStore) ListCheckpoints(ctx context.Context, namespace, eventHub, consumerGroup string) ([]checkpoint.Checkpoint, error) {
	if err := f.fail("list checkpoints"); err != nil {
		return nil, err
	}
	return f.inner.ListCheckpoints(ctx, namespace, eventHub, consumerGroup)
}

func (f *faultStore) SetCheckpoint(ctx context.Context, cp checkpoint.Checkpoint) error {
	if err := f.fail("set checkpoint"); err != nil {
		return err
	}
	err := f.inner.SetCheckpoint(ctx, cp)
	if err == nil {
		f.rec.checkpointed(cp, f.member)
	}
	return err
}

// cluster is a set of load-balanced members, each with a Broker of its
// own, on one hub of an emulator, sharing one store.
type cluster struct {
	t     *testing.T
	e     *emulator.Emulator
	hub   string
	parts int
	store checkpoint.Store
	opts  eventhubs.BalanceOptions
	rec   *recorder

	mu      sync.Mutex
	members []*member

	pub       *eventhubs.Broker
	published []string // ids accepted by Publish, guarded by mu
	stopPub   chan struct{}
	pubDone   chan struct{}
}

type member struct {
	name string
	b    *eventhubs.Broker
	sub  *eventhubs.BalancedSubscription
	fs   *faultStore
	logs *logBuffer
	gone atomic.Bool // closed or killed: no longer part of the group
}

func newCluster(t *testing.T, e *emulator.Emulator, parts int, store checkpoint.Store, opts eventhubs.BalanceOptions) *cluster {
	t.Helper()
	c := &cluster{t: t, e: e, hub: newHub(t, e, parts), parts: parts, store: store, opts: opts, rec: newRecorder()}
	c.pub = open(t, e, nil)
	return c
}

// join starts a member named name.
func (c *cluster) join(name string) *member {
	c.t.Helper()
	return c.joinWith(name, func(*faultStore) {})
}

// joinDown starts a member whose store is down from the start.
func (c *cluster) joinDown(name string) *member {
	c.t.Helper()
	return c.joinWith(name, func(fs *faultStore) { fs.down.Store(true) })
}

func (c *cluster) joinWith(name string, setup func(*faultStore)) *member {
	t := c.t
	t.Helper()
	m := &member{name: name, logs: &logBuffer{}}
	m.b = open(t, c.e, m.logs, eventhubs.WithName(name))
	m.fs = &faultStore{inner: c.store, rec: c.rec, member: name}
	setup(m.fs)
	o := c.opts
	o.OwnerID = name
	opts := []broker.SubscribeOption{broker.StartAt(broker.Earliest()),
		broker.WithDriverOption(eventhubs.Balanced(m.fs, o))}
	sub, err := m.b.Subscribe(ctxT(t, 30*time.Second), c.hub, func(_ context.Context, d *broker.Delivery) error {
		c.rec.handle(name, d)
		return nil
	}, opts...)
	if err != nil {
		t.Fatalf("member %s: subscribe: %v", name, err)
	}
	m.sub = sub.(*eventhubs.BalancedSubscription)
	if m.sub.OwnerID() != name {
		t.Errorf("member %s: OwnerID() = %q", name, m.sub.OwnerID())
	}
	c.mu.Lock()
	c.members = append(c.members, m)
	c.mu.Unlock()
	t.Cleanup(func() {
		if t.Failed() && testing.Verbose() {
			t.Logf("log of member %s:\n%s", name, m.logs.String())
		}
	})
	return m
}

// live returns the members still in the group.
func (c *cluster) live() []*member {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*member
	for _, m := range c.members {
		if !m.gone.Load() {
			out = append(out, m)
		}
	}
	return out
}

// view returns the store's unexpired owners by partition.
func (c *cluster) view() map[string]checkpoint.Ownership {
	c.t.Helper()
	list, err := c.store.ListOwnership(ctxT(c.t, 30*time.Second), c.ns(), c.hub, eventhubs.DefaultConsumerGroup)
	if err != nil {
		c.t.Fatalf("list ownership: %v", err)
	}
	out := map[string]checkpoint.Ownership{}
	for _, o := range list {
		out[o.PartitionID] = o
	}
	return out
}

func (c *cluster) ns() string {
	if c.opts.Namespace != "" {
		return c.opts.Namespace
	}
	cfg, err := eventhubs.ParseConnectionString(c.e.ConnectionString(""))
	if err != nil {
		c.t.Fatal(err)
	}
	return cfg.Namespace
}

// converged reports whether the live members hold an even spread, in
// the store (unexpired claims) and in what Owned reports, and describes
// the state.
func (c *cluster) converged(live []*member) (bool, string) {
	view := c.view()
	byOwner := map[string][]string{}
	now := time.Now()
	for p, o := range view {
		if o.OwnerID != "" && now.Sub(o.LastModified) <= c.opts.OwnershipExpiration {
			byOwner[o.OwnerID] = append(byOwner[o.OwnerID], p)
		}
	}
	n := len(live)
	lo, hi := c.parts/n, (c.parts+n-1)/n
	ok, total := true, 0
	desc := ""
	for _, m := range live {
		stored := byOwner[m.name]
		slices.SortFunc(stored, cmpIDs)
		owned := m.sub.Owned()
		desc += fmt.Sprintf(" %s:store%v/owned%v", m.name, stored, owned)
		total += len(stored)
		if len(stored) < lo || len(stored) > hi || !slices.Equal(stored, owned) {
			ok = false
		}
	}
	return ok && total == c.parts, desc
}

func cmpIDs(a, b string) int {
	x, _ := strconv.Atoi(a)
	y, _ := strconv.Atoi(b)
	return x - y
}

// rounds returns each member's balancing rounds so far.
func rounds(ms []*member) map[string]int64 {
	out := map[string]int64{}
	for _, m := range ms {
		out[m.name] = m.fs.lists.Load()
	}
	return out
}

// waitConverged waits until the live members converge and returns the
// most rounds any member of watch made since base. It fails when one of
// them needs more than maxRounds (or, as a guard against hanging, after
// a generous time).
func (c *cluster) waitConverged(what string, watch []*member, base map[string]int64, maxRounds int64) int64 {
	c.t.Helper()
	guard := time.Now().Add(90 * time.Second)
	for {
		live := c.live()
		ok, desc := c.converged(live)
		used := int64(0)
		for _, m := range watch {
			used = max(used, m.fs.lists.Load()-base[m.name])
		}
		if ok {
			c.t.Logf("%s: converged after %d rounds:%s", what, used, desc)
			return used
		}
		if used > maxRounds {
			c.t.Fatalf("%s: not converged within %d rounds:%s", what, maxRounds, desc)
		}
		if time.Now().After(guard) {
			c.t.Fatalf("%s: not converged (%d rounds so far):%s", what, used, desc)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitRounds waits until every member of ms made n more rounds.
func waitRounds(t *testing.T, ms []*member, n int64) {
	t.Helper()
	base := rounds(ms)
	guard := time.Now().Add(90 * time.Second)
	for _, m := range ms {
		for m.fs.lists.Load() < base[m.name]+n {
			if time.Now().After(guard) {
				t.Fatalf("member %s made %d of %d rounds", m.name, m.fs.lists.Load()-base[m.name], n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// publish starts publishing one event per partition every tick until
// stopPublishing.
func (c *cluster) publish(tick time.Duration) {
	c.stopPub, c.pubDone = make(chan struct{}), make(chan struct{})
	n := 0
	go func() {
		defer close(c.pubDone)
		tk := time.NewTicker(tick)
		defer tk.Stop()
		for {
			select {
			case <-c.stopPub:
				return
			case <-tk.C:
			}
			ms := make([]*broker.Message, c.parts)
			for p := range ms {
				ms[p] = &broker.Message{ID: fmt.Sprintf("ev-%d", n), Headers: map[string]string{eventhubs.PartitionIDHeader: strconv.Itoa(p)}}
				n++
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := c.pub.Publish(ctx, c.hub, ms...)
			cancel()
			if err != nil {
				c.t.Errorf("publish: %v", err)
				return
			}
			c.mu.Lock()
			for _, m := range ms {
				c.published = append(c.published, m.ID)
			}
			c.mu.Unlock()
		}
	}()
	c.t.Cleanup(c.stopPublishing)
}

// stopPublishing stops the publisher and returns how many events it
// published.
func (c *cluster) stopPublishing() {
	if c.stopPub == nil {
		return
	}
	select {
	case <-c.stopPub:
	default:
		close(c.stopPub)
	}
	<-c.pubDone
}

// publishNow publishes n events per partition and waits for them.
func (c *cluster) publishNow(prefix string, n int) []string {
	c.t.Helper()
	var ms []*broker.Message
	for i := range n {
		for p := range c.parts {
			ms = append(ms, &broker.Message{ID: fmt.Sprintf("%s-%d-%d", prefix, p, i), Headers: map[string]string{eventhubs.PartitionIDHeader: strconv.Itoa(p)}})
		}
	}
	if err := c.pub.Publish(ctxT(c.t, 20*time.Second), c.hub, ms...); err != nil {
		c.t.Fatalf("publish: %v", err)
	}
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	c.mu.Lock()
	c.published = append(c.published, ids...)
	c.mu.Unlock()
	return ids
}

// waitHandled waits until every published event was handled.
func (c *cluster) waitHandled(what string) {
	c.t.Helper()
	c.mu.Lock()
	ids := slices.Clone(c.published)
	c.mu.Unlock()
	guard := time.Now().Add(60 * time.Second)
	for {
		miss := c.rec.missing(ids)
		if len(miss) == 0 {
			c.t.Logf("%s: all %d published events handled", what, len(ids))
			return
		}
		if time.Now().After(guard) {
			c.t.Fatalf("%s: %d of %d events never handled, e.g. %v", what, len(miss), len(ids), miss[:min(5, len(miss))])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// closeMember closes m's subscription gracefully.
func (c *cluster) closeMember(m *member) {
	c.t.Helper()
	m.gone.Store(true)
	if err := m.sub.Close(ctxT(c.t, 30*time.Second)); err != nil {
		c.t.Errorf("member %s: close: %v", m.name, err)
	}
	select {
	case <-m.sub.Done():
	default:
		c.t.Errorf("member %s: Done not closed after Close returned", m.name)
	}
	if got := m.sub.Owned(); got != nil {
		c.t.Errorf("member %s: Owned() = %v after Close", m.name, got)
	}
}

// kill ends m as a crash would: its store fails from now on (nothing is
// checkpointed or relinquished any more), then its Broker closes.
func (c *cluster) kill(m *member) {
	c.t.Helper()
	m.gone.Store(true)
	m.fs.down.Store(true)
	_ = m.b.Close(ctxT(c.t, 30*time.Second))
}

// overlapMonitor samples the members' Owned every few milliseconds and
// records partitions that two members report at once. For each such
// overlap it counts the balancing rounds that the members who gave the
// partition up started while it lasted (counted between the first and
// the last sample that saw it, so late sampling never inflates it).
type overlapMonitor struct {
	stop chan struct{}
	done chan struct{}

	mu        sync.Mutex
	overlaps  int
	maxRounds int64
	maxDur    time.Duration
	worst     string
}

type overlapState struct {
	first, last time.Time
	members     []string
	lists0      map[string]int64
	lists1      map[string]int64
}

func (c *cluster) monitorOverlaps() *overlapMonitor {
	om := &overlapMonitor{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(om.done)
		open := map[string]*overlapState{}
		for {
			select {
			case <-om.stop:
				return
			case <-time.After(3 * time.Millisecond):
			}
			c.mu.Lock()
			ms := slices.Clone(c.members)
			c.mu.Unlock()
			holders := map[string][]*member{}
			lists := map[string]int64{}
			for _, m := range ms {
				lists[m.name] = m.fs.lists.Load()
				for _, p := range m.sub.Owned() {
					holders[p] = append(holders[p], m)
				}
			}
			now := time.Now()
			for p := range c.parts {
				id := strconv.Itoa(p)
				hs := holders[id]
				st := open[id]
				if len(hs) >= 2 {
					if st == nil {
						st = &overlapState{first: now, lists0: maps.Clone(lists)}
						open[id] = st
					}
					st.last, st.lists1 = now, maps.Clone(lists)
					for _, m := range hs {
						if !slices.Contains(st.members, m.name) {
							st.members = append(st.members, m.name)
						}
					}
					continue
				}
				if st == nil {
					continue
				}
				delete(open, id)
				var r int64
				for _, name := range st.members {
					if len(hs) == 1 && hs[0].name == name {
						continue // the one who kept it
					}
					r = max(r, st.lists1[name]-st.lists0[name])
				}
				om.mu.Lock()
				om.overlaps++
				if r > om.maxRounds || st.last.Sub(st.first) > om.maxDur {
					om.worst = fmt.Sprintf("partition %s held by %v for %v (%d rounds)", id, st.members, st.last.Sub(st.first), r)
				}
				om.maxRounds = max(om.maxRounds, r)
				om.maxDur = max(om.maxDur, st.last.Sub(st.first))
				om.mu.Unlock()
			}
		}
	}()
	c.t.Cleanup(om.finish)
	return om
}

func (om *overlapMonitor) finish() {
	select {
	case <-om.stop:
	default:
		close(om.stop)
	}
	<-om.done
}

// check stops the monitor and asserts that no overlap outlived one round
// of the member that gave the partition up.
func (om *overlapMonitor) check(t *testing.T) {
	t.Helper()
	om.finish()
	om.mu.Lock()
	defer om.mu.Unlock()
	t.Logf("overlaps seen: %d, longest %v, most rounds %d %s", om.overlaps, om.maxDur, om.maxRounds, om.worst)
	if om.maxRounds > 1 {
		t.Errorf("a partition was held by two members across %d rounds of the one giving it up: %s", om.maxRounds, om.worst)
	}
}
