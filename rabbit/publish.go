package rabbit

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
)

// Message outcomes of one round of a Publish call.
const (
	stPending  uint32 = iota
	stAcked           // basic.ack
	stNacked          // basic.nack
	stReturned        // basic.return, then basic.ack
	stLost            // the channel ended before the confirm: resend
	stSkipped         // not sent: the call's ctx ended first
)

// batch is one Publish call's messages. Publish hands it to a channel's
// writer once per round (the first send, then one per resend); the writer
// appends what it wrote to written, and Publish settles those from their
// confirmations.
type batch struct {
	ctx    context.Context
	topic  string
	pubs   []amqp.Publishing
	keys   []string
	idx    []int    // the messages of this round
	status []uint32 // per message; set by the writer for what it did not write
	reason []string // reply text of returns

	// The bodies are copies in arena (see arena.go). writing counts the
	// writers inside a publish of this batch's messages; once finished is
	// set (Publish has returned) no writer starts another.
	arena    *[]byte
	wmu      sync.Mutex
	writing  int
	finished bool
	written  []written     // this round's writes, in order
	complete bool          // the writer is done with this round
	nudge    chan struct{} // capacity 1: something was appended, or complete
}

// written is one message the writer published.
type written struct {
	i     int
	dc    *amqp.DeferredConfirmation
	stamp int64 // its return stamp (mandatory publishes)
	ok    bool  // false: the write failed (only counted for writing)
}

// startWrite reserves the batch's bodies for one write; false means
// Publish has returned and the rest of the batch is not to be sent.
func (b *batch) startWrite() bool {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	if b.finished {
		return false
	}
	b.writing++
	return true
}

// endWrite ends the write startWrite reserved, recording w when it was
// written. It reports false when Publish stopped waiting meanwhile: w is
// then nobody's to settle.
func (b *batch) endWrite(w written) bool {
	b.wmu.Lock()
	b.writing--
	if w.ok {
		b.written = append(b.written, w)
	}
	waited := !b.finished
	b.wmu.Unlock()
	b.poke()
	return waited
}

// finishRound marks the messages the writer did not write with st and the
// round as complete.
func (b *batch) finishRound(rest []int, st uint32) {
	for _, i := range rest {
		atomic.StoreUint32(&b.status[i], st)
	}
	b.wmu.Lock()
	b.complete = true
	b.wmu.Unlock()
	b.poke()
}

func (b *batch) poke() {
	select {
	case b.nudge <- struct{}{}:
	default:
	}
}

// startRound prepares the batch for a round over todo.
func (b *batch) startRound(todo []int) {
	b.idx = todo
	for _, i := range todo {
		b.status[i] = stPending
	}
	b.wmu.Lock()
	b.written = b.written[:0]
	b.complete = false
	b.wmu.Unlock()
	select {
	case <-b.nudge:
	default:
	}
}

// progress returns what the writer has written so far and whether it is
// done with the round.
func (b *batch) progress() ([]written, bool) {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	return b.written, b.complete
}

// recycle runs when Publish returns: no writer starts on the batch from
// then on. Its arena goes back to the pool unless a writer is still inside
// a write, and the batch itself to the batch pool when its last round is
// complete (no writer holds it any more); otherwise the garbage collector
// takes them.
func (b *batch) recycle(br *Broker) {
	b.wmu.Lock()
	b.finished = true
	idle := b.writing == 0
	reusable := idle && b.complete
	b.wmu.Unlock()
	if idle && b.arena != nil {
		br.arenas.put(b.arena)
	}
	b.arena = nil
	if reusable {
		b.reset()
		br.batches.Put(b)
	}
}

// reset clears a batch for reuse, keeping its slices' capacity.
func (b *batch) reset() {
	b.ctx, b.topic = nil, ""
	clear(b.pubs)
	clear(b.keys)
	clear(b.reason)
	clear(b.written[:cap(b.written)])
	b.written = b.written[:0]
	b.finished, b.complete, b.writing = false, false, 0
	select {
	case <-b.nudge:
	default:
	}
}

// abandonRound stops the round (no writer starts another of its messages)
// and leaves what it wrote to the channel.
func (b *batch) abandonRound(pc *pubChannel) {
	b.wmu.Lock()
	b.finished = true
	ws := b.written
	b.wmu.Unlock()
	pc.abandon(ws)
}

// settleRound waits for the confirmation of every message the writer
// writes in this round and records each one's outcome in status, until the
// round is settled (nil) or ctx ends (the number of messages of the round
// still unsettled, and ctx's error).
func (b *batch) settleRound(ctx context.Context, pc *pubChannel) (int, error) {
	next := 0
	var ws []written
	for {
		var complete bool
		ws, complete = b.progress()
		for ; next < len(ws); next++ {
			w := ws[next]
			select {
			case <-w.dc.Done():
			case <-ctx.Done():
				b.abandonRound(pc)
				return len(b.idx) - next, ctx.Err()
			}
			switch {
			case w.dc.Acked():
				b.status[w.i] = stAcked
				pc.noteConfirm(true)
			case pc.ch.IsClosed():
				// Resolved by the channel's end, not by a nack.
				b.status[w.i] = stLost
			default:
				b.status[w.i] = stNacked
				pc.noteConfirm(false)
			}
		}
		if complete {
			break // nothing is appended after complete
		}
		select {
		case <-b.nudge:
		case <-ctx.Done():
			b.abandonRound(pc)
			return len(b.idx) - next, ctx.Err()
		}
	}
	if pc.s.l.b.cfg.AllowUnroutable || len(ws) == 0 {
		return 0, nil
	}
	pc.takeReturns(ws, b.reason)
	for _, w := range ws {
		if b.reason[w.i] != "" && b.status[w.i] == stAcked {
			b.status[w.i] = stReturned
		}
	}
	return 0, nil
}

// maxChannelErrors bounds how often one Publish call resends after server
// channel errors (as opposed to connection loss, which it rides out until
// its ctx ends).
const maxChannelErrors = 3

// maxNackResends bounds how often one Publish call sends a nacked message
// again, after a pause of nackBackoff's step, before it reports ErrNacked:
// 6 pauses of 25–50 ms doubling up to 0.5–1 s add up to 1.3–2.6 s, longer
// than a quorum queue's leader election after its leader's node died
// (0.3–1.1 s measured on a three-node cluster), during which every
// publish to the queue is nacked.
const (
	maxNackResends = 6
	nackPause      = 50 * time.Millisecond // nackBackoff's first step
)

// nackBackoff is the pause before each resend of a nacked message.
func nackBackoff() broker.Backoff { return broker.Backoff{Initial: nackPause, Max: 20 * nackPause} }

// Publish sends msgs to topic's exchange (declared durable, type topic, on
// first use per connection) as persistent messages with routing key
// Message.Key, pipelined on a pool of confirm-mode channels, and returns
// nil once the server confirmed every one. Every outcome is the server's
// answer for that very message: its own basic.ack or basic.nack, and a
// basic.return matched by a stamp unique to the publish.
//
// A message the server nacks is sent again up to 6 times over 1.3–2.6 s
// (RabbitMQ nacks a message when a queue it was routed to failed as it
// arrived — an exclusive queue of a connection going away, a quorum queue
// electing a new leader, a full queue with x-overflow reject-publish —
// though other queues may have taken it): when it is still nacked the
// call fails with ErrNacked. Each resend may duplicate the message in the
// queues that took it. A channel the server nacks 3 messages in a row on
// is replaced, and the other calls' unconfirmed messages on it are resent
// too. A message no queue is bound for fails it with ErrUnroutable (unless
// Config.AllowUnroutable). The error names the first failed message of the
// call as a *broker.MessageError; the other messages of the call may have
// been taken. When the connection or channel is lost before a message is
// confirmed, Publish transparently resends it on a live channel until ctx
// ends: delivery is at-least-once, so such a message may arrive twice.
// Publish waits for recovery, and while the server blocks publishers
// (memory or disk alarm) it waits by ctx and then fails with an error
// wrapping ErrBlocked and ctx's error.
//
// At most Config.PublishWindow messages per channel are written ahead of
// their confirms; Publish waits for room by ctx. When ctx ends first,
// Publish returns at once with ctx's error: the messages it had written
// may still be delivered, and it writes nothing more (a write already on
// the socket completes). Fields AMQP 0-9-1 bounds are checked first (see
// the errors wrapping ErrInvalidOption), so that a bad message fails
// alone, before anything of the call is sent. Publish copies the bodies,
// so the caller may reuse them as soon as it returns. After Close it
// returns ErrClosed at once.
func (b *Broker) Publish(ctx context.Context, topic string, msgs ...*broker.Message) error {
	if b.ins != nil {
		return b.ins.Publish(ctx, topic, msgs, b.publish)
	}
	return b.publish(ctx, topic, msgs...)
}

func (b *Broker) publish(ctx context.Context, topic string, msgs ...*broker.Message) error {
	if b.isClosing() {
		return fmt.Errorf("rabbit: publish: %w", broker.ErrClosed)
	}
	if err := driver.CheckPublish(topic, msgs, b.cfg.MaxMessageSize); err != nil {
		return fmt.Errorf("rabbit: publish to %q: %w", topic, err)
	}
	if err := checkName("topic (exchange name)", topic); err != nil {
		return fmt.Errorf("rabbit: publish: %w", err)
	}
	propsSize, err := checkPublishFields(msgs)
	if err != nil {
		return fmt.Errorf("rabbit: publish to %q: %w", topic, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("rabbit: publish to %q: %w", topic, err)
	}
	if len(msgs) == 0 {
		return nil
	}
	return b.send(ctx, topic, propsSize, msgs)
}

// send publishes checked msgs to exchange with their Keys as routing keys,
// confirmed, resending what a lost channel left unconfirmed, as Publish
// promises. The exchange is declared first (once per session) unless it
// is "", the default exchange, through which the consumer side moves a
// message to a queue by name. propsSize is checkPublishFields' result.
func (b *Broker) send(ctx context.Context, topic string, propsSize int, msgs []*broker.Message) error {
	if !b.gate.Enter() {
		return fmt.Errorf("rabbit: publish: %w", broker.ErrClosed)
	}
	defer b.gate.Leave()

	bt := b.newBatch(ctx, topic, msgs)
	defer bt.recycle(b)
	todo := bt.idx
	channelErrors, nackRounds := 0, 0
	for {
		s, err := b.pub.session(ctx)
		if err != nil {
			return fmt.Errorf("rabbit: publish to %q: %w", topic, err)
		}
		err = s.waitUnblocked(ctx)
		if err == nil && topic != "" {
			err = s.ensureExchange(ctx, topic)
		}
		if err == errSessionLost {
			continue
		}
		if err == nil {
			err = checkFrame(propsSize, s.conn.Config.FrameSize)
		}
		if err != nil {
			return fmt.Errorf("rabbit: publish to %q: %w", topic, err)
		}
		pc := s.pick()
		if pc == nil {
			select { // every channel of the pool died: wait for their replacements or the connection's end
			case <-s.dead:
			case <-ctx.Done():
				return fmt.Errorf("rabbit: publish to %q: no publishing channel: %w", topic, s.ctxErr(ctx))
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		bt.startRound(todo)
		select {
		case pc.in <- bt:
		default:
			// Its writer is busy with another call's messages: ask for
			// another channel of the pool, and wait for this one.
			s.wantChannel()
			select {
			case pc.in <- bt:
			case <-pc.end:
				continue
			case <-ctx.Done():
				return fmt.Errorf("rabbit: publish to %q: %w", topic, s.ctxErr(ctx))
			}
		}
		if n, err := bt.settleRound(ctx, pc); err != nil {
			return fmt.Errorf("rabbit: publish to %q: %d message(s) unconfirmed: %w", topic, n, s.ctxErr(ctx))
		}
		var lost, nacked []int
		var firstErr error
		for _, i := range todo {
			st := atomic.LoadUint32(&bt.status[i])
			switch {
			case st == stAcked:
			case st == stLost:
				lost = append(lost, i)
			case st == stNacked && nackRounds < maxNackResends:
				nacked = append(nacked, i)
			default:
				if firstErr == nil {
					firstErr = bt.messageError(i, st, s.ctxErr(ctx))
				}
			}
		}
		if firstErr != nil {
			return fmt.Errorf("rabbit: publish to %q: %w", topic, firstErr)
		}
		if len(nacked) > 0 && len(lost) == 0 {
			// A nack is the server's own failure (a queue process that went
			// away as the message reached it, a full queue): send again,
			// a few times and after a pause, before reporting it.
			nackRounds++
			wait := driver.BackoffDelay(nackBackoff(), nackRounds)
			b.log.Debug("rabbit: resending nacked messages", "topic", topic, "count", len(nacked), "round", nackRounds, "wait", wait)
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("rabbit: publish to %q: %w", topic, bt.messageError(nacked[0], stNacked, nil))
			}
			todo = append(lost, nacked...)
			slices.Sort(todo)
			continue
		}
		if len(lost) == 0 {
			return nil
		}
		// The channel ended: learn why before deciding to resend.
		select {
		case <-pc.end:
		case <-ctx.Done():
			return fmt.Errorf("rabbit: publish to %q: %d message(s) unconfirmed: %w", topic, len(lost), s.ctxErr(ctx))
		}
		if cerr, serverCh := pc.closeReason(); serverCh {
			channelErrors++
			if channelErrors >= maxChannelErrors {
				return fmt.Errorf("rabbit: publish to %q: %d message(s) unconfirmed after %d channel errors: %w",
					topic, len(lost), channelErrors, wireError("rabbit: publishing channel closed", cerr))
			}
		}
		b.log.Debug("rabbit: resending unconfirmed messages", "topic", topic, "count", len(lost))
		if len(nacked) > 0 { // resent with the lost ones, without a pause of their own
			nackRounds++
			lost = append(lost, nacked...)
			slices.Sort(lost)
		}
		todo = lost
	}
}

// messageError is the error of message i whose round ended in st.
func (b *batch) messageError(i int, st uint32, ctxErr error) error {
	id := b.pubs[i].MessageId
	var err error
	switch st {
	case stNacked:
		err = fmt.Errorf("message %d (id %q): %w", i, id, broker.ErrNacked)
	case stReturned:
		err = fmt.Errorf("message %d (id %q, key %q) reached no queue (%s): %w", i, id, b.keys[i], b.reason[i], broker.ErrUnroutable)
	default: // stSkipped
		if ctxErr == nil {
			ctxErr = context.Canceled
		}
		err = fmt.Errorf("message %d (id %q) not sent: %w", i, id, ctxErr)
	}
	return &broker.MessageError{Index: i, ID: id, Err: err}
}

// newBatch takes a batch from the pool (or makes one) and fills it with
// copies of msgs.
func (br *Broker) newBatch(ctx context.Context, topic string, msgs []*broker.Message) *batch {
	n := len(msgs)
	size := 0
	for _, m := range msgs {
		size += len(m.Body)
	}
	var arena *[]byte
	var buf []byte
	if size > 0 {
		arena = br.arenas.get(size)
		buf = *arena
	}
	bt, _ := br.batches.Get().(*batch)
	if bt == nil {
		bt = &batch{nudge: make(chan struct{}, 1)}
	}
	bt.ctx, bt.topic, bt.arena = ctx, topic, arena
	bt.pubs = grow(bt.pubs, n)
	bt.keys = grow(bt.keys, n)
	bt.idx = grow(bt.idx, n)
	bt.status = grow(bt.status, n)
	bt.reason = grow(bt.reason, n)
	if cap(bt.written) < n {
		bt.written = make([]written, 0, n)
	}
	for i, m := range msgs {
		p := amqp.Publishing{
			ContentType:  m.ContentType,
			DeliveryMode: amqp.Persistent,
			MessageId:    m.ID,
			// A copy: the caller may reuse Body once Publish returns.
			Body: buf[:copy(buf, m.Body):len(m.Body)],
		}
		buf = buf[len(m.Body):]
		if len(m.Headers) > 0 {
			h := make(amqp.Table, len(m.Headers)+1)
			for k, v := range m.Headers {
				h[k] = v
			}
			p.Headers = h
		}
		bt.pubs[i] = p
		bt.keys[i] = m.Key
		bt.idx[i] = i
	}
	return bt
}

// grow returns s with length n, reusing its array when it is large enough.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
