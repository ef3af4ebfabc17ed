// Package pubsub is the Watermill backend: any broker.Broker as a
// message.Publisher and a message.Subscriber.
//
// Watermill's UUID becomes Message.ID, its metadata becomes Headers (the
// reserved metadata keys below become Key and ContentType), and its payload
// the Body; Ack and Nack map onto the Handler's result. Closing a Publisher
// or Subscriber follows Watermill's rules (idempotent, pending work drained
// or returned to the broker) and does not close the Broker unless asked
// with CloseBroker, so one Broker can serve several Watermill components,
// and closing one never affects the others.
package pubsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/isobroker/broker"
)

// Metadata keys with a meaning of their own: they travel as Message.Key and
// Message.ContentType instead of as headers.
const (
	// KeyMetadata holds the message key (routing key / partition key).
	KeyMetadata = "isobroker_key"
	// ContentTypeMetadata holds the content type.
	ContentTypeMetadata = "content-type"
)

// DefaultCloseTimeout bounds how long Close waits for in-flight work.
const DefaultCloseTimeout = 30 * time.Second

// ErrPublisherClosed is returned by Publish after Close; it wraps
// broker.ErrClosed.
var ErrPublisherClosed = fmt.Errorf("pubsub: publisher closed: %w", broker.ErrClosed)

// Option configures a Publisher or Subscriber.
type Option func(*options)

type options struct {
	closeBroker  bool
	closeTimeout time.Duration
	logger       *slog.Logger
	subscribe    []broker.SubscribeOption
	propagator   propagation.TextMapPropagator // nil: no telemetry of our own
}

func newOptions(opts []Option) options {
	o := options{closeTimeout: DefaultCloseTimeout}
	for _, f := range opts {
		f(&o)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	return o
}

// CloseBroker makes Close close the underlying Broker too. Off by default:
// the Broker usually outlives one Watermill component.
func CloseBroker() Option { return func(o *options) { o.closeBroker = true } }

// WithCloseTimeout bounds how long Close waits for in-flight publishes or
// handlers (default DefaultCloseTimeout).
func WithCloseTimeout(d time.Duration) Option { return func(o *options) { o.closeTimeout = d } }

// WithLogger sets the slog logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithSubscribeOptions passes options (prefetch, start position, driver
// options) to every broker Subscribe call of a Subscriber. The group is
// always the Subscriber's, and Concurrency is always 1: Watermill hands
// out one message at a time per subscription and waits for its Ack.
// Dead-lettering by the broker is off unless these options set
// broker.MaxDeliveries: in Watermill, middleware (Retry, PoisonQueue)
// decides when a message is poison.
func WithSubscribeOptions(opts ...broker.SubscribeOption) Option {
	return func(o *options) { o.subscribe = append(o.subscribe, opts...) }
}

// WithTelemetry carries trace context through the Watermill layer with
// t's propagator (W3C Trace Context when t.Propagator is nil), for when
// the Broker underneath was opened without telemetry, or a Publish call
// mixes messages of different traces:
//
//   - Publisher: each message whose Watermill context (Message.Context)
//     carries a span gets that trace context in its headers (unless its
//     metadata has one), so the consumer continues the message's own trace
//     (on an instrumented Broker the send span links to it);
//   - Subscriber: a delivery whose handler context has no span (the
//     Broker is not instrumented) gets the trace context found in its
//     headers as its Watermill context.
//
// Spans and metrics are the Broker's: open it with broker.Telemetry (or a
// registry made with registry.WithTelemetry). Whatever the options, a
// Publish runs under the span of its first message's context, and a
// Watermill message's context is the broker handler's, which carries the
// process span.
func WithTelemetry(t broker.Telemetry) Option {
	return func(o *options) {
		o.propagator = t.Propagator
		if o.propagator == nil && t.Enabled() {
			o.propagator = propagation.TraceContext{}
		}
	}
}

// NewLogger returns a Watermill logger that writes to l, so Watermill's
// own logs (router, middleware) flow through the application's slog
// handler like ours. Watermill's trace level maps below slog's debug.
func NewLogger(l *slog.Logger) watermill.LoggerAdapter { return watermill.NewSlogLogger(l) }

// Publisher is a message.Publisher over a Broker.
type Publisher struct {
	b    broker.Broker
	opts options

	ctx    context.Context // cancelled when Close gives up waiting
	cancel context.CancelFunc

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher returns a Publisher that publishes through b.
func NewPublisher(b broker.Broker, opts ...Option) (*Publisher, error) {
	if b == nil {
		return nil, fmt.Errorf("pubsub: %w: nil broker", broker.ErrInvalidOption)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Publisher{b: b, opts: newOptions(opts), ctx: ctx, cancel: cancel}, nil
}

// Publish sends msgs to topic in one broker Publish call and returns when
// the broker has taken responsibility for all of them (see
// broker.Broker.Publish). It obeys the messages' contexts (it stops when any
// of them ends) and returns ErrPublisherClosed after Close.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrPublisherClosed
	}
	p.inflight.Add(1)
	p.mu.Unlock()
	defer p.inflight.Done()

	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	out := make([]*broker.Message, len(msgs))
	for i, m := range msgs {
		if m == nil {
			return fmt.Errorf("pubsub: publish to %q: message %d: %w", topic, i, broker.ErrNilMessage)
		}
		if mctx := m.Context(); mctx.Done() != nil {
			stop := context.AfterFunc(mctx, cancel)
			defer stop()
			if mctx.Err() != nil {
				cancel()
			}
		}
		out[i] = toBroker(m)
	}
	ctx = p.traceContext(ctx, msgs, out)
	if err := p.b.Publish(ctx, topic, out...); err != nil {
		return fmt.Errorf("pubsub: publish %d message(s) to %q: %w", len(msgs), topic, err)
	}
	return nil
}

// traceContext makes the first message's span (if any) the parent of the
// broker Publish; with WithTelemetry, every message whose context carries
// a span gets that trace context in its headers, unless its metadata set
// one already.
func (p *Publisher) traceContext(ctx context.Context, msgs []*message.Message, out []*broker.Message) context.Context {
	parented := false
	for i, m := range msgs {
		mctx := m.Context()
		sc := trace.SpanContextFromContext(mctx)
		if !sc.IsValid() {
			continue
		}
		if !parented {
			parented = true
			ctx = trace.ContextWithSpanContext(ctx, sc)
		}
		if p.opts.propagator == nil || carriesAny(out[i].Headers, p.opts.propagator.Fields()) {
			continue
		}
		if out[i].Headers == nil {
			out[i].Headers = make(map[string]string)
		}
		p.opts.propagator.Inject(mctx, propagation.MapCarrier(out[i].Headers))
	}
	return ctx
}

func carriesAny(h map[string]string, keys []string) bool {
	for _, k := range keys {
		if _, ok := h[k]; ok {
			return true
		}
	}
	return false
}

// Close stops accepting publishes, waits for those in flight (up to the
// close timeout, then cancels them), and closes the Broker if CloseBroker
// was given. Calling it again returns nil.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), p.opts.closeTimeout)
	defer cancel()
	err := waitGroup(ctx, &p.inflight, p.cancel)
	p.cancel()
	if p.opts.closeBroker {
		if cerr := p.b.Close(ctx); cerr != nil && !errors.Is(cerr, broker.ErrClosed) {
			err = errors.Join(err, cerr)
		}
	}
	if err != nil {
		return fmt.Errorf("pubsub: close publisher: %w", err)
	}
	return nil
}

// waitGroup waits for wg until ctx ends; then it calls giveUp (which makes
// the remaining work end promptly) and returns ctx's error without waiting
// further.
func waitGroup(ctx context.Context, wg *sync.WaitGroup, giveUp func()) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		giveUp()
		return ctx.Err()
	}
}

// toBroker maps a Watermill message onto a broker message.
func toBroker(m *message.Message) *broker.Message {
	headers := maps.Clone(map[string]string(m.Metadata))
	out := &broker.Message{ID: m.UUID, Body: m.Payload}
	if k, ok := headers[KeyMetadata]; ok {
		out.Key = k
		delete(headers, KeyMetadata)
	}
	if ct, ok := headers[ContentTypeMetadata]; ok {
		out.ContentType = ct
		delete(headers, ContentTypeMetadata)
	}
	out.Headers = headers
	return out
}

// toWatermill maps a delivery onto a Watermill message.
func toWatermill(d *broker.Delivery) *message.Message {
	m := message.NewMessage(d.ID, d.Body)
	for k, v := range d.Headers {
		m.Metadata.Set(k, v)
	}
	if d.Key != "" {
		m.Metadata.Set(KeyMetadata, d.Key)
	}
	if d.ContentType != "" {
		m.Metadata.Set(ContentTypeMetadata, d.ContentType)
	}
	return m
}
