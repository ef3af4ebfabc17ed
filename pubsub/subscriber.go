package pubsub

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/isobroker/broker"
)

// ErrSubscriberClosed is returned by Subscribe after Close; it wraps
// broker.ErrClosed.
var ErrSubscriberClosed = fmt.Errorf("pubsub: subscriber closed: %w", broker.ErrClosed)

// errNacked is what the handler returns for a Nack; the broker redelivers.
var errNacked = errors.New("pubsub: message nacked by the Watermill consumer")

// Subscriber is a message.Subscriber over a Broker. All its subscriptions
// belong to one broker group: subscriptions of Subscribers with the same
// group compete for messages, different groups each get every message, and
// the empty group gives every Subscribe call a private subscription that
// sees only messages published after it started.
type Subscriber struct {
	b     broker.Broker
	group string
	opts  options

	closing chan struct{} // closed by Close: stop handing out messages

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup // one per subscription's pump
}

var (
	_ message.Subscriber           = (*Subscriber)(nil)
	_ message.SubscribeInitializer = (*Subscriber)(nil)
)

// NewSubscriber returns a Subscriber whose subscriptions join group on b.
func NewSubscriber(b broker.Broker, group string, opts ...Option) (*Subscriber, error) {
	if b == nil {
		return nil, fmt.Errorf("pubsub: %w: nil broker", broker.ErrInvalidOption)
	}
	return &Subscriber{
		b: b, group: group, opts: newOptions(opts),
		closing: make(chan struct{}),
	}, nil
}

// Subscribe starts a broker subscription on topic and returns the channel
// Watermill reads. Each message waits for its Ack (the broker acks it) or
// Nack (the broker redelivers it) before the next is sent. The message's
// context is derived from ctx and cancelled once it is acked or nacked.
// The channel is closed when ctx ends, the Subscriber is closed, or the
// broker subscription ends; an unacknowledged message is then nacked.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrSubscriberClosed
	}
	s.wg.Add(1) // Close waits for this subscription from here on
	s.mu.Unlock()

	out := make(chan *message.Message)
	bs, err := s.b.Subscribe(ctx, topic, s.handler(out), s.subscribeOptions(broker.Concurrency(1))...)
	if err != nil {
		s.wg.Done()
		return nil, fmt.Errorf("pubsub: subscribe to %q: %w", topic, err)
	}
	go s.pump(topic, bs, out)
	return out, nil
}

// pump owns one broker subscription: it closes it when the Subscriber
// closes, and closes out once no handler can send on it any more.
func (s *Subscriber) pump(topic string, bs broker.Subscription, out chan *message.Message) {
	defer s.wg.Done()
	select {
	case <-bs.Done():
	case <-s.closing:
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.closeTimeout)
		if err := bs.Close(ctx); err != nil && !errors.Is(err, broker.ErrClosed) {
			s.opts.logger.Warn("closing subscription", "topic", topic, "group", s.group, "err", err)
		}
		cancel()
		<-bs.Done() // handlers return promptly once closing is closed
	}
	close(out)
	if err := bs.Err(); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, broker.ErrClosed) {
		s.opts.logger.Error("subscription ended", "topic", topic, "group", s.group, "err", err)
	}
}

// handler hands each delivery to Watermill and waits for its verdict.
func (s *Subscriber) handler(out chan<- *message.Message) broker.Handler {
	return func(ctx context.Context, d *broker.Delivery) error {
		if prop := s.opts.propagator; prop != nil && len(d.Headers) > 0 && !trace.SpanContextFromContext(ctx).IsValid() {
			ctx = prop.Extract(ctx, propagation.MapCarrier(d.Headers))
		}
		msgCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		m := toWatermill(d)
		m.SetContext(msgCtx)
		select {
		case out <- m:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closing:
			return ErrSubscriberClosed
		}
		select {
		case <-m.Acked():
			return nil
		case <-m.Nacked():
			return errNacked
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closing:
			return ErrSubscriberClosed
		}
	}
}

// subscribeOptions are the options of every broker Subscribe call: on a
// broker that dead-letters, no delivery limit first (Watermill decides
// when a message is poison, with its Retry and PoisonQueue middleware, and
// a Nack here also means "closing, not handled", which must not count
// against the message), then WithSubscribeOptions (a MaxDeliveries there
// turns the broker's dead-lettering back on), then the Subscriber's group
// and extra.
func (s *Subscriber) subscribeOptions(extra ...broker.SubscribeOption) []broker.SubscribeOption {
	var opts []broker.SubscribeOption
	if s.b.Capabilities().DeadLetter {
		opts = append(opts, broker.UnlimitedDeliveries())
	}
	opts = append(opts, s.opts.subscribe...)
	opts = append(opts, broker.Group(s.group))
	return append(opts, extra...)
}

// SubscribeInitialize creates the Subscriber's group on topic (a durable
// queue or the group's state) without consuming, so that messages
// published before the first Subscribe are kept for the group. It is a
// no-op for the empty group.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	if s.group == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.closeTimeout)
	defer cancel()
	bs, err := s.b.Subscribe(ctx, topic, func(context.Context, *broker.Delivery) error {
		return errors.New("pubsub: initializing, not consuming") // back to the queue
	}, s.subscribeOptions()...)
	if err != nil {
		return fmt.Errorf("pubsub: initialize %q: %w", topic, err)
	}
	if err := bs.Close(ctx); err != nil {
		return fmt.Errorf("pubsub: initialize %q: %w", topic, err)
	}
	return nil
}

// Close ends every subscription: messages handed out but not acknowledged
// are nacked (the broker redelivers them), the channels are closed, and the
// Broker is closed too if CloseBroker was given. It waits up to the close
// timeout. Calling it again returns nil.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), s.opts.closeTimeout)
	defer cancel()
	err := waitGroup(ctx, &s.wg, func() {})
	if s.opts.closeBroker {
		if cerr := s.b.Close(ctx); cerr != nil && !errors.Is(cerr, broker.ErrClosed) {
			err = errors.Join(err, cerr)
		}
	}
	if err != nil {
		return fmt.Errorf("pubsub: close subscriber: %w", err)
	}
	return nil
}
