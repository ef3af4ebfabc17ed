// Package mem is the in-memory Broker: the embedded default that needs no
// server, and the reference for the semantics the real adapters promise.
//
// Semantics: a topic routes each published message to every group queue
// that exists at that moment (a message published to a topic nobody has
// subscribed to is accepted and discarded, as by a RabbitMQ exchange with
// no bound queue). A group's queue is created by its first Subscribe and
// kept, collecting messages, until the Broker is closed; members of one
// group compete for its messages, and different groups each get every
// message. A Subscribe without a group gets a private queue that is
// removed when the subscription ends. Messages with the same Key are handed
// to a group's handlers one at a time in publish order, even with
// Concurrency > 1; a nacked message is redelivered before the messages
// behind it. Queues are bounded: Publish waits for space by its ctx.
//
// Poison messages (Capabilities.DeadLetter, RedeliveryDelay): a message
// that failed MaxDeliveries times (default broker.DefaultMaxDeliveries) is
// published to the dead-letter topic, whose broker.DeadLetterGroup queue
// keeps it; if that queue is full the worker waits for room (by the
// handlers' context and the broker's Close), and if it cannot get it the
// message is redelivered instead. A redelivery delay holds the message
// (and the messages behind it with the same key) while the others go on.
//
// Nothing survives Close: messages still queued are discarded with the
// instance (Capabilities.Persistent is false). Two Brokers never share
// anything, whatever their names.
package mem

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
	"github.com/isobroker/broker/internal/redact"
)

// System is the messaging.system attribute of mem's telemetry.
const System = "isobroker.mem"

// Defaults.
const (
	// DefaultQueueCapacity is how many messages a group queue holds before
	// Publish waits.
	DefaultQueueCapacity = 1024
	// DefaultMaxMessageSize is the largest Body Publish accepts (4 MiB).
	DefaultMaxMessageSize = 4 << 20
)

// Option configures New.
type Option func(*config)

type config struct {
	name           string
	logger         *slog.Logger
	queueCapacity  int
	maxMessageSize int
	telemetry      broker.Telemetry
}

// WithName names the instance in logs.
func WithName(name string) Option { return func(c *config) { c.name = name } }

// WithLogger sets the logger (default: slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithTelemetry turns on OpenTelemetry traces, metrics and trace-context
// propagation for the instance (messaging.system "isobroker.mem"); see
// broker.Telemetry.
func WithTelemetry(t broker.Telemetry) Option { return func(c *config) { c.telemetry = t } }

// WithQueueCapacity bounds each group queue to n waiting messages (n ≥ 1).
func WithQueueCapacity(n int) Option { return func(c *config) { c.queueCapacity = n } }

// WithMaxMessageSize sets the largest Body Publish accepts (n ≥ 1).
func WithMaxMessageSize(n int) Option { return func(c *config) { c.maxMessageSize = n } }

// Broker is the in-memory broker. Create it with New; it is safe for
// concurrent use.
type Broker struct {
	cfg   config
	log   *slog.Logger
	state *driver.StateTracker
	gate  *driver.Gate        // calls, subscriptions and the start of Close
	ins   *driver.Instruments // nil without telemetry

	mu     sync.Mutex
	topics map[string]map[string]*queue // topic → queue name → queue
	seq    int64                        // last message sequence number
	nextID int                          // private queue names
}

var _ broker.Broker = (*Broker)(nil)

// New returns a connected in-memory Broker. It fails only on bad options.
func New(opts ...Option) (*Broker, error) {
	cfg := config{queueCapacity: DefaultQueueCapacity, maxMessageSize: DefaultMaxMessageSize}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.queueCapacity < 1 {
		return nil, fmt.Errorf("mem: %w: queue capacity %d, want >= 1", broker.ErrInvalidOption, cfg.queueCapacity)
	}
	if cfg.maxMessageSize < 1 {
		return nil, fmt.Errorf("mem: %w: max message size %d, want >= 1", broker.ErrInvalidOption, cfg.maxMessageSize)
	}
	log := cfg.logger
	if log == nil {
		log = slog.Default()
	}
	ins, err := driver.NewInstruments(cfg.telemetry, driver.InstrumentsConfig{System: System, Instance: cfg.name})
	if err != nil {
		return nil, fmt.Errorf("mem: %w", err)
	}
	log = log.With("broker", "mem", "name", cfg.name)
	b := &Broker{
		ins:    ins,
		cfg:    cfg,
		log:    log,
		state:  driver.NewStateTracker(broker.StateConnecting),
		gate:   driver.NewGate(),
		topics: make(map[string]map[string]*queue),
	}
	ins.Track(b.state)
	b.state.Set(broker.StateConnected, nil)
	log.Debug("broker open")
	return b, nil
}

// Capabilities reports the mem guarantees: redelivery, competing consumers
// and per-key ordering; no replay, no persistence.
func (b *Broker) Capabilities() broker.Capabilities {
	return broker.Capabilities{
		Redelivery:         true,
		CompetingConsumers: true,
		PerKeyOrdering:     true,
		MaxMessageSize:     b.cfg.maxMessageSize,
		DeadLetter:         true,
		RedeliveryDelay:    true,
	}
}

// State reports StateConnected until Close, then StateClosed.
func (b *Broker) State() broker.State { return b.state.State() }

// WatchState implements broker.Broker.
func (b *Broker) WatchState(ctx context.Context) <-chan broker.StateChange {
	return b.state.Watch(ctx)
}

// Publish copies msgs into every group queue of topic, in order. It waits
// while a queue is full until ctx ends (returning ctx's error) or the
// broker closes (ErrClosed). Invalid messages are reported before any is
// enqueued.
func (b *Broker) Publish(ctx context.Context, topic string, msgs ...*broker.Message) error {
	if b.ins != nil {
		return b.ins.Publish(ctx, topic, msgs, b.publish)
	}
	return b.publish(ctx, topic, msgs...)
}

func (b *Broker) publish(ctx context.Context, topic string, msgs ...*broker.Message) error {
	if b.gate.IsClosing() {
		return fmt.Errorf("mem: publish: %w", broker.ErrClosed)
	}
	if err := driver.CheckPublish(topic, msgs, b.cfg.maxMessageSize); err != nil {
		return fmt.Errorf("mem: publish to %q: %w", topic, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mem: publish to %q: %w", topic, err)
	}
	for i, m := range msgs {
		rec, queues := b.accept(topic, m)
		for _, q := range queues {
			if err := q.put(ctx, b.gate.Closing(), &item{msg: rec, key: rec.Key}); err != nil {
				if err == errStopped {
					err = broker.ErrClosed
				}
				return fmt.Errorf("mem: publish to %q: message %d of %d not accepted: %w", topic, i, len(msgs), err)
			}
		}
	}
	return nil
}

// publishDeadLetter publishes m to topic as Publish does, first creating
// the topic's broker.DeadLetterGroup queue, so that the message is kept
// until someone reads it.
func (b *Broker) publishDeadLetter(ctx context.Context, topic string, m *broker.Message) error {
	b.mu.Lock()
	if b.gate.IsClosing() {
		b.mu.Unlock()
		return broker.ErrClosed
	}
	qs := b.topics[topic]
	if qs == nil {
		qs = make(map[string]*queue)
		b.topics[topic] = qs
	}
	name := "group:" + broker.DeadLetterGroup
	if qs[name] == nil {
		qs[name] = newQueue(b.cfg.queueCapacity, false)
	}
	b.mu.Unlock()
	return b.Publish(ctx, topic, m)
}

// accept stamps a private copy of m and returns the queues it goes to.
func (b *Broker) accept(topic string, m *broker.Message) (*broker.Message, []*queue) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	rec := cloneMessage(m)
	rec.Metadata = broker.Metadata{Topic: topic, SequenceNumber: b.seq, EnqueuedAt: time.Now()}
	queues := make([]*queue, 0, len(b.topics[topic]))
	for _, q := range b.topics[topic] {
		queues = append(queues, q)
	}
	return rec, queues
}

func cloneMessage(m *broker.Message) *broker.Message {
	c := *m
	c.Body = append([]byte(nil), m.Body...)
	c.Headers = maps.Clone(m.Headers)
	return &c
}

// Subscribe registers h on topic's queue for the group (creating it) and
// returns at once. Only StartLatest is supported; other positions and any
// driver option are rejected with an error naming them.
func (b *Broker) Subscribe(ctx context.Context, topic string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscription, error) {
	if b.gate.IsClosing() {
		return nil, fmt.Errorf("mem: subscribe: %w", broker.ErrClosed)
	}
	cfg, err := driver.CheckSubscribe(topic, h, b.Capabilities(), opts...)
	if err != nil {
		return nil, fmt.Errorf("mem: subscribe to %q: %w", topic, err)
	}
	if len(cfg.DriverOptions) > 0 {
		return nil, fmt.Errorf("mem: subscribe to %q: %w: unknown driver option %T", topic, broker.ErrInvalidOption, cfg.DriverOptions[0])
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("mem: subscribe to %q: %w", topic, err)
	}

	b.mu.Lock()
	if b.gate.IsClosing() { // Close may have begun since the first check
		b.mu.Unlock()
		return nil, fmt.Errorf("mem: subscribe: %w", broker.ErrClosed)
	}
	qs := b.topics[topic]
	if qs == nil {
		qs = make(map[string]*queue)
		b.topics[topic] = qs
	}
	qname := "group:" + cfg.Group
	if cfg.Group == "" {
		b.nextID++
		qname = fmt.Sprintf("private:%d", b.nextID)
	}
	q := qs[qname]
	if q == nil {
		q = newQueue(b.cfg.queueCapacity, cfg.Group == "")
		qs[qname] = q
	}
	s := newSubscription(ctx, b, topic, qname, q, cfg, h)
	if !b.gate.Track(s.Subscription) { // Close began since the check above
		b.mu.Unlock()
		s.Abandon(broker.ErrClosed)
		return nil, fmt.Errorf("mem: subscribe: %w", broker.ErrClosed)
	}
	b.mu.Unlock()

	s.start()
	b.log.Debug("subscribed", "topic", topic, "group", cfg.Group, "concurrency", cfg.Concurrency)
	return s, nil
}

// forget removes an ended subscription, and its queue if private.
func (b *Broker) forget(s *subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.q.private {
		delete(b.topics[s.topic], s.qname)
		s.q.drop()
	}
}

// Close stops accepting publishes and subscriptions at once, lets running
// handlers finish until ctx ends (then cancels their contexts), and
// discards queued messages. It returns nil after a clean drain, an error
// wrapping ctx.Err() otherwise, and ErrClosed when called again.
func (b *Broker) Close(ctx context.Context) error {
	if !b.gate.Close() {
		return fmt.Errorf("mem: close: %w", broker.ErrClosed)
	}
	b.state.Set(broker.StateClosed, nil)
	subs, err := b.gate.Shutdown(ctx, "mem", driver.UntilEnded)
	b.mu.Lock()
	for _, qs := range b.topics {
		for _, q := range qs {
			q.drop()
		}
	}
	b.topics = nil
	b.mu.Unlock()
	if err != nil {
		b.log.Warn("broker closed before handlers finished", "subscriptions", len(subs), "err", err)
		return fmt.Errorf("mem: close: %w", err)
	}
	b.log.Debug("broker closed", "subscriptions", len(subs))
	return nil
}

// subscription runs cfg.Concurrency workers taking from q; the lifecycle
// is driver.Subscription's.
type subscription struct {
	*driver.Subscription
	b            *Broker
	topic, qname string
	q            *queue
	cfg          broker.SubscribeConfig
	h            broker.Handler
}

func newSubscription(ctx context.Context, b *Broker, topic, qname string, q *queue, cfg broker.SubscribeConfig, h broker.Handler) *subscription {
	s := &subscription{
		Subscription: driver.NewSubscription(ctx, "mem", topic, b.log),
		b:            b, topic: topic, qname: qname, q: q, cfg: cfg, h: h,
	}
	s.Instrument(b.ins, cfg.Group)
	return s
}

func (s *subscription) start() {
	for range s.cfg.Concurrency {
		s.Go(s.work)
	}
	s.Start(func() { s.b.forget(s) })
}

func (s *subscription) work() {
	for {
		it := s.q.take(s.HandlerContext(), s.Stopping())
		if it == nil {
			return
		}
		p, err := s.handle(it)
		began := p.SettleStart()
		if err == nil {
			s.q.settle(it, true)
			p.Settled("ack", began, nil)
			continue
		}
		failed := it.count + 1
		if limit := driver.MaxDeliveriesOr(s.cfg); limit > 0 && failed >= limit && s.deadLetter(it, failed, err) {
			s.q.settle(it, true)
			p.Settled("dead_letter", began, nil)
			continue
		}
		delay := driver.RedeliveryDelayOf(s.cfg, failed)
		s.b.log.Debug("handler nacked; message will be redelivered", "topic", s.topic, "group", s.cfg.Group,
			"deliveries", failed, "delay", delay, "err", redact.Target(err.Error()))
		s.q.settleAfter(it, delay)
		p.Settled("nack", began, nil)
	}
}

// deadLetter moves the item, which failed its last allowed delivery, to
// the dead-letter topic; false (it is then redelivered) when the broker
// closes or the subscription's handlers are cancelled before the
// dead-letter queue takes it.
func (s *subscription) deadLetter(it *item, failed int, last error) bool {
	dlt := driver.DeadLetterTopicOf(s.topic, s.cfg)
	d := &broker.Delivery{Message: it.msg, Group: s.cfg.Group}
	m := driver.DeadLetter(d, s.topic, s.cfg.Group, failed, last)
	if err := s.b.publishDeadLetter(s.HandlerContext(), dlt, m); err != nil {
		s.b.log.Warn("dead-lettering failed; the message will be redelivered", "topic", s.topic, "group", s.cfg.Group,
			"id", it.msg.ID, "dead_letter_topic", dlt, "err", err)
		return false
	}
	s.b.log.Warn("message dead-lettered", "topic", s.topic, "group", s.cfg.Group, "id", it.msg.ID,
		"deliveries", failed, "dead_letter_topic", dlt, "err", m.Headers[broker.HeaderLastError])
	return true
}

// handle runs the handler on a clone of the item's message.
func (s *subscription) handle(it *item) (driver.Processing, error) {
	m := cloneMessage(it.msg)
	m.Metadata.Redelivered = it.count > 0
	m.Metadata.DeliveryCount = it.count
	return s.Call(s.h, &broker.Delivery{Message: m, Group: s.cfg.Group})
}
