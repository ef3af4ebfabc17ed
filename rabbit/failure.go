package rabbit

import (
	"errors"
	"fmt"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
)

// What a subscription does with a message its handler failed: count the
// failure, then dead-letter the message, delay it through a retry queue,
// or give it back to its queue. Counting: a quorum queue counts
// deliveries itself (x-delivery-count); a message the subscription moves
// (to a retry queue, or back into a classic queue to count the failure)
// is a new message for the server, so it carries the failures so far in
// a header of ours. Every move is a confirmed publish followed by the
// ack of the original: a crash in between delivers the message twice,
// never zero times.

// Headers of a moved message, hidden from handlers.
const (
	hdrFailures = "x-isobroker-failures" // failed deliveries before the move
	hdrKey      = "x-isobroker-key"      // the routing key it was published with
)

// The in-place backoff between handler calls on a stream message when the
// subscription sets no redelivery delay.
const (
	streamRetryInitial = 20 * time.Millisecond
	streamRetryMax     = 5 * time.Second
)

// ownQueue is the queue a consumer reads and its retry queues by delay.
type ownQueue struct {
	name    string
	retries map[time.Duration]string
}

// declareRetryQueues declares, on ch, a retry queue per redelivery delay
// of the plan for queue (durable like it, exclusive for a private queue).
func (s *subscription) declareRetryQueues(ch *amqp.Channel, queue string) (map[time.Duration]string, error) {
	if len(s.plan.delays) == 0 || s.plan.kind == Stream {
		return nil, nil
	}
	retries := make(map[time.Duration]string, len(s.plan.delays))
	for _, d := range s.plan.delays {
		name := retryQueue(queue, d)
		private := s.queue == ""
		if private {
			// Server-named queues are "amq.gen-…", a prefix clients may
			// not declare.
			name = "isobroker.retry." + strings.TrimPrefix(queue, "amq.") + "-" + d.String()
		}
		if _, err := ch.QueueDeclare(name, !private, false, private, false, s.plan.retryArgs(queue, d)); err != nil {
			return nil, declareError(name, err)
		}
		retries[d] = name
	}
	return retries, nil
}

// declareKept declares the dead-letter topic's exchange and the queue of
// its broker.DeadLetterGroup, bound to every key, so that no dead-lettered
// message is dropped for want of a reader. A kept queue that exists
// already, declared by a reader with options of its own, is left as it is.
// It uses a channel of its own: a refused declaration closes the channel.
func declareKept(conn *amqp.Connection, deadTopic string) error {
	ch, err := conn.Channel()
	if err != nil {
		return wireError("rabbit: open channel for the dead-letter queue", err)
	}
	defer ch.Close()
	if err := ch.ExchangeDeclare(deadTopic, "topic", true, false, false, false, nil); err != nil {
		return wireError(fmt.Sprintf("rabbit: declare dead-letter exchange %q", deadTopic), err)
	}
	kept := keptQueue(deadTopic)
	existed, err := declareUnlessExists(conn, kept, keptPlan(deadTopic).queueArgs(serverMajor(conn)))
	if err != nil || existed {
		return err
	}
	if err := ch.QueueBind(kept, "#", deadTopic, false, nil); err != nil {
		return wireError(fmt.Sprintf("rabbit: bind dead-letter queue %q", kept), err)
	}
	return nil
}

// declareUnlessExists declares the durable queue name with args, on a
// channel of its own; a queue of that name declared with other arguments
// is left as it is (existed).
func declareUnlessExists(conn *amqp.Connection, name string, args amqp.Table) (existed bool, err error) {
	ch, err := conn.Channel()
	if err != nil {
		return false, wireError(fmt.Sprintf("rabbit: open channel to declare %q", name), err)
	}
	defer ch.Close()
	if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed {
			return true, nil
		}
		return false, declareError(name, err)
	}
	return false, nil
}

// countsDeliveries reports whether d's queue counts its deliveries (a
// quorum queue sets x-delivery-count); for the others the subscription
// counts by moving the message. Asked of each delivery, not of the
// QueueType option: a kept queue is read as it was declared.
func countsDeliveries(d *amqp.Delivery) bool {
	_, ok := d.Headers["x-delivery-count"]
	return ok
}

// failed settles d, whose handler failed with err on delivery n (1-based)
// of the message, on a classic or quorum queue.
//
// p, the delivery's Processing, records the settlement: "nack",
// "dead_letter", "delay" or "requeue" (a classic queue's counted move).
func (s *subscription) failed(d *amqp.Delivery, m *broker.Message, q ownQueue, n int, err error, p driver.Processing) {
	log := s.log.With("id", d.MessageId, "deliveries", n)
	var moveErr error
	var what, op string
	began := p.SettleStart()
	switch {
	case s.plan.limit > 0 && n >= s.plan.limit:
		what, op = "dead-letter", "dead_letter"
		moveErr = s.deadLetter(m, n, err)
	case len(q.retries) > 0:
		what, op = "delay", "delay"
		moveErr = s.move(q.retries[retryDelay(s.cfg.Redelivery, n)], m, n)
	case s.plan.limit > 0 && !countsDeliveries(d):
		// A classic queue does not count: requeue by republishing with the
		// count.
		what, op = "count", "requeue"
		moveErr = s.move(q.name, m, n)
	default:
		log.Debug("rabbit: handler failed; nacking for redelivery", "err", err)
		nerr := d.Nack(false, true)
		if nerr != nil {
			log.Debug("rabbit: nack failed; the message will be redelivered", "err", nerr)
		}
		p.Settled("nack", began, nerr)
		return
	}
	if moveErr == nil {
		log.Debug("rabbit: handler failed; message moved", "move", what, "err", err)
		aerr := d.Ack(false)
		if aerr != nil {
			// The moved copy exists already: this one comes back too.
			log.Warn("rabbit: ack of a moved message failed; it will be delivered again", "move", what, "err", aerr)
		}
		p.Settled(op, began, aerr)
		return
	}
	// Not moved: hand it back, after the delay (or a backoff step) so that
	// a failure to move never makes a hot loop. On a quorum queue the
	// server dead-letters it once its delivery limit is passed.
	wait := driver.BackoffDelay(s.b.cfg.Backoff, n)
	if len(s.plan.delays) > 0 {
		wait = retryDelay(s.cfg.Redelivery, n)
	}
	log.Warn("rabbit: handler failed and the message could not be moved; requeueing it after a wait",
		"move", what, "err", err, "move_err", moveErr, "wait", wait)
	s.sleep(wait)
	began = p.SettleStart()
	nerr := d.Nack(false, true)
	if nerr != nil {
		log.Debug("rabbit: nack failed; the message will be redelivered", "err", nerr)
	}
	p.Settled("nack", began, nerr)
}

// deadLetter publishes the dead-letter copy of m, which failed n
// deliveries with last as the last error, to the dead-letter topic.
func (s *subscription) deadLetter(m *broker.Message, n int, last error) error {
	dl := driver.DeadLetter(&broker.Delivery{Message: m, Group: s.cfg.Group}, s.topic, s.cfg.Group, n, last)
	stripServerHeaders(dl.Headers)
	return s.publishMoved(s.plan.deadTopic, dl)
}

// move republishes m, after n failed deliveries, into queue (a retry
// queue, or its own) through the default exchange.
func (s *subscription) move(queue string, m *broker.Message, n int) error {
	c := *m
	c.Headers = make(map[string]string, len(m.Headers)+2)
	for k, v := range m.Headers {
		c.Headers[k] = v
	}
	stripServerHeaders(c.Headers)
	c.Headers[hdrFailures] = fmt.Sprint(n)
	c.Headers[hdrKey] = m.Key
	c.Key = queue
	c.Metadata = broker.Metadata{}
	return s.publishMoved("", &c)
}

// publishMoved publishes m, confirmed, under the handler context: the
// subscription's Close waits for it like for a handler.
func (s *subscription) publishMoved(exchange string, m *broker.Message) error {
	msgs := []*broker.Message{m}
	props, err := checkPublishFields(msgs)
	if err != nil {
		return err
	}
	return s.b.send(s.HandlerContext(), exchange, props, msgs)
}

// stripServerHeaders removes what RabbitMQ adds to a delivered message
// (its count, the history of dead-lettering, stream offsets): a copy is a
// new message, and the server keeps such headers only in its own types.
func stripServerHeaders(h map[string]string) {
	for k := range h {
		if k == "x-delivery-count" || k == argStreamOffset || strings.HasPrefix(k, "x-death") ||
			strings.HasPrefix(k, "x-first-death-") || strings.HasPrefix(k, "x-last-death-") ||
			k == hdrFailures || k == hdrKey {
			delete(h, k)
		}
	}
}

// sleep waits d or until the subscription stops.
func (s *subscription) sleep(d time.Duration) bool { return driver.Sleep(d, s.Stopping()) }

// handleStream runs the handler on a stream message until it succeeds or
// is dead-lettered: a stream cannot take a message back, so the retries
// happen here, each after the redelivery delay, while the other workers go
// on. Stopping first leaves the message unacknowledged.
func (s *subscription) handleStream(d *amqp.Delivery, m *broker.Message, q ownQueue) {
	if off, ok := d.Headers[argStreamOffset].(int64); ok {
		for {
			seen := s.streamSeen.Load()
			if off <= seen || s.streamSeen.CompareAndSwap(seen, off) {
				break
			}
		}
	}
	var p driver.Processing
	op := "ack"
	for n := 1; ; n++ {
		var err error
		p, err = s.Call(s.h, &broker.Delivery{Message: m, Group: s.cfg.Group})
		if err == nil {
			break
		}
		if s.plan.limit > 0 && n >= s.plan.limit {
			began := p.SettleStart()
			if !s.deadLetterUntilDone(m, n, err) {
				p.Settled("dead_letter", began, broker.ErrClosed)
				return
			}
			p.Settled("dead_letter", began, nil)
			p, op = driver.Processing{}, "" // settled: the ack below ends the delivery
			break
		}
		p.End() // retried in place
		wait := driver.BackoffDelay(broker.Backoff{Initial: streamRetryInitial, Max: streamRetryMax}, n)
		if s.cfg.Redelivery.Initial > 0 {
			wait = driver.RedeliveryDelayOf(s.cfg, n)
		}
		s.log.Debug("rabbit: handler failed on a stream message; calling it again", "id", d.MessageId, "deliveries", n, "wait", wait, "err", err)
		if !s.sleep(wait) {
			return
		}
		m.Metadata.Redelivered = true
		m.Metadata.DeliveryCount = n
	}
	began := p.SettleStart()
	aerr := d.Ack(false)
	if aerr != nil {
		s.log.Debug("rabbit: stream ack failed", "err", aerr)
	}
	if op != "" {
		p.Settled(op, began, aerr)
	}
}

// deadLetterUntilDone dead-letters m, retrying with the broker's backoff
// until it is published or the subscription stops (false).
func (s *subscription) deadLetterUntilDone(m *broker.Message, n int, last error) bool {
	for attempt := 1; ; attempt++ {
		err := s.deadLetter(m, n, last)
		if err == nil {
			return true
		}
		wait := driver.BackoffDelay(s.b.cfg.Backoff, attempt)
		s.log.Warn("rabbit: dead-lettering a stream message failed; retrying", "id", m.ID, "err", err, "wait", wait)
		if !s.sleep(wait) {
			return false
		}
	}
}

// streamStart is where a stream consumer starts: the subscription's start
// position the first time, after the last message taken when it is
// re-established.
func (s *subscription) streamStart() (any, error) {
	if seen := s.streamSeen.Load(); seen >= 0 {
		return seen + 1, nil
	}
	return streamOffset(s.cfg.Start)
}
