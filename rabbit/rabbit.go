// Package rabbit is the RabbitMQ adapter of isobroker, on
// github.com/rabbitmq/amqp091-go.
//
// Open a Broker from a Config, from a URL with options, or (for a
// registry) with Opener — the front door every adapter has:
//
//	b, err := rabbit.Open(ctx, rabbit.Config{URLs: []string{"amqp://guest:guest@localhost:5672/"}})
//	b, err := rabbit.OpenURL(ctx, "amqps://user:pass@h1,h2/vhost", rabbit.WithName("orders"))
//	reg.Register("amqp", rabbit.Opener)
//
// The settings every adapter shares have the same names here as in the
// others' Configs and options: Name, Logger, TLSConfig, DialTimeout,
// Backoff (a broker.Backoff, the waits between reconnect rounds and other
// retries) and MaxMessageSize, set by WithName, WithLogger, WithTLSConfig,
// WithDialTimeout, WithBackoff and WithMaxMessageSize; WithConfig reaches
// the rest.
//
// Mapping: a topic is a durable exchange of type topic; Message.Key is the
// routing key; a subscription group is a durable queue named
// "<topic>.<group>" bound to the exchange with routing pattern "#" (see
// BindingKeys and QueueName) — a quorum queue unless the QueueType driver
// option says classic or stream; members of a group compete for its
// messages; a subscription without a group gets an exclusive, auto-delete,
// server-named classic queue that lives as long as the subscription.
// Messages are persistent. A handler's nil acks (basic.ack); an error (or
// a panic) is a failed delivery: the message is redelivered
// (Metadata.Redelivered is set), after the subscription's redelivery delay
// if it has one, until broker.MaxDeliveries (default 20) deliveries have
// failed, and then dead-lettered. RabbitMQ does not order per key once
// handlers run concurrently, and keeps no history for new queues other
// than streams: Capabilities says so.
//
// Poison messages without plugins: a quorum queue counts deliveries itself
// (x-delivery-limit, a lost consumer's messages included) and dead-letters
// at least once (x-dead-letter-strategy at-least-once, x-overflow
// reject-publish) through the dead-letter topic's exchange, where the
// queue of broker.DeadLetterGroup keeps the message; a classic queue's
// failed deliveries are counted by the subscription, which republishes the
// message with its count. A redelivery delay is a retry queue per delay
// step ("<queue>.retry-<delay>", a message TTL and a dead-letter route
// back into the queue), so that the delayed message blocks nothing. A
// stream retries a failed message in place. Upgrading from a release that
// declared classic group queues: Subscribe fails with ErrInvalidOption
// naming x-queue-type until the subscription gives QueueType Classic (or
// another queue name, or the queue is deleted).
//
// Isolation: every Broker owns its connections (one for publishing, one
// opened by the first Subscribe for consuming, unless
// Config.SingleConnection), channels, confirm bookkeeping and goroutines.
// Two Brokers opened from the same URL share nothing but the process.
//
// Every call obeys its context, including the traps of amqp091-go: the
// connection's writes have deadlines (Config.WriteTimeout), connection.blocked
// is watched and turned into ErrBlocked by ctx, confirms are never awaited
// without ctx, and every Notify* channel is always drained.
//
// Recovery: a supervisor per connection reconnects with exponential
// backoff and jitter across every configured host, redeclares topology
// and resumes subscriptions; see the recovery note in link.go for why
// amqp091-go's own Config.Recovery is not used. Every lifecycle step is
// logged through the instance's slog.Logger, and State / WatchState report
// the transitions.
//
// Telemetry (WithTelemetry, Config.Telemetry; see broker.Telemetry): send
// and process spans with messaging.system "rabbitmq", server.address and
// server.port of the first configured host, and
// messaging.rabbitmq.destination.routing_key; the trace context travels
// as traceparent and tracestate in the AMQP headers table, and survives a
// delayed or dead-lettered copy. Settle spans are named ack, nack,
// dead_letter, delay and requeue (a classic queue's counted move).
package rabbit

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
)

// Broker is a RabbitMQ broker.Broker. Create it with Open or OpenURL; it is
// safe for concurrent use.
type Broker struct {
	cfg   *resolved
	log   *slog.Logger
	state *driver.StateTracker
	ins   *driver.Instruments // nil without telemetry

	gate       *driver.Gate    // calls, subscriptions and the start of Close
	lifeCtx    context.Context // cancelled when Close tears down
	lifeCancel context.CancelFunc
	killed     chan struct{} // closed when Close tears the connections down
	wg         sync.WaitGroup

	pub     *link
	arenas  arenaPool    // Publish's body copies, recycled (arena.go)
	batches sync.Pool    // of *batch, recycled by Publish (publish.go)
	stamps  atomic.Int64 // the last return stamp issued (pubchannel.go)

	stateMu sync.Mutex // serializes updateState

	mu  sync.Mutex
	sub *link
}

var _ broker.Broker = (*Broker)(nil)

// System is the messaging.system attribute of rabbit's telemetry.
const System = "rabbitmq"

// Open connects to the first reachable server of cfg.URLs (each tried once,
// in order, within ctx and Config.DialTimeout) and returns a Broker whose
// supervisor keeps the connection up from then on. Configuration errors
// (malformed URL, unreadable TLS files, a negative duration or size, a
// Backoff.Max below Backoff.Initial) wrap ErrInvalidOption, name what is
// wrong and are reported before anything is dialled; refused credentials wrap
// ErrUnauthorized, an unknown vhost ErrNotFound, unreachable servers
// ErrUnavailable. Errors and logs never contain the URL's password.
func Open(ctx context.Context, cfg Config) (*Broker, error) {
	r, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("rabbit: open: %w", err)
	}
	ep := r.endpoints[0].uri
	ins, err := driver.NewInstruments(r.Telemetry, driver.InstrumentsConfig{
		System: System, Instance: r.Name, ServerAddress: ep.Host, ServerPort: ep.Port,
		KeyAttribute: driver.AttrRabbitRouting,
	})
	if err != nil {
		return nil, fmt.Errorf("rabbit: open: %w", err)
	}
	b := &Broker{
		ins:    ins,
		cfg:    r,
		log:    r.Logger.With("broker", "rabbit", "name", r.Name),
		state:  driver.NewStateTracker(broker.StateConnecting),
		gate:   driver.NewGate(),
		killed: make(chan struct{}),
	}
	ins.Track(b.state)
	b.lifeCtx, b.lifeCancel = context.WithCancel(context.Background())
	b.pub = newLink(b, rolePublish)
	begin := time.Now()
	s, err := b.pub.connectOnce(ctx)
	if err != nil {
		b.lifeCancel()
		close(b.killed)
		b.wg.Wait()
		return nil, fmt.Errorf("rabbit: open: %w", err)
	}
	if r.SingleConnection {
		b.sub = b.pub
	}
	b.pub.install(s)
	b.pub.start(s)
	b.log.Info("rabbit: broker open", "host", s.ep.redacted, "took", time.Since(begin).Round(time.Millisecond))
	return b, nil
}

// OpenURL opens a Broker from target, one amqp:// or amqps:// URL which
// may list several comma-separated hosts (see Config.URLs), with opts
// applied in order to the Config. It behaves as Open.
func OpenURL(ctx context.Context, target string, opts ...Option) (*Broker, error) {
	return Open(ctx, urlConfig(target, opts...))
}

// urlConfig is the Config OpenURL opens.
func urlConfig(target string, opts ...Option) Config {
	cfg := Config{URLs: []string{target}}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	return cfg
}

// Opener opens a Broker for a registry's amqp:// and amqps:// schemes:
// OpenURL(ctx, target) named oc.Name, logging through oc.Logger (nil:
// slog.Default()). Its signature is registry.Opener's, so
// reg.Register("amqp", rabbit.Opener) works as it is.
func Opener(ctx context.Context, target string, oc driver.OpenConfig) (broker.Broker, error) {
	b, err := OpenURL(ctx, target, WithLogger(oc.Logger), WithName(oc.Name), WithTelemetry(oc.Telemetry))
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return b, nil
}

// GoString is String, so that %#v shows no password either.
func (b *Broker) GoString() string { return b.String() }

// LogValue makes slog print String.
func (b *Broker) LogValue() slog.Value { return slog.StringValue(b.String()) }

// String names the instance and its hosts, with passwords redacted.
func (b *Broker) String() string {
	hosts := make([]string, len(b.cfg.endpoints))
	for i, ep := range b.cfg.endpoints {
		hosts[i] = ep.redacted
	}
	return fmt.Sprintf("rabbit.Broker(%q, %s)", b.cfg.Name, strings.Join(hosts, ", "))
}

// Capabilities: redelivery, competing consumers, persistence,
// dead-lettering (MaxDeliveries, DeadLetterTo) and redelivery delays
// (through retry queues); no per-key ordering (with Concurrency > 1
// RabbitMQ hands one queue's messages to handlers in parallel). Replay is
// false because classic and quorum queues keep no history: a subscription
// with the QueueType(Stream) driver option reads a stream, which honours
// every broker.StartAt position. It never blocks.
func (b *Broker) Capabilities() broker.Capabilities {
	return broker.Capabilities{
		Redelivery:         true,
		CompetingConsumers: true,
		PerKeyOrdering:     false,
		Replay:             false,
		Persistent:         true,
		DeadLetter:         true,
		RedeliveryDelay:    true,
		MaxMessageSize:     b.cfg.MaxMessageSize,
	}
}

// State reports the connection state: connected while every open
// connection of the instance is up, reconnecting while one recovers, closed
// after Close. It never blocks.
func (b *Broker) State() broker.State { return b.state.State() }

// WatchState returns a channel receiving every later state change
// (connected → reconnecting with the loss's error → connected, and finally
// closed) until ctx ends or the broker closes; see driver.StateTracker. It
// never blocks the broker.
func (b *Broker) WatchState(ctx context.Context) <-chan broker.StateChange {
	return b.state.Watch(ctx)
}

func (b *Broker) isClosing() bool { return b.gate.IsClosing() }

// updateState recomputes the state from the links and publishes it, both
// under stateMu, so that a later computation is never overtaken by an
// earlier one.
func (b *Broker) updateState(cause error) {
	b.stateMu.Lock()
	defer b.stateMu.Unlock()
	if b.isClosing() {
		return
	}
	up := b.pub.connected()
	b.mu.Lock()
	sub := b.sub
	b.mu.Unlock()
	if sub != nil && sub != b.pub && sub.everUp() && !sub.connected() {
		up = false
	}
	if up {
		if c, ok := b.state.Set(broker.StateConnected, nil); ok {
			b.log.Info("rabbit: state", "from", c.From, "to", c.To)
		}
	} else if c, ok := b.state.Set(broker.StateReconnecting, cause); ok {
		b.log.Warn("rabbit: state", "from", c.From, "to", c.To, "err", cause)
	}
}

// consumeLinkLocked returns the link subscriptions use, creating it (and
// its supervisor, which dials) on first use. The caller holds b.mu and has
// checked that the broker is not closed.
func (b *Broker) consumeLinkLocked() *link {
	if b.sub == nil {
		b.sub = newLink(b, roleConsume)
		b.sub.start(nil)
	}
	return b.sub
}

// Close stops accepting work at once (Publish and Subscribe return
// ErrClosed from now on), stops deliveries, waits for running handlers and
// in-flight publishes until ctx ends (then cancels the handlers' contexts),
// and closes this instance's connections — bounded by ctx, or by
// DefaultCloseTimeout when ctx has no deadline, even when the server is
// unreachable, stalled or blocking. It returns nil after a clean drain, an
// error wrapping ctx.Err() otherwise, and ErrClosed when called again. No
// goroutine of the instance outlives it, except a handler that ignores its
// cancelled context (its worker ends when it returns).
func (b *Broker) Close(ctx context.Context) error {
	if !b.gate.Close() {
		return fmt.Errorf("rabbit: close: %w", broker.ErrClosed)
	}
	begin := time.Now()
	b.stateMu.Lock() // no updateState publishes after closed
	b.state.Set(broker.StateClosed, nil)
	b.stateMu.Unlock()
	b.log.Info("rabbit: closing")

	// Stop the subscriptions and wait for their handlers (which then ack)
	// and for in-flight publishes; a consumer's goroutines end once its
	// connection is closed below.
	subs, err := b.gate.Shutdown(ctx, "rabbit", driver.UntilHandlersIdle)

	// Tear down: stop the supervisors, then close the connections by the
	// deadline whatever the server does.
	dl := time.Now().Add(DefaultCloseTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	if ctx.Err() != nil {
		dl = time.Now()
	}
	b.lifeCancel()
	close(b.killed)
	b.mu.Lock()
	links := []*link{b.pub}
	if b.sub != nil && b.sub != b.pub {
		links = append(links, b.sub)
	}
	b.mu.Unlock()
	for _, l := range links {
		l.waitSupervisor()
		if s := l.current(); s != nil {
			s.kill(dl)
		}
	}
	b.wg.Wait()
	for _, s := range subs {
		s.WaitEnded(ctx)
	}
	if err != nil {
		b.log.Warn("rabbit: closed before in-flight work finished", "took", time.Since(begin).Round(time.Millisecond), "err", err)
		return fmt.Errorf("rabbit: close: %w", err)
	}
	b.log.Info("rabbit: closed", "took", time.Since(begin).Round(time.Millisecond))
	return nil
}
