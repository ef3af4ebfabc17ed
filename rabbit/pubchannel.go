package rabbit

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/isobroker/broker/driver"
)

// How a publishing channel learns each message's fate.
//
// Confirms: every message is written with PublishWithDeferredConfirm, and
// its outcome is read from its own DeferredConfirmation, which amqp091-go
// resolves from the basic.ack / basic.nack naming that delivery tag (a
// multiple ack or nack resolves only the tags still waiting). We never use
// NotifyPublish: it expands a multiple ack over an earlier out-of-order
// nack (reporting the nacked message as acked) and abandons a listener
// that does not take a confirmation within 5 s. A DeferredConfirmation
// that resolves negatively while the channel is closed was resolved by the
// channel's end, not by the server: the message counts as lost and is
// resent (amqp091 marks the channel closed before it resolves the waiting
// confirmations, so the check cannot miss it).
//
// Returns: a mandatory message that reached no queue comes back as a
// basic.return before its basic.ack. Each such message carries a stamp
// unique within its Broker in its app-id property ("isobroker/<n>"; the
// adapter exposes no app-id, so deliveries never show it) and returns are
// matched by that stamp alone. amqp091 puts a return into the channel's
// (buffered) return queue before it processes the ack that follows, so a
// Publish that holds its acks drains the queue under the channel's lock
// and finds every return of its messages either in the queue or already
// recorded by an earlier drain. The writer drains it too before every
// write, which keeps the queue (sized above the window) from ever filling:
// amqp091 would block on a full one and give up after 5 s.
//
// Window: a channel's writer lets at most Config.PublishWindow messages be
// written and not yet resolved; it waits for the oldest to resolve before
// writing more.

// stampPrefix starts the app-id that carries a publish's return stamp.
const stampPrefix = "isobroker/"

// stampAppID is the app-id of stamp, built in one allocation.
func stampAppID(stamp int64) string {
	var b [len(stampPrefix) + 20]byte
	return string(strconv.AppendInt(append(b[:0], stampPrefix...), stamp, 10))
}

// pubChannel is one confirm-mode channel of the publishing pool: a writer
// goroutine that alone publishes on it, and a watcher of its close
// notification.
type pubChannel struct {
	s   *session
	id  int
	ch  *amqp.Channel
	in  chan *batch   // unbuffered: a batch handed over is always finished
	end chan struct{} // closed when the channel is gone

	returns chan amqp.Return // amqp091's return queue; drained under mu

	mu       sync.Mutex
	returned map[int64]string // stamp → the return's reply, until its Publish takes it
	orphans  []written        // writes of Publish calls that returned first: their returns are dropped
	err      *amqp.Error      // why the channel closed
	serverCh bool             // closed by a server channel error, the connection alive

	nackStreak atomic.Int32  // nacks since the last ack (see noteConfirm)
	retired    atomic.Bool   // to be closed by its writer after a nack streak, and replaced
	retiring   chan struct{} // closed by retire: wakes the writer to close the channel
}

// openChannel opens one confirm-mode channel of the pool and starts its
// goroutines.
func (s *session) openChannel(id int) (*pubChannel, error) {
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, err
	}
	pc := &pubChannel{
		s: s, id: id, ch: ch,
		in:       make(chan *batch),
		end:      make(chan struct{}),
		retiring: make(chan struct{}),
		returned: make(map[int64]string),
	}
	// amqp091's reader must never wait on this queue (it drops a return
	// after 5 s). The writer drains it before every write, with room in
	// the window, so what can arrive before the next drain are returns of
	// messages in flight then and of the one write after it: at most
	// PublishWindow. Each entry is about 280 bytes, all allocated here:
	// the queue is the largest part of an open's memory, so no more room
	// than that bound and a small margin.
	pc.returns = ch.NotifyReturn(make(chan amqp.Return, s.l.b.cfg.PublishWindow+16))
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))
	s.l.b.wg.Add(2)
	go func() {
		defer s.l.b.wg.Done()
		pc.watchClose(closes)
	}()
	go func() {
		defer s.l.b.wg.Done()
		pc.write()
	}()
	return pc, nil
}

// openPool opens the first channel of the publishing pool; the others
// are opened on demand (grow), so that an instance whose publishes come
// one at a time holds one channel and its two goroutines.
func (s *session) openPool(ctx context.Context) error {
	s.pool = make([]atomic.Pointer[pubChannel], s.l.b.cfg.PublishChannels)
	s.grow = make(chan struct{}, 1)
	if err := ctx.Err(); err != nil {
		return err
	}
	pc, err := s.openChannel(0)
	if err != nil {
		return err
	}
	s.pool[0].Store(pc)
	s.opened.Store(1)
	s.l.log.Debug("rabbit: publishing channel open in confirm mode", "host", s.ep.redacted,
		"pool", len(s.pool), "window", s.l.b.cfg.PublishWindow)
	return nil
}

// wantChannel asks for one more channel of the pool, when some are not
// open yet: a Publish found the writer of the channel it picked busy. The
// topology goroutine opens it (growPool); asking again while it does is
// one request.
func (s *session) wantChannel() {
	if int(s.opened.Load()) >= len(s.pool) {
		return
	}
	select {
	case s.grow <- struct{}{}:
	default:
	}
}

// growPool opens the next channel of the pool (on the topology
// goroutine). A failure is logged and leaves the pool as it is: the next
// busy writer asks again, and a dead connection is the supervisor's.
func (s *session) growPool() {
	id := int(s.opened.Load())
	if id >= len(s.pool) || s.isDead() {
		return
	}
	pc, err := s.openChannel(id)
	if err != nil {
		s.l.log.Debug("rabbit: opening another publishing channel failed", "channel", id, "err", err)
		return
	}
	s.pool[id].Store(pc)
	s.opened.Store(int32(id + 1))
	s.l.log.Debug("rabbit: publishing channel added", "channel", id, "open", id+1, "pool", len(s.pool))
}

// pick returns a live channel of the pool, round robin, or nil.
func (s *session) pick() *pubChannel {
	n := len(s.pool)
	start := int(s.rr.Add(1))
	for i := range n {
		pc := s.pool[(start+i)%n].Load()
		if pc == nil {
			continue
		}
		if pc.retired.Load() {
			continue
		}
		select {
		case <-pc.end:
		default:
			return pc
		}
	}
	return nil
}

// dcRing is the writer's window: the confirmations of the messages it
// wrote, oldest first.
type dcRing struct {
	buf        []*amqp.DeferredConfirmation
	head, size int
}

func (r *dcRing) push(dc *amqp.DeferredConfirmation) {
	r.buf[(r.head+r.size)%len(r.buf)] = dc
	r.size++
}

func (r *dcRing) oldest() *amqp.DeferredConfirmation { return r.buf[r.head] }

func (r *dcRing) pop() {
	r.buf[r.head] = nil
	r.head = (r.head + 1) % len(r.buf)
	r.size--
}

// write publishes the batches handed to it until the channel is gone.
func (pc *pubChannel) write() {
	win := &dcRing{buf: make([]*amqp.DeferredConfirmation, pc.s.l.b.cfg.PublishWindow)}
	retiring := pc.retiring
	for {
		select {
		case b := <-pc.in:
			pc.publish(b, win)
		case <-retiring:
			// The writer alone publishes on the channel, so it alone may
			// close it: a publish written after our channel.close would
			// make RabbitMQ close the whole connection (504 CHANNEL_ERROR).
			retiring = nil
			_ = pc.ch.Close()
		case <-pc.end:
			return
		}
	}
}

// publish writes the messages of b's round, each once there is room in the
// window, until the round is written, b's ctx ends (the rest is skipped)
// or the channel fails (the rest is lost, to be resent).
func (pc *pubChannel) publish(b *batch, win *dcRing) {
	mandatory := !pc.s.l.b.cfg.AllowUnroutable
	// Read idx once: when the round is finished Publish may start the
	// next one on the same batch.
	idx := b.idx
	for k, i := range idx {
		if pc.retired.Load() {
			b.finishRound(idx[k:], stLost)
			return
		}
		for win.size == len(win.buf) {
			select {
			case <-win.oldest().Done():
				win.pop()
			case <-b.ctx.Done():
				b.finishRound(idx[k:], stSkipped)
				return
			case <-pc.end:
				b.finishRound(idx[k:], stLost)
				return
			}
		}
		if b.ctx.Err() != nil || !b.startWrite() {
			b.finishRound(idx[k:], stSkipped)
			return
		}
		p := b.pubs[i]
		var stamp int64
		if mandatory {
			stamp = pc.s.l.b.stamps.Add(1)
			p.AppId = stampAppID(stamp)
			pc.drainReturns()
		}
		dc, err := pc.ch.PublishWithDeferredConfirm(b.topic, b.keys[i], mandatory, false, p)
		if err != nil {
			b.endWrite(written{})
			pc.s.l.log.Debug("rabbit: publish write failed", "channel", pc.id, "err", err)
			b.finishRound(idx[k:], stLost)
			return
		}
		win.push(dc)
		w := written{i: i, dc: dc, stamp: stamp, ok: true}
		if !b.endWrite(w) {
			pc.abandon([]written{w})
		}
		// Keep the window short without waiting: drop what resolved.
		for win.size > 0 && isDone(win.oldest()) {
			win.pop()
		}
	}
	b.finishRound(nil, 0)
}

func isDone(dc *amqp.DeferredConfirmation) bool {
	select {
	case <-dc.Done():
		return true
	default:
		return false
	}
}

// watchClose waits for the channel's close notification, marks the
// channel gone and, after a server channel error, has it replaced.
func (pc *pubChannel) watchClose(closes chan *amqp.Error) {
	e := <-closes // a value, or closed on a normal close
	pc.mu.Lock()
	pc.err = e
	// A channel error closes just this channel; a connection error closes
	// the connection first (amqp091 marks it closed before its channels).
	pc.serverCh = e != nil && e.Server && !pc.s.conn.IsClosed()
	serverCh := pc.serverCh
	retired := pc.retired.Load() && !pc.s.conn.IsClosed()
	pc.mu.Unlock()
	if serverCh {
		// Before end wakes a Publish that resends: an exchange the error
		// was about is declared again first.
		pc.s.forgetDeclared()
	}
	close(pc.end)
	if serverCh {
		pc.s.l.log.Warn("rabbit: publishing channel closed by the server", "channel", pc.id, "reason", errorText(e))
	}
	if serverCh || retired {
		pc.s.l.b.wg.Go(func() { pc.s.replace(pc) }) // this goroutine counts in wg: Add cannot race Wait
	}
}

// nackStreakToRetire is how many nacks in a row, with no ack between
// them, make a publishing channel be replaced.
const nackStreakToRetire = 3

// noteConfirm counts a confirmation the server sent on the channel, and
// retires the channel after nackStreakToRetire nacks in a row. RabbitMQ
// 3.10 nacks every publish of a channel whose first publish to a quorum
// queue found the queue's leader down, for as long as the channel lives
// (measured on a cluster: such a channel was nacked for minutes, while
// one opened after the election published fine). A full queue that
// rejects publishes nacks too, but a channel that also carries other
// traffic sees acks between its nacks and is kept: replacing it costs
// the resend of every message it has in flight.
func (pc *pubChannel) noteConfirm(acked bool) {
	if acked {
		pc.nackStreak.Store(0)
		return
	}
	if pc.nackStreak.Add(1) >= nackStreakToRetire {
		pc.retire()
	}
}

// retire has the writer close the channel, once, so that it is replaced
// by a fresh one; from now on no Publish picks it and its writer writes
// nothing more on it. The channel's other unconfirmed messages are resent
// by their Publish calls, as after any channel loss.
func (pc *pubChannel) retire() {
	if !pc.retired.CompareAndSwap(false, true) {
		return
	}
	pc.s.l.log.Info("rabbit: replacing a publishing channel the server nacks every message on", "channel", pc.id,
		"nacks_in_a_row", pc.nackStreak.Load())
	close(pc.retiring)
}

// drainReturns records every return in the queue.
func (pc *pubChannel) drainReturns() {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.drainLocked()
}

func (pc *pubChannel) drainLocked() {
	for {
		select {
		case r, ok := <-pc.returns:
			if !ok {
				return
			}
			pc.recordLocked(r)
			continue
		default:
		}
		break
	}
	// Returns of calls that gave up waiting: once a write's confirm is in,
	// its return (which came first) has been recorded and can go.
	if len(pc.orphans) > 0 {
		kept := pc.orphans[:0]
		for _, w := range pc.orphans {
			if isDone(w.dc) {
				delete(pc.returned, w.stamp)
			} else {
				kept = append(kept, w)
			}
		}
		clear(pc.orphans[len(kept):])
		pc.orphans = kept
	}
}

// recordLocked notes a return by its stamp. A return without a stamp this
// Broker issued is an inconsistency nothing can resolve: the channel is
// failed, so that its unconfirmed messages are resent.
func (pc *pubChannel) recordLocked(r amqp.Return) {
	stamp, err := strconv.ParseInt(strings.TrimPrefix(r.AppId, stampPrefix), 10, 64)
	if !strings.HasPrefix(r.AppId, stampPrefix) || err != nil || stamp <= 0 || stamp > pc.s.l.b.stamps.Load() {
		pc.s.l.log.Error("rabbit: a return that no publish of this broker stamped; failing the channel",
			"channel", pc.id, "exchange", r.Exchange, "key", r.RoutingKey)
		pc.s.l.b.wg.Go(func() { _ = pc.ch.Close() }) // the channel's close watcher counts in wg
		return
	}
	pc.returned[stamp] = fmt.Sprintf("%d %s", r.ReplyCode, r.ReplyText)
}

// takeReturns drains the return queue and moves the returns of ws into
// reason (by message index), once every confirmation of ws is in.
func (pc *pubChannel) takeReturns(ws []written, reason []string) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.drainLocked()
	for _, w := range ws {
		if why, ok := pc.returned[w.stamp]; ok {
			delete(pc.returned, w.stamp)
			reason[w.i] = why
		}
	}
}

// abandon hands the writes of a Publish that stops waiting to the channel,
// which drops their returns once they are confirmed.
func (pc *pubChannel) abandon(ws []written) {
	if len(ws) == 0 || pc.s.l.b.cfg.AllowUnroutable {
		return
	}
	pc.mu.Lock()
	pc.orphans = append(pc.orphans, ws...)
	pc.mu.Unlock()
}

// closeReason is why the channel closed and whether it was a server channel
// error; valid once end is closed.
func (pc *pubChannel) closeReason() (*amqp.Error, bool) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.err, pc.serverCh
}

// replace reopens a pool channel the server closed with a channel error,
// while the connection lives, retrying with backoff until it succeeds or
// the connection ends.
func (s *session) replace(old *pubChannel) {
	for attempt := 1; ; attempt++ {
		if s.isDead() {
			return
		}
		pc, err := s.openChannel(old.id)
		if err == nil {
			s.pool[old.id].Store(pc)
			s.l.log.Info("rabbit: publishing channel reopened", "channel", old.id, "attempt", attempt)
			return
		}
		delay := driver.BackoffDelay(s.l.b.cfg.Backoff, attempt)
		s.l.log.Warn("rabbit: reopening publishing channel failed", "channel", old.id, "attempt", attempt, "err", err, "wait", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-s.dead:
			t.Stop()
			return
		case <-s.l.b.killed:
			t.Stop()
			return
		}
	}
}
