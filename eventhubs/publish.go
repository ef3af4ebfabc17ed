package eventhubs

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
)

// senderLink is an attached sender to a hub or a partition.
type senderLink struct {
	conn   *amqpConn
	sess   *amqp.Session
	snd    *amqp.Sender
	target string
	max    int
	broken atomic.Bool
}

func (s *senderLink) valid() bool { return !s.broken.Load() && s.conn.alive() }

// sender returns the cached sender for target, attaching one (connection →
// put-token → session → link) when there is none or it broke.
func (b *Broker) sender(ctx context.Context, target string) (*senderLink, error) {
	b.mu.Lock()
	sl := b.senders[target]
	if sl == nil {
		sl = &slot[*senderLink]{}
		b.senders[target] = sl
	}
	b.mu.Unlock()
	return sl.get(ctx, b.life(), b.dead, broker.ErrClosed, (*senderLink).valid, func(ctx context.Context) (*senderLink, error) {
		c, err := b.getConn(ctx)
		if err != nil {
			return nil, err
		}
		return b.attachSender(ctx, c, target)
	})
}

func (b *Broker) attachSender(ctx context.Context, c *amqpConn, target string) (*senderLink, error) {
	start := time.Now()
	if err := c.putToken(ctx, b.cfg.audience(target)); err != nil {
		return nil, err
	}
	tokenDone := time.Since(start)
	sess, err := c.conn.NewSession(ctx, nil)
	if err != nil {
		return nil, wrapErr("attach", target, err)
	}
	sessDone := time.Since(start)
	snd, err := sess.NewSender(ctx, target, &amqp.SenderOptions{
		SettlementMode:              amqp.SenderSettleModeMixed.Ptr(),
		RequestedReceiverSettleMode: amqp.ReceiverSettleModeFirst.Ptr(),
		DesiredCapabilities:         []string{capGeoReplication},
	})
	if err != nil {
		closeSessionAsync(sess, &b.wg)
		return nil, wrapErr("attach", target, err)
	}
	max := int(snd.MaxMessageSize())
	if max <= 0 || uint64(snd.MaxMessageSize()) > 1<<31 {
		max = b.cfg.MaxMessageSize
	}
	b.maxMsg.Store(int64(max))
	c.touch()
	b.log.Info("sender attached", "conn", c.gen, "target", target, "max_message_size", max,
		"put_token", tokenDone, "session", sessDone-tokenDone, "attach", time.Since(start)-sessDone, "elapsed", time.Since(start))
	return &senderLink{conn: c, sess: sess, snd: snd, target: target, max: max}, nil
}

// breakSender retires s after an error.
func (b *Broker) breakSender(s *senderLink) {
	if s.broken.Swap(true) {
		return
	}
	closeSessionAsync(s.sess, &b.wg)
}

// batch is a run of consecutive events sent as one message.
type batch struct {
	target     string
	from, to   int    // event indexes [from, to)
	group      string // order group: see orderGroup
	msg        *amqp.Message
	sender     *senderLink
	receipt    amqp.SendReceipt
	sendFailed error
	held       bool // not sent: an earlier batch of its group was not accepted
	accepted   bool
}

// orderGroup names the events whose order Publish keeps: those with the
// same target and partition key. Events without a key sent to the hub
// are spread over partitions by the service and have no order to keep
// ("").
func orderGroup(hub, target, key string) string {
	if key == "" && target == hub {
		return ""
	}
	return target + "\x00" + key
}

// Publish sends msgs to the event hub named topic and returns nil only
// after the service accepted every event (an accepted disposition for
// every batch). Events are grouped, in order, into batches (message
// format 0x80013700) of consecutive events with the same partition key
// and target, each as large as the link's max-message-size allows, and
// the batches are pipelined on the link.
//
// Message.Key is the partition key; the PartitionIDHeader header sends
// to a fixed partition. An event that cannot fit one batch fails the call
// with broker.ErrMessageTooLarge before anything is sent.
//
// Batches of one partition key (or one partition) are written one after
// another, each once the previous was accepted; other batches are
// pipelined.
//
// Recovery: a lost connection or link is rebuilt at once (lazily, on this
// call), a busy service is retried with backoff; up to Config.Retry
// attempts, by ctx. A retry resends exactly the events not known to be
// accepted (a rejected batch, one settled without an outcome, one whose
// link failed), so an event may be stored twice (at least once) but a
// key's events are never stored out of order. Unauthorized, not-found and
// message-size errors are returned at once, classified fatal. Publish
// blocks until ctx ends at the latest; events it had not started to send
// by then are not sent.
func (b *Broker) Publish(ctx context.Context, topic string, msgs ...*broker.Message) error {
	if b.ins != nil {
		return b.ins.Publish(ctx, topic, msgs, b.publish)
	}
	return b.publish(ctx, topic, msgs...)
}

func (b *Broker) publish(ctx context.Context, topic string, msgs ...*broker.Message) error {
	if b.isClosing() {
		return fmt.Errorf("eventhubs: publish: %w", broker.ErrClosed)
	}
	if err := driver.CheckPublish(topic, msgs, 0); err != nil {
		return fmt.Errorf("eventhubs: publish to %q: %w", topic, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("eventhubs: publish to %q: %w", topic, err)
	}
	if len(msgs) == 0 {
		return nil
	}
	events := make([]event, len(msgs))
	for i, m := range msgs {
		ev, err := encodeEvent(i, m)
		if err != nil {
			return fmt.Errorf("eventhubs: publish to %q: %w", topic, err)
		}
		events[i] = ev
	}
	if err := b.checkSizes(topic, events, int(b.maxMsg.Load())); err != nil {
		return err
	}
	if !b.gate.Enter() {
		return fmt.Errorf("eventhubs: publish: %w", broker.ErrClosed)
	}
	defer b.gate.Leave()
	b.noteHub(topic)

	pending := events // not known to be accepted, in order
	for attempt := 0; ; attempt++ {
		var err error
		pending, err = b.sendOnce(ctx, topic, pending)
		if err == nil {
			return nil
		}
		if b.isDead() {
			return fmt.Errorf("eventhubs: publish to %q: %w", topic, broker.ErrClosed)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("eventhubs: publish to %q: %d of %d events not confirmed: %w", topic, len(pending), len(events), ctx.Err())
		}
		err = wrapErr("publish", topic, err)
		act, _ := classify(err)
		delay, again := b.retryDelay(attempt, act)
		if !again {
			return fmt.Errorf("eventhubs: publish to %q: %d of %d events not confirmed: %w", topic, len(pending), len(events), err)
		}
		b.log.Info("publish retrying", "hub", topic, "attempt", attempt+1, "action", act.String(), "delay", delay, "pending", len(pending), "err", err)
		if !b.sleep(ctx, delay) {
			if ctx.Err() != nil {
				return fmt.Errorf("eventhubs: publish to %q: %d of %d events not confirmed: %w (last error: %v)", topic, len(pending), len(events), ctx.Err(), err)
			}
			return fmt.Errorf("eventhubs: publish to %q: %w", topic, broker.ErrClosed)
		}
	}
}

// checkSizes refuses events that cannot fit one batch of max bytes.
func (b *Broker) checkSizes(topic string, events []event, max int) error {
	for i := range events {
		ev := &events[i]
		if n := envelopeSize(ev) + len(ev.enc) + dataOverhead; n > max {
			return driver.MarkFatal(fmt.Errorf("eventhubs: publish to %q: message %d encodes to %d bytes, the link allows %d: %w",
				topic, ev.index, n, max, broker.ErrMessageTooLarge))
		}
	}
	return nil
}

func envelopeSize(ev *event) int {
	enc, err := envelope(ev).MarshalBinary()
	if err != nil {
		return 0
	}
	return len(enc)
}

func (b *Broker) noteHub(hub string) {
	b.mu.Lock()
	b.lastHub = hub
	b.mu.Unlock()
}

func (b *Broker) keepAliveHub() string {
	if b.cfg.EventHub != "" {
		return b.cfg.EventHub
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastHub
}

// sendOnce sends events in batches and waits for their dispositions. It
// returns the events not known to be accepted, in order, and the first
// error.
//
// Batches are pipelined on their links, except that a batch is written
// only once the batch before it in its order group (the same target and
// partition key; see orderGroup) has been accepted: a rejected or unknown
// batch holds back the rest of its group for the next attempt, so that a
// resend never puts a key's later events before its earlier ones, and
// accepted batches are never sent again.
func (b *Broker) sendOnce(ctx context.Context, hub string, events []event) ([]event, error) {
	// Attach (or reuse) the senders first, so that batches are sized by
	// the links' real limits before anything is sent.
	senders := make(map[string]*senderLink)
	max := 0
	for i := range events {
		t := events[i].target(hub)
		if _, ok := senders[t]; ok {
			continue
		}
		s, err := b.sender(ctx, t)
		if err != nil {
			return events, err
		}
		senders[t] = s
		if max == 0 || s.max < max {
			max = s.max
		}
	}
	if err := b.checkSizes(hub, events, max); err != nil {
		return events, err
	}
	batches := plan(hub, events, max)
	for i := range batches {
		batches[i].sender = senders[batches[i].target]
	}
	// The transfers are written under the instance's lifetime, not the
	// caller's ctx: go-amqp returns from a multi-frame transfer cut short
	// by its ctx without aborting it, which leaves the link (shared by
	// every caller) holding a half-sent delivery. The caller's ctx bounds
	// only its own wait; a batch not started when it ends is not sent.
	w := &batchWriter{
		b:       b,
		batches: batches,
		written: make(chan int, len(batches)),
		settled: make(chan int, len(batches)),
	}
	b.wg.Go(func() { w.run(ctx) })
	var firstErr error
	fail := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
collect:
	for i := range batches {
		bt := &batches[i]
		select {
		case _, ok := <-w.written:
			if !ok {
				break collect // the writer stopped: the rest were not sent
			}
		case <-ctx.Done():
			fail(ctx.Err())
			break collect
		}
		err := bt.sendFailed
		if err == nil && !bt.held {
			var state amqp.DeliveryState
			state, err = bt.receipt.Wait(ctx)
			if err == nil {
				err = outcome(bt.target, state)
			} else if ctx.Err() != nil {
				fail(ctx.Err())
				break collect
			}
		}
		if err != nil && !bt.held {
			err = onLinkError("send", bt.target, err)
			fail(err)
			if act, _ := classify(err); act == actRelink || act == actReconnect || act == actFatal {
				b.breakSender(bt.sender)
				if act == actReconnect {
					b.invalidate(bt.sender.conn, err)
				}
			}
		}
		bt.accepted = err == nil && !bt.held
		w.settled <- i
	}
	rest := events[:0:0]
	for i := range batches {
		if !batches[i].accepted {
			rest = append(rest, events[batches[i].from:batches[i].to]...)
		}
	}
	if firstErr == nil && len(rest) > 0 {
		firstErr = driver.MarkRetryable(fmt.Errorf("eventhubs: %d events held back behind a failed batch: %w", len(rest), broker.ErrUnavailable))
	}
	if firstErr != nil && errors.Is(firstErr, context.Canceled) && ctx.Err() == nil {
		firstErr = broker.ErrUnavailable
	}
	return rest, firstErr
}

// batchWriter writes one call's batches in order on the instance's
// lifetime; see sendOnce.
type batchWriter struct {
	b       *Broker
	batches []batch
	written chan int // index of each batch tried (written, failed or held), in order; closed when the writer stops early
	settled chan int // index of each batch whose outcome the caller has recorded, in order
}

// run writes the batches until all are tried, one fails to be written, or
// callerCtx ends before a batch starts. Each send is bounded by the
// instance's lifetime and writeTimeout of its own; a send that fails on
// that bound may have left a transfer half written, so its link is dropped
// and the batch fails with a retryable ErrUnavailable.
func (w *batchWriter) run(callerCtx context.Context) {
	b := w.b
	last := make(map[string]int) // order group → index of its latest written batch
	seen := -1                   // highest index read from settled
	for i := range w.batches {
		bt := &w.batches[i]
		group := bt.group
		if j, ok := last[group]; ok && group != "" {
			for seen < j {
				select {
				case seen = <-w.settled:
				case <-callerCtx.Done():
					close(w.written)
					return
				case <-b.dead:
					close(w.written)
					return
				}
			}
			if !w.batches[j].accepted {
				bt.held = true // and so are the group's later batches
				w.written <- i
				continue
			}
		}
		if callerCtx.Err() != nil {
			close(w.written)
			return
		}
		sendCtx, cancel := context.WithTimeout(b.deadCtx, writeTimeout)
		bt.receipt, bt.sendFailed = bt.sender.snd.SendWithReceipt(sendCtx, bt.msg, nil)
		expired := sendCtx.Err() != nil && b.deadCtx.Err() == nil // not the broker's own teardown
		cancel()
		if bt.sendFailed != nil {
			if expired {
				b.breakSender(bt.sender)
				bt.sendFailed = driver.MarkRetryable(fmt.Errorf("eventhubs: send to %q not written within %v: %w", bt.target, writeTimeout, broker.ErrUnavailable))
			}
			w.written <- i
			close(w.written)
			return
		}
		bt.sender.conn.touch()
		last[group] = i
		w.written <- i
	}
}

// outcome turns the delivery state of a batch sent to target into nil
// (accepted) or an error. A delivery settled with no state is of unknown
// outcome: it is resent.
func outcome(target string, state amqp.DeliveryState) error {
	switch s := state.(type) {
	case *amqp.StateAccepted:
		return nil
	case *amqp.StateRejected:
		if s.Error != nil {
			return s.Error
		}
		return &amqp.Error{Condition: amqp.ErrCondInternalError, Description: "rejected without an error"}
	case *amqp.StateReleased:
		return &amqp.Error{Condition: condServerBusy, Description: "released by the service"}
	case *amqp.StateModified:
		return &amqp.Error{Condition: condServerBusy, Description: "modified by the service"}
	case nil:
		return driver.MarkRetryable(&Error{Op: "send", Entity: target, Description: "settled without an outcome",
			sentinel: broker.ErrUnavailable, act: actRetry})
	}
	return fmt.Errorf("unexpected delivery state %T", state)
}

// plan groups consecutive events with the same target and key into
// batches of at most max encoded bytes. Indexes are relative to events.
func plan(hub string, events []event, max int) []batch {
	var out []batch
	size := 0
	for i := range events {
		ev := &events[i]
		t := ev.target(hub)
		n := len(ev.enc) + dataOverhead
		if k := len(out) - 1; k >= 0 && t == out[k].target && ev.key == events[out[k].from].key && size+n <= max {
			out[k].msg.Data = append(out[k].msg.Data, ev.enc)
			out[k].to = i + 1
			size += n
			continue
		}
		msg := envelope(ev)
		msg.Data = [][]byte{ev.enc}
		out = append(out, batch{target: t, group: orderGroup(hub, t, ev.key), from: i, to: i + 1, msg: msg})
		size = envelopeSize(ev) + n
	}
	return out
}
