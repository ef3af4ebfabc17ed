package rabbit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
)

// BindingKeys is a Subscribe driver option (broker.WithDriverOption): bind
// the subscription's queue with these routing patterns instead of "#"
// (every message of the topic). Patterns use RabbitMQ topic syntax: words
// separated by dots, "*" for one word, "#" for zero or more.
type BindingKeys []string

// QueueName is a Subscribe driver option: the durable queue a group
// subscription uses, instead of "<topic>.<group>". It requires a group.
type QueueName string

// subscription is one consumer, re-established on every connection; the
// lifecycle is driver.Subscription's.
type subscription struct {
	*driver.Subscription
	b     *Broker
	l     *link
	log   *slog.Logger
	topic string
	queue string // durable group queue; "" for a private server-named queue
	keys  []string
	cfg   broker.SubscribeConfig
	plan  queuePlan
	h     broker.Handler
	// autoPrefetch: the caller set no broker.Prefetch, so cfg.Prefetch is
	// the floor of one sized to the round trip (PrefetchRate).
	autoPrefetch bool

	// streamSeen is the highest stream offset a worker took (−1: none):
	// a re-established stream consumer resumes after it.
	streamSeen atomic.Int64

	established chan error // the first setup's outcome (buffered)
}

// Subscribe declares topic's exchange (durable, type topic) and the
// subscription's queue — for a group a durable queue "<topic>.<group>"
// (or QueueName) shared by the group's members, a quorum queue unless
// QueueType says otherwise; without a group an exclusive auto-delete
// server-named classic queue — binds it with "#" (or BindingKeys), sets
// the prefetch (basic.qos; by default sized to the round trip to the
// server, see PrefetchRate: max(2 × Concurrency, MinAutoPrefetch) on
// loopback, more at a distance) and starts Concurrency handler workers.
// It returns once the consumer is registered, or with an error when ctx
// ends first.
//
// Handlers returning nil ack the message. A handler error (or panic) is a
// failed delivery: the message is redelivered — at once by a nack with
// requeue, or after broker.RedeliveryDelay through a retry queue (see
// below) — until broker.MaxDeliveries (default
// broker.DefaultMaxDeliveries) deliveries failed; then it is
// dead-lettered: published, with the handler's error in
// broker.HeaderLastError, to the dead-letter topic (DeadLetterTo, default
// broker.DeadLetterTopic(topic)), whose queue "<dead-letter
// topic>.kept" (broker.DeadLetterGroup) Subscribe declares beforehand so
// that nothing is dropped for want of a reader. A quorum queue also counts
// a delivery whose consumer was lost while it was handled — or merely
// prefetched: keep Prefetch low where consumers crash — and dead-letters it
// itself (x-delivery-limit, at least once, through x-dead-letter-exchange)
// without HeaderLastError; on a classic queue the subscription counts by
// republishing the failed message with its count, so a lost consumer's
// message is not counted. A stream never takes a message back: the
// handler is called again on it after the delay (default 20 ms doubling
// to 5 s). broker.UnlimitedDeliveries turns dead-lettering off.
//
// Redelivery delays use one durable retry queue per delay step,
// "<queue>.retry-<delay>", whose message TTL dead-letters the message
// back into the queue (no plugin): the other messages go on meanwhile.
// broker.RedeliveryBackoff uses its steps without jitter on RabbitMQ (one
// queue per step, at most 32). Every move of a message — into a retry
// queue, back into a classic queue, to the dead-letter topic — is a
// confirmed publish before the ack of the original, so a crash between
// the two delivers it twice rather than never; a move that fails requeues
// the message after the delay (or a backoff step), never in a hot loop.
//
// Delivery survives connection loss: the subscription redeclares its
// topology and resumes consuming on the recovered connection (a private
// queue is new then: messages published meanwhile are not delivered to
// it; a stream resumes after the last message it took). It ends when the
// Subscription is closed, ctx ends, or the Broker closes; the
// Subscription's Close waits for running handlers (which then ack) by its
// ctx, then closes the consumer channel, which requeues every message
// delivered and not yet acknowledged. A queue that exists with other
// arguments (another type, another delivery limit) fails Subscribe with
// ErrInvalidOption naming them. Driver options: BindingKeys, QueueName,
// QueueType, SingleActiveConsumer. StartAt other than broker.Latest()
// needs QueueType(Stream) (ErrUnsupported otherwise).
func (b *Broker) Subscribe(ctx context.Context, topic string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscription, error) {
	if b.isClosing() {
		return nil, fmt.Errorf("rabbit: subscribe: %w", broker.ErrClosed)
	}
	caps := b.Capabilities()
	caps.Replay = true // streams keep history: newQueuePlan checks the position against the queue type
	cfg, err := driver.CheckSubscribe(topic, h, caps, opts...)
	if err != nil {
		return nil, fmt.Errorf("rabbit: subscribe to %q: %w", topic, err)
	}
	autoPrefetch := cfg.Prefetch == 0
	cfg.Prefetch = driver.PrefetchOr(cfg, max(2*cfg.Concurrency, MinAutoPrefetch))
	if err := checkName("topic (exchange name)", topic); err != nil {
		return nil, fmt.Errorf("rabbit: subscribe: %w", err)
	}
	keys := []string{"#"}
	queue := ""
	if cfg.Group != "" {
		queue = topic + "." + cfg.Group
	}
	var kind QueueType
	kindSet, single := false, false
	for _, o := range cfg.DriverOptions {
		switch v := o.(type) {
		case QueueType:
			kind, kindSet = v, true
		case SingleActiveConsumer:
			single = bool(v)
		case BindingKeys:
			if len(v) == 0 {
				return nil, fmt.Errorf("rabbit: subscribe to %q: %w: empty BindingKeys", topic, broker.ErrInvalidOption)
			}
			for _, k := range v {
				if len(k) > maxShortString {
					return nil, fmt.Errorf("rabbit: subscribe to %q: %w: binding key %.20q… is %d bytes, AMQP 0-9-1 allows %d",
						topic, broker.ErrInvalidOption, k, len(k), maxShortString)
				}
			}
			keys = append([]string(nil), v...)
		case QueueName:
			if cfg.Group == "" || v == "" {
				return nil, fmt.Errorf("rabbit: subscribe to %q: %w: QueueName %q needs a group and a name", topic, broker.ErrInvalidOption, string(v))
			}
			queue = string(v)
		default:
			return nil, fmt.Errorf("rabbit: subscribe to %q: %w: unknown driver option %T", topic, broker.ErrInvalidOption, o)
		}
	}
	if err := checkName("queue name", queue); err != nil {
		return nil, fmt.Errorf("rabbit: subscribe to %q: %w", topic, err)
	}
	plan, err := newQueuePlan(cfg, topic, kind, kindSet, single)
	if err != nil {
		return nil, fmt.Errorf("rabbit: subscribe to %q: %w", topic, err)
	}
	if plan.deadTopic == topic {
		return nil, fmt.Errorf("rabbit: subscribe to %q: %w: dead-letter topic is the subscription's own topic", topic, broker.ErrInvalidOption)
	}
	if queue != "" {
		for _, d := range plan.delays {
			if err := checkName("retry queue name", retryQueue(queue, d)); err != nil {
				return nil, fmt.Errorf("rabbit: subscribe to %q: %w", topic, err)
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("rabbit: subscribe to %q: %w", topic, err)
	}

	log := b.log.With("topic", topic, "group", cfg.Group)
	s := &subscription{
		Subscription: driver.NewSubscription(ctx, "rabbit", topic, log),
		b:            b, topic: topic, queue: queue, keys: keys, cfg: cfg, plan: plan, h: h,
		autoPrefetch: autoPrefetch,
		log:          log,
		established:  make(chan error, 1),
	}
	s.streamSeen.Store(-1)
	s.Instrument(b.ins, cfg.Group)

	b.mu.Lock()
	if !b.gate.Track(s.Subscription) {
		b.mu.Unlock()
		s.Abandon(broker.ErrClosed)
		return nil, fmt.Errorf("rabbit: subscribe: %w", broker.ErrClosed)
	}
	s.l = b.consumeLinkLocked()
	b.mu.Unlock()
	s.Go(s.run)
	s.Start(nil)

	select {
	case err := <-s.established:
		if err != nil {
			s.Stop(err)
			return nil, fmt.Errorf("rabbit: subscribe to %q: %w", topic, err)
		}
		return s, nil
	case <-ctx.Done():
		s.Stop(ctx.Err())
		if !s.l.connected() {
			if last := s.l.lastError(); last != nil {
				return nil, fmt.Errorf("rabbit: subscribe to %q: %w while the connection is down (last error: %v): %w",
					topic, broker.ErrUnavailable, last, ctx.Err())
			}
		}
		return nil, fmt.Errorf("rabbit: subscribe to %q: %w", topic, ctx.Err())
	case <-b.gate.Closing():
		return nil, fmt.Errorf("rabbit: subscribe: %w", broker.ErrClosed)
	}
}

// run establishes the consumer and re-establishes it after connection or
// channel loss, until stopped.
func (s *subscription) run() {
	first := true
	failures := 0 // consecutive failed setups: the backoff step
	for {
		sess, err := s.l.session(s.StopContext())
		if err != nil {
			return // stopped or broker closing
		}
		established, err := s.consume(sess, first)
		if established {
			first = false
			failures = 0
		}
		if s.IsStopping() {
			return
		}
		if err == nil || sess.isDead() {
			continue // the connection went away: wait for the next one
		}
		if first && isFatal(err) {
			s.established <- err
			return
		}
		failures++
		delay := driver.BackoffDelay(s.b.cfg.Backoff, failures)
		s.log.Warn("rabbit: consumer setup failed; retrying", "err", err, "wait", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-s.Stopping():
			t.Stop()
			return
		}
	}
}

// consume sets up one consumer on sess and delivers until its channel ends
// or the subscription stops. established reports whether the consumer got
// registered; err is why the setup failed or the channel closed.
func (s *subscription) consume(sess *session, first bool) (established bool, err error) {
	begin := time.Now()
	ch, err := sess.conn.Channel()
	if err != nil {
		return false, wireError("rabbit: open consumer channel", err)
	}
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))
	defer func() {
		_ = ch.Close()
		if err == nil {
			select {
			case e := <-closes:
				if e != nil {
					err = wireError("rabbit: consumer channel closed", e)
				}
			default:
			}
		}
	}()
	prefetch, err := s.setPrefetch(ch)
	if err != nil {
		return false, err
	}
	if err := ch.ExchangeDeclare(s.topic, "topic", true, false, false, false, nil); err != nil {
		return false, wireError(fmt.Sprintf("rabbit: declare exchange %q", s.topic), err)
	}
	var q amqp.Queue
	switch {
	case s.queue != "" && s.queue == keptQueue(s.topic) && s.cfg.Group == broker.DeadLetterGroup:
		// The dead-lettering subscription may have declared it already:
		// read it as it is.
		q.Name = s.queue
		_, err = declareUnlessExists(sess.conn, s.queue, s.plan.queueArgs(serverMajor(sess.conn)))
	case s.queue != "":
		q, err = ch.QueueDeclare(s.queue, true, false, false, false, s.plan.queueArgs(serverMajor(sess.conn)))
		if err != nil {
			if terr := typeMismatch(sess.conn, s.queue, s.plan.kind, err); terr != nil {
				return false, terr
			}
		}
	default:
		q, err = ch.QueueDeclare("", false, true, true, false, nil)
	}
	if err != nil {
		return false, declareError(s.queue, err)
	}
	for _, k := range s.keys {
		if err := ch.QueueBind(q.Name, k, s.topic, false, nil); err != nil {
			return false, wireError(fmt.Sprintf("rabbit: bind queue %q to %q with %q", q.Name, s.topic, k), err)
		}
	}
	retries, err := s.declareRetryQueues(ch, q.Name)
	if err != nil {
		return false, err
	}
	if s.plan.limit > 0 {
		if err := declareKept(sess.conn, s.plan.deadTopic); err != nil {
			return false, err
		}
	}
	var consumeArgs amqp.Table
	if s.plan.kind == Stream {
		at, err := s.streamStart()
		if err != nil {
			return false, err
		}
		consumeArgs = amqp.Table{argStreamOffset: at}
	}
	tag := consumerTag()
	deliveries, err := ch.Consume(q.Name, tag, false, false, false, false, consumeArgs)
	if err != nil {
		return false, wireError(fmt.Sprintf("rabbit: consume from %q", q.Name), err)
	}
	if first {
		s.established <- nil
	}
	s.log.Info("rabbit: consumer started", "queue", q.Name, "prefetch", prefetch,
		"concurrency", s.cfg.Concurrency, "gen", sess.gen, "took", time.Since(begin).Round(time.Millisecond))

	var wg sync.WaitGroup
	own := ownQueue{name: q.Name, retries: retries}
	for range s.cfg.Concurrency {
		wg.Go(func() { s.work(deliveries, own) })
	}
	workersDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(workersDone)
	}()
	select {
	case <-workersDone:
		// The channel or connection closed, or the server cancelled the
		// consumer (queue deleted): the caller re-establishes.
		if !s.IsStopping() {
			s.log.Warn("rabbit: consumer ended", "queue", q.Name, "connection_alive", !sess.isDead())
		}
	case <-s.Stopping():
		// Let running handlers finish (and ack) before closing the
		// channel, which requeues everything unacknowledged.
		select {
		case <-s.HandlersIdle():
		case <-workersDone:
		}
		_ = ch.Close()
		<-workersDone
		s.log.Info("rabbit: consumer stopped", "queue", q.Name)
	}
	return true, nil
}

// work handles deliveries until the channel's delivery stream ends. While
// stopping it leaves deliveries unacknowledged; closing the channel
// requeues them.
func (s *subscription) work(deliveries <-chan amqp.Delivery, q ownQueue) {
	for d := range deliveries {
		if !s.Begin() {
			continue
		}
		m, failed := s.message(&d)
		if s.plan.kind == Stream {
			s.handleStream(&d, m, q)
		} else if p, err := s.Call(s.h, &broker.Delivery{Message: m, Group: s.cfg.Group}); err == nil {
			began := p.SettleStart()
			aerr := d.Ack(false)
			if aerr != nil {
				s.log.Debug("rabbit: ack failed; the message will be redelivered", "err", aerr)
			}
			p.Settled("ack", began, aerr)
		} else {
			s.failed(&d, m, q, failed+1, err, p)
		}
		s.End()
	}
}

// message is the broker.Message of d, and how many deliveries of it
// failed before this one: the queue's own count (quorum), plus the count
// a moved message carries (see failure.go).
func (s *subscription) message(d *amqp.Delivery) (*broker.Message, int) {
	m := &broker.Message{
		ID:          d.MessageId,
		Key:         d.RoutingKey,
		Body:        d.Body,
		ContentType: d.ContentType,
		Metadata: broker.Metadata{
			Topic:       d.Exchange,
			Redelivered: d.Redelivered,
			EnqueuedAt:  d.Timestamp,
		},
	}
	if m.Metadata.Topic == "" || d.Exchange != s.topic {
		m.Metadata.Topic = s.topic // a moved message comes back through the default exchange
	}
	failed := 0
	if len(d.Headers) > 0 {
		m.Headers = make(map[string]string, len(d.Headers))
		for k, v := range d.Headers {
			switch k {
			case hdrFailures:
				failed += headerInt(v)
				continue
			case hdrKey:
				m.Key = headerString(v)
				continue
			case "x-delivery-count":
				failed += headerInt(v)
			case argStreamOffset:
				if off, ok := v.(int64); ok {
					m.Metadata.Offset = strconv.FormatInt(off, 10)
					m.Metadata.SequenceNumber = off
				}
			}
			m.Headers[k] = headerString(v)
		}
	}
	if failed > 0 {
		m.Metadata.Redelivered = true
	}
	m.Metadata.DeliveryCount = failed
	return m, failed
}

// setPrefetch sets the consumer channel's prefetch and returns it: the
// subscription's Prefetch, or, without an explicit one, that floor raised
// to PrefetchRate × the round trip of the basic.qos that set it (at most
// MaxAutoPrefetch), in a second basic.qos.
func (s *subscription) setPrefetch(ch *amqp.Channel) (int, error) {
	began := time.Now()
	if err := ch.Qos(s.cfg.Prefetch, 0, false); err != nil {
		return 0, wireError("rabbit: set prefetch", err)
	}
	if !s.autoPrefetch {
		return s.cfg.Prefetch, nil
	}
	n := driver.PrefetchForRoundTrip(s.cfg.Prefetch, time.Since(began), PrefetchRate, MaxAutoPrefetch)
	if n == s.cfg.Prefetch {
		return n, nil
	}
	if err := ch.Qos(n, 0, false); err != nil {
		return 0, wireError("rabbit: set prefetch", err)
	}
	return n, nil
}

func headerString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	}
	return fmt.Sprint(v)
}

func headerInt(v any) int {
	n, _ := strconv.Atoi(headerString(v))
	return max(n, 0)
}

func consumerTag() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "isobroker-" + hex.EncodeToString(b[:])
}
