package rabbit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
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

type subscription struct {
	b     *Broker
	l     *link
	log   *slog.Logger
	topic string
	queue string // durable group queue; "" for a private server-named queue
	keys  []string
	cfg   broker.SubscribeConfig
	h     broker.Handler

	handlerCtx     context.Context // cancelled when Close gives up or the Subscribe ctx ends
	cancelHandlers context.CancelFunc
	stopCtx        context.Context // cancelled by stop: aborts waits of the runner
	stopCancel     context.CancelFunc
	stopHook       func() bool

	established chan error    // the first setup's outcome (buffered)
	done        chan struct{} // closed when the runner has returned

	mu         sync.Mutex
	stopping   bool
	active     int           // handlers running
	idle       chan struct{} // closed once stopping and active == 0
	err        error
	userClosed bool
}

// Subscribe declares topic's exchange (durable, type topic) and the
// subscription's queue — for a group a durable queue "<topic>.<group>"
// shared by the group's members, otherwise an exclusive auto-delete
// server-named queue — binds it with "#" (or BindingKeys), sets the
// prefetch (basic.qos; default 2 × Concurrency, at least 16) and starts
// Concurrency handler workers. It returns once the consumer is
// registered, or with an error when ctx ends first.
//
// Handlers returning nil ack the message; an error (or panic) nacks it
// with requeue, so it is redelivered. Delivery survives connection loss:
// the subscription redeclares its topology and resumes consuming on the
// recovered connection (a private queue is new then: messages published
// meanwhile are not delivered to it). It ends when the Subscription is
// closed, ctx ends, or the Broker closes. Driver options: BindingKeys,
// QueueName. StartAt other than broker.Latest() is ErrUnsupported.
func (b *Broker) Subscribe(ctx context.Context, topic string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscription, error) {
	if b.isClosing() {
		return nil, fmt.Errorf("rabbit: subscribe: %w", broker.ErrClosed)
	}
	cfg, err := driver.CheckSubscribe(topic, h, false, opts...)
	if err != nil {
		return nil, fmt.Errorf("rabbit: subscribe to %q: %w", topic, err)
	}
	cfg.Prefetch = driver.PrefetchOr(cfg, max(2*cfg.Concurrency, 16))
	if err := checkName("topic (exchange name)", topic); err != nil {
		return nil, fmt.Errorf("rabbit: subscribe: %w", err)
	}
	keys := []string{"#"}
	queue := ""
	if cfg.Group != "" {
		queue = topic + "." + cfg.Group
	}
	for _, o := range cfg.DriverOptions {
		switch v := o.(type) {
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
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("rabbit: subscribe to %q: %w", topic, err)
	}

	s := &subscription{
		b: b, topic: topic, queue: queue, keys: keys, cfg: cfg, h: h,
		log:         b.log.With("topic", topic, "group", cfg.Group),
		established: make(chan error, 1),
		done:        make(chan struct{}),
		idle:        make(chan struct{}),
	}
	s.handlerCtx, s.cancelHandlers = context.WithCancel(ctx)
	s.stopCtx, s.stopCancel = context.WithCancel(context.Background())

	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		s.cancelHandlers()
		s.stopCancel()
		return nil, fmt.Errorf("rabbit: subscribe: %w", broker.ErrClosed)
	}
	b.subs[s] = struct{}{}
	s.l = b.consumeLinkLocked()
	b.mu.Unlock()
	s.stopHook = context.AfterFunc(ctx, func() { s.stop(ctx.Err()) })
	go s.run()

	select {
	case err := <-s.established:
		if err != nil {
			s.stop(err)
			return nil, fmt.Errorf("rabbit: subscribe to %q: %w", topic, err)
		}
		return s, nil
	case <-ctx.Done():
		s.stop(ctx.Err())
		if !s.l.connected() {
			if last := s.l.lastError(); last != nil {
				return nil, fmt.Errorf("rabbit: subscribe to %q: %w while the connection is down (last error: %v): %w",
					topic, broker.ErrUnavailable, last, ctx.Err())
			}
		}
		return nil, fmt.Errorf("rabbit: subscribe to %q: %w", topic, ctx.Err())
	case <-b.closing:
		return nil, fmt.Errorf("rabbit: subscribe: %w", broker.ErrClosed)
	}
}

// stop makes the subscription take no more messages and its runner wind
// down; cause is what Err reports (unless the user closed it).
func (s *subscription) stop(cause error) {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return
	}
	s.stopping = true
	if !s.userClosed {
		s.err = cause
	}
	if s.active == 0 {
		close(s.idle)
	}
	s.mu.Unlock()
	s.stopCancel()
}

func (s *subscription) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

// run establishes the consumer and re-establishes it after connection or
// channel loss, until stopped.
func (s *subscription) run() {
	defer close(s.done)
	defer func() {
		s.stopHook()
		s.cancelHandlers()
		s.b.mu.Lock()
		delete(s.b.subs, s)
		s.b.mu.Unlock()
	}()
	first := true
	delay := s.b.cfg.ReconnectInitial
	for {
		sess, err := s.l.session(s.stopCtx)
		if err != nil {
			return // stopped or broker closing
		}
		established, err := s.consume(sess, first)
		if established {
			first = false
			delay = s.b.cfg.ReconnectInitial
		}
		if s.isStopping() {
			return
		}
		if err == nil || sess.isDead() {
			continue // the connection went away: wait for the next one
		}
		if first && isFatal(err) {
			s.established <- err
			return
		}
		s.log.Warn("rabbit: consumer setup failed; retrying", "err", err, "wait", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-s.stopCtx.Done():
			t.Stop()
			return
		}
		delay = min(delay*2, s.b.cfg.ReconnectMax)
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
	if err := ch.Qos(s.cfg.Prefetch, 0, false); err != nil {
		return false, wireError("rabbit: set prefetch", err)
	}
	if err := ch.ExchangeDeclare(s.topic, "topic", true, false, false, false, nil); err != nil {
		return false, wireError(fmt.Sprintf("rabbit: declare exchange %q", s.topic), err)
	}
	var q amqp.Queue
	if s.queue != "" {
		q, err = ch.QueueDeclare(s.queue, true, false, false, false, nil)
	} else {
		q, err = ch.QueueDeclare("", false, true, true, false, nil)
	}
	if err != nil {
		return false, wireError(fmt.Sprintf("rabbit: declare queue %q", s.queue), err)
	}
	for _, k := range s.keys {
		if err := ch.QueueBind(q.Name, k, s.topic, false, nil); err != nil {
			return false, wireError(fmt.Sprintf("rabbit: bind queue %q to %q with %q", q.Name, s.topic, k), err)
		}
	}
	tag := consumerTag()
	deliveries, err := ch.Consume(q.Name, tag, false, false, false, false, nil)
	if err != nil {
		return false, wireError(fmt.Sprintf("rabbit: consume from %q", q.Name), err)
	}
	if first {
		s.established <- nil
	}
	s.log.Info("rabbit: consumer started", "queue", q.Name, "prefetch", s.cfg.Prefetch,
		"concurrency", s.cfg.Concurrency, "gen", sess.gen, "took", time.Since(begin).Round(time.Millisecond))

	var wg sync.WaitGroup
	for range s.cfg.Concurrency {
		wg.Go(func() { s.work(deliveries) })
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
		if !s.isStopping() {
			s.log.Warn("rabbit: consumer ended", "queue", q.Name, "connection_alive", !sess.isDead())
		}
	case <-s.stopCtx.Done():
		// Let running handlers finish (and ack) before closing the
		// channel, which requeues everything unacknowledged.
		select {
		case <-s.idle:
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
func (s *subscription) work(deliveries <-chan amqp.Delivery) {
	for d := range deliveries {
		s.mu.Lock()
		if s.stopping {
			s.mu.Unlock()
			continue
		}
		s.active++
		s.mu.Unlock()

		err := s.handle(&d)
		if err == nil {
			if aerr := d.Ack(false); aerr != nil {
				s.log.Debug("rabbit: ack failed; the message will be redelivered", "err", aerr)
			}
		} else {
			s.log.Debug("rabbit: handler failed; nacking for redelivery", "id", d.MessageId, "err", err)
			if nerr := d.Nack(false, true); nerr != nil {
				s.log.Debug("rabbit: nack failed; the message will be redelivered", "err", nerr)
			}
		}

		s.mu.Lock()
		s.active--
		if s.stopping && s.active == 0 {
			close(s.idle)
		}
		s.mu.Unlock()
	}
}

// handle runs the handler on d, turning a panic into an error.
func (s *subscription) handle(d *amqp.Delivery) (err error) {
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
	if m.Metadata.Topic == "" {
		m.Metadata.Topic = s.topic
	}
	if len(d.Headers) > 0 {
		m.Headers = make(map[string]string, len(d.Headers))
		for k, v := range d.Headers {
			switch x := v.(type) {
			case string:
				m.Headers[k] = x
			case []byte:
				m.Headers[k] = string(x)
			default:
				m.Headers[k] = fmt.Sprint(x)
			}
		}
		if n, ok := d.Headers["x-delivery-count"]; ok {
			if c, err := strconv.Atoi(fmt.Sprint(n)); err == nil {
				m.Metadata.DeliveryCount = c
			}
		}
	}
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("rabbit: handler panicked", "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("rabbit: handler panicked: %v", r)
		}
	}()
	return s.h(s.handlerCtx, &broker.Delivery{Message: m, Group: s.cfg.Group})
}

func consumerTag() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "isobroker-" + hex.EncodeToString(b[:])
}

// waitHandlers waits until no handler runs (after stop) or ctx ends; then
// it cancels the handlers' contexts.
func (s *subscription) waitHandlers(ctx context.Context) error {
	select {
	case <-s.idle:
		return nil
	case <-ctx.Done():
		s.cancelHandlers()
		return fmt.Errorf("handlers of %q still running: %w", s.topic, ctx.Err())
	}
}

// waitRunnerAfterKill waits for the runner once the connections are
// gone, when nothing but a handler can hold it: until it returns, or, once
// ctx has ended, only if no handler is still running (a handler that
// ignores its cancelled ctx is the one thing Close does not wait for).
func (s *subscription) waitRunnerAfterKill(ctx context.Context) {
	select {
	case <-s.done:
		return
	case <-ctx.Done():
	}
	select {
	case <-s.idle:
		<-s.done // every amqp091 call fails at once on a closed connection
	default:
	}
}

// Close stops delivery, waits for running handlers (which then ack) until
// ctx ends, closes the consumer channel (requeueing anything
// unacknowledged) and returns nil; or an error wrapping ctx.Err() when ctx
// ended first, after cancelling the handlers' contexts. It never affects
// other subscriptions. Calling it again returns ErrClosed.
func (s *subscription) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.userClosed {
		s.mu.Unlock()
		return fmt.Errorf("rabbit: subscription close: %w", broker.ErrClosed)
	}
	s.userClosed = true
	if s.stopping && errors.Is(s.err, broker.ErrClosed) {
		s.err = nil
	}
	s.mu.Unlock()
	s.stop(nil)
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		s.cancelHandlers()
		return fmt.Errorf("rabbit: subscription close: %w", ctx.Err())
	}
}

// Done is closed when the subscription has ended for any reason and its
// handlers have returned.
func (s *subscription) Done() <-chan struct{} { return s.done }

// Err is nil while the subscription runs or after Close; ctx.Err() when
// its Subscribe context ended; ErrClosed when the broker closed; or the
// error that stopped it.
func (s *subscription) Err() error {
	select {
	case <-s.done:
	default:
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
