package rabbit

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/isobroker/broker"
)

// Message outcomes tracked per message of a Publish call.
const (
	stPending  uint32 = iota
	stAcked           // basic.ack
	stNacked          // basic.nack
	stReturned        // basic.return, then basic.ack
	stLost            // the channel died before the confirm: resend
	stSkipped         // not sent: the call's ctx ended first
)

// batch is one Publish call's messages handed to a channel writer.
type batch struct {
	ctx      context.Context
	topic    string
	pubs     []amqp.Publishing
	keys     []string
	idx      []int // which of pubs to send
	status   []uint32
	reason   []string // reply text of returns
	lostErr  atomic.Pointer[error]
	pending  atomic.Int32
	done     chan struct{}
	chanFail atomic.Bool // the channel was closed by a server channel error

	// The bodies are copies in arena (see arena.go). writing counts the
	// writers inside a publish of this batch's messages; once finished is
	// set (Publish has returned) no writer starts another.
	arena    *[]byte
	wmu      sync.Mutex
	writing  int
	finished bool
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

// endWrite ends the write startWrite reserved.
func (b *batch) endWrite() {
	b.wmu.Lock()
	b.writing--
	b.wmu.Unlock()
}

// recycle runs when Publish returns: no writer starts on the batch from
// then on, and its arena goes back to pool unless a writer is still
// inside a write (then the garbage collector takes it).
func (b *batch) recycle(pool *arenaPool) {
	b.wmu.Lock()
	b.finished = true
	idle := b.writing == 0
	b.wmu.Unlock()
	if idle && b.arena != nil {
		pool.put(b.arena)
	}
	b.arena = nil
}

func (b *batch) resolve(i int, st uint32) {
	atomic.StoreUint32(&b.status[i], st)
	if b.pending.Add(-1) == 0 {
		close(b.done)
	}
}

// entry is one published, unconfirmed message on a channel.
type entry struct {
	tag      uint64
	b        *batch
	i        int
	returned bool
}

// pubChannel is one confirm-mode channel of the publishing pool: a writer
// goroutine that alone publishes on it, and a tracker goroutine that alone
// reads its confirms, returns and close notification.
type pubChannel struct {
	s   *session
	id  int
	ch  *amqp.Channel
	in  chan *batch   // unbuffered: a batch handed over is always resolved
	end chan struct{} // closed when the channel is gone

	mu     sync.Mutex
	q      []entry // unconfirmed, in publish (= delivery tag) order
	head   int
	closed bool
	err    *amqp.Error // why the channel closed
}

func (s *session) openPool(ctx context.Context) error {
	s.pool = make([]atomic.Pointer[pubChannel], s.l.b.cfg.PublishChannels)
	for i := range s.pool {
		if err := ctx.Err(); err != nil {
			return err
		}
		ch, err := s.conn.Channel()
		if err != nil {
			return err
		}
		if err := ch.Confirm(false); err != nil {
			return err
		}
		pc := &pubChannel{s: s, id: i, ch: ch, in: make(chan *batch), end: make(chan struct{})}
		// Unbuffered on purpose: amqp091 hands over a basic.return before
		// it processes the basic.ack of the same message, so a single
		// tracker reading both sees the return first.
		confirms := ch.NotifyPublish(make(chan amqp.Confirmation))
		returns := ch.NotifyReturn(make(chan amqp.Return))
		closes := ch.NotifyClose(make(chan *amqp.Error, 1))
		s.pool[i].Store(pc)
		s.l.b.wg.Add(2)
		go func() {
			defer s.l.b.wg.Done()
			pc.track(confirms, returns, closes)
		}()
		go func() {
			defer s.l.b.wg.Done()
			pc.write()
		}()
	}
	s.l.log.Debug("rabbit: publishing channels open in confirm mode", "host", s.ep.redacted, "channels", len(s.pool))
	return nil
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
		select {
		case <-pc.end:
		default:
			return pc
		}
	}
	return nil
}

// write publishes the batches handed to it until the channel is gone.
func (pc *pubChannel) write() {
	for {
		select {
		case b := <-pc.in:
			pc.publish(b)
		case <-pc.end:
			return
		}
	}
}

func (pc *pubChannel) publish(b *batch) {
	mandatory := !pc.s.l.b.cfg.AllowUnroutable
	// Read idx once: when the last message is resolved Publish may reuse
	// the batch for a resend at once.
	idx := b.idx
	for k, i := range idx {
		if b.ctx.Err() != nil || !b.startWrite() {
			for _, j := range idx[k:] {
				b.resolve(j, stSkipped)
			}
			return
		}
		// Read the tag before taking pc.mu: amqp091 may hold the lock
		// behind GetNextPublishSeqNo while it hands a confirm to the
		// tracker (out-of-order acks), and the tracker needs pc.mu to
		// take it. This goroutine is the channel's only publisher, so
		// the tag cannot change before the publish below.
		tag := pc.ch.GetNextPublishSeqNo()
		pc.mu.Lock()
		if pc.closed {
			pc.mu.Unlock()
			b.endWrite()
			for _, j := range idx[k:] {
				b.resolve(j, stLost)
			}
			return
		}
		pc.q = append(pc.q, entry{tag: tag, b: b, i: i})
		pc.mu.Unlock()
		// The tracker resolves the entry: by confirm, or as lost when the
		// channel closes (which a failed publish always leads to).
		err := pc.ch.PublishWithContext(context.Background(), b.topic, b.keys[i], mandatory, false, b.pubs[i])
		b.endWrite()
		if err != nil {
			pc.s.l.log.Debug("rabbit: publish write failed", "channel", pc.id, "err", err)
			for _, j := range idx[k+1:] {
				b.resolve(j, stLost)
			}
			return
		}
	}
}

// track reads confirms and returns until the channel closes, then fails
// every unconfirmed message as lost.
func (pc *pubChannel) track(confirms chan amqp.Confirmation, returns chan amqp.Return, closes chan *amqp.Error) {
	for confirms != nil || returns != nil || closes != nil {
		select {
		case c, ok := <-confirms:
			if !ok {
				confirms = nil
				continue
			}
			pc.confirm(c)
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			pc.markReturned(r)
		case e, ok := <-closes:
			if !ok {
				closes = nil
				continue
			}
			pc.mu.Lock()
			pc.err = e
			pc.mu.Unlock()
		}
	}
	pc.mu.Lock()
	pc.closed = true
	rest := pc.q[pc.head:]
	pc.q, pc.head = nil, 0
	cerr := pc.err
	pc.mu.Unlock()
	close(pc.end)
	// A channel error closes just this channel; a connection error closes
	// the connection first (amqp091 marks it closed before its channels).
	serverChannelError := cerr != nil && cerr.Server && !pc.s.conn.IsClosed()
	if serverChannelError {
		pc.s.l.log.Warn("rabbit: publishing channel closed by the server", "channel", pc.id, "reason", errorText(cerr))
		pc.s.forgetDeclared()
	}
	var werr error
	if cerr != nil {
		werr = wireError("rabbit: publishing channel closed", cerr)
	}
	for _, e := range rest {
		if werr != nil {
			e.b.lostErr.CompareAndSwap(nil, &werr)
		}
		if serverChannelError {
			e.b.chanFail.Store(true)
		}
		e.b.resolve(e.i, stLost)
	}
	if serverChannelError {
		pc.s.l.b.wg.Add(1)
		go func() {
			defer pc.s.l.b.wg.Done()
			pc.s.replace(pc)
		}()
	}
}

func (pc *pubChannel) confirm(c amqp.Confirmation) {
	pc.mu.Lock()
	if pc.head >= len(pc.q) {
		pc.mu.Unlock()
		pc.s.l.log.Error("rabbit: confirm for an unknown delivery tag", "channel", pc.id, "tag", c.DeliveryTag)
		return
	}
	e := pc.q[pc.head]
	if e.tag != c.DeliveryTag {
		// amqp091 delivers confirms in tag order, one per tag; anything
		// else is a bug worth knowing about.
		pc.s.l.log.Error("rabbit: confirm out of order", "channel", pc.id, "tag", c.DeliveryTag, "want", e.tag)
	}
	pc.q[pc.head] = entry{}
	pc.head++
	if pc.head == len(pc.q) {
		pc.q, pc.head = pc.q[:0], 0
	} else if pc.head > 1024 && pc.head*2 > len(pc.q) {
		n := copy(pc.q, pc.q[pc.head:])
		pc.q, pc.head = pc.q[:n], 0
	}
	pc.mu.Unlock()
	switch {
	case !c.Ack:
		e.b.resolve(e.i, stNacked)
	case e.returned:
		e.b.resolve(e.i, stReturned)
	default:
		e.b.resolve(e.i, stAcked)
	}
}

// markReturned flags the oldest unconfirmed message the return matches
// (exchange, routing key, message id). RabbitMQ sends basic.return before
// the message's basic.ack, and the tracker sees them in that order.
func (pc *pubChannel) markReturned(r amqp.Return) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	for k := pc.head; k < len(pc.q); k++ {
		e := &pc.q[k]
		if e.returned || e.b.topic != r.Exchange || e.b.keys[e.i] != r.RoutingKey || e.b.pubs[e.i].MessageId != r.MessageId {
			continue
		}
		e.returned = true
		e.b.reason[e.i] = fmt.Sprintf("%d %s", r.ReplyCode, r.ReplyText)
		return
	}
	pc.s.l.log.Error("rabbit: return matches no unconfirmed message", "exchange", r.Exchange, "key", r.RoutingKey)
}

// replace reopens a pool channel the server closed with a channel error,
// while the connection lives.
func (s *session) replace(old *pubChannel) {
	if s.isDead() {
		return
	}
	ch, err := s.conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		s.l.log.Warn("rabbit: reopening publishing channel failed", "channel", old.id, "err", err)
		return
	}
	pc := &pubChannel{s: s, id: old.id, ch: ch, in: make(chan *batch), end: make(chan struct{})}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation))
	returns := ch.NotifyReturn(make(chan amqp.Return))
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))
	s.l.b.wg.Add(2)
	go func() {
		defer s.l.b.wg.Done()
		pc.track(confirms, returns, closes)
	}()
	go func() {
		defer s.l.b.wg.Done()
		pc.write()
	}()
	s.pool[old.id].Store(pc)
	s.l.log.Info("rabbit: publishing channel reopened", "channel", old.id)
}

// maxChannelErrors bounds how often one Publish call resends after server
// channel errors (as opposed to connection loss, which it rides out until
// its ctx ends).
const maxChannelErrors = 3

// Publish sends msgs to topic's exchange (declared durable, type topic, on
// first use per connection) as persistent messages with routing key
// Message.Key, pipelined on a pool of confirm-mode channels, and returns
// nil once the server confirmed every one.
//
// A message the server nacks fails the call with ErrNacked; a message no
// queue is bound for fails it with ErrUnroutable (unless
// Config.AllowUnroutable). When the connection is lost before a message is
// confirmed, Publish transparently resends it on the recovered connection
// until ctx ends: delivery is at-least-once, so such a message may arrive
// twice. Publish waits for recovery, and while the server blocks
// publishers (memory or disk alarm) it waits by ctx and then fails with an
// error wrapping ErrBlocked and ctx's error. When ctx ends first, Publish
// returns at once: messages of the call not yet written are not sent, and
// those already written may still be delivered. Publish copies the bodies,
// so the caller may reuse them as soon as it returns. After Close it
// returns ErrClosed at once.
func (b *Broker) Publish(ctx context.Context, topic string, msgs ...*broker.Message) error {
	if b.isClosing() {
		return fmt.Errorf("rabbit: publish: %w", broker.ErrClosed)
	}
	if err := broker.CheckPublish(topic, msgs, b.cfg.MaxMessageSize); err != nil {
		return fmt.Errorf("rabbit: publish to %q: %w", topic, err)
	}
	if len(topic) > 255 {
		return fmt.Errorf("rabbit: publish: %w: topic is %d bytes, RabbitMQ allows 255", broker.ErrInvalidOption, len(topic))
	}
	for i, m := range msgs {
		if len(m.Key) > 255 {
			return fmt.Errorf("rabbit: publish to %q: message %d: %w: key is %d bytes, RabbitMQ allows 255",
				topic, i, broker.ErrInvalidOption, len(m.Key))
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("rabbit: publish to %q: %w", topic, err)
	}
	if len(msgs) == 0 {
		return nil
	}
	if !b.enter() {
		return fmt.Errorf("rabbit: publish: %w", broker.ErrClosed)
	}
	defer b.leave()

	bt := newBatch(ctx, topic, msgs, &b.arenas)
	defer bt.recycle(&b.arenas)
	todo := bt.idx
	channelErrors := 0
	for {
		s, err := b.pub.session(ctx)
		if err != nil {
			return fmt.Errorf("rabbit: publish to %q: %w", topic, err)
		}
		err = s.waitUnblocked(ctx)
		if err == nil {
			err = s.ensureExchange(ctx, topic)
		}
		if err == errSessionLost {
			continue
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
		bt.idx = todo
		bt.done = make(chan struct{})
		bt.pending.Store(int32(len(todo)))
		select {
		case pc.in <- bt:
		case <-pc.end:
			continue
		case <-ctx.Done():
			return fmt.Errorf("rabbit: publish to %q: %w", topic, s.ctxErr(ctx))
		}
		select {
		case <-bt.done:
		case <-ctx.Done():
			return fmt.Errorf("rabbit: publish to %q: %d message(s) unconfirmed: %w", topic, bt.pending.Load(), s.ctxErr(ctx))
		}
		var lost []int
		var firstErr error
		for _, i := range todo {
			switch atomic.LoadUint32(&bt.status[i]) {
			case stAcked:
			case stNacked:
				if firstErr == nil {
					firstErr = fmt.Errorf("rabbit: publish to %q: message %d (id %q): %w", topic, i, bt.pubs[i].MessageId, broker.ErrNacked)
				}
			case stReturned:
				if firstErr == nil {
					firstErr = fmt.Errorf("rabbit: publish to %q: message %d (id %q, key %q) reached no queue (%s): %w",
						topic, i, bt.pubs[i].MessageId, bt.keys[i], bt.reason[i], broker.ErrUnroutable)
				}
			case stSkipped:
				if firstErr == nil {
					firstErr = fmt.Errorf("rabbit: publish to %q: message %d not sent: %w", topic, i, s.ctxErr(ctx))
				}
			default: // stLost
				lost = append(lost, i)
			}
		}
		if firstErr != nil {
			return firstErr
		}
		if len(lost) == 0 {
			return nil
		}
		if bt.chanFail.Load() {
			channelErrors++
			if channelErrors >= maxChannelErrors {
				cause := error(broker.ErrUnavailable)
				if p := bt.lostErr.Load(); p != nil {
					cause = *p
				}
				return fmt.Errorf("rabbit: publish to %q: %d message(s) unconfirmed after %d channel errors: %w",
					topic, len(lost), channelErrors, cause)
			}
		}
		b.log.Debug("rabbit: resending unconfirmed messages", "topic", topic, "count", len(lost))
		todo = lost
		bt.chanFail.Store(false)
	}
}

func newBatch(ctx context.Context, topic string, msgs []*broker.Message, arenas *arenaPool) *batch {
	n := len(msgs)
	size := 0
	for _, m := range msgs {
		size += len(m.Body)
	}
	var arena *[]byte
	var buf []byte
	if size > 0 {
		arena = arenas.get(size)
		buf = *arena
	}
	bt := &batch{
		ctx:    ctx,
		topic:  topic,
		pubs:   make([]amqp.Publishing, n),
		keys:   make([]string, n),
		idx:    make([]int, n),
		status: make([]uint32, n),
		reason: make([]string, n),
		arena:  arena,
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
			h := make(amqp.Table, len(m.Headers))
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
