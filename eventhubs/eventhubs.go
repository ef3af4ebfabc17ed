package eventhubs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
)

// Broker is an Event Hubs broker.Broker. Create it with Open, OpenURL or
// Opener; it is safe for concurrent use. Each Broker owns its AMQP
// connection, sessions, links, token renewals and goroutines; two Brokers
// share nothing.
type Broker struct {
	cfg   Config
	log   *slog.Logger
	state *driver.StateTracker
	ins   *driver.Instruments // nil without telemetry

	gate    *driver.Gate    // calls, subscriptions and the start of Close
	deadCtx context.Context // cancelled when Close tears down
	kill    context.CancelFunc
	dead    <-chan struct{} // deadCtx.Done()

	conn slot[*amqpConn]
	gens atomic.Uint64
	wg   tracker // internal goroutines: supervisors, request-link readers, closers

	maxMsg atomic.Int64 // the link's max-message-size, or Config.MaxMessageSize

	mu       sync.Mutex
	dying    bool // set (with conns snapshot) before dead is closed
	conns    map[*amqpConn]struct{}
	senders  map[string]*slot[*senderLink]
	lostAt   time.Time
	attempts int // connection attempts since the last success
	lastHub  string
	overhead int // encoding overhead of a one-event batch
}

var _ broker.Broker = (*Broker)(nil)

// Open validates cfg, connects to the namespace and returns a connected
// Broker. Configuration errors (no namespace or credentials, a negative
// duration or size, a Backoff.Max below Backoff.Initial, …) wrap
// broker.ErrInvalidOption, name the field and are reported before anything
// is dialled. When cfg.EventHub is set it also puts a token for it, so
// that wrong credentials fail here (with an error wrapping
// broker.ErrUnauthorized, without retries). It blocks until connected or
// ctx ends, and fails on the first connection error rather than retrying
// (the error says whether a retry may help: broker.IsRetryable); nothing
// is left running when it fails.
func Open(ctx context.Context, cfg Config) (*Broker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(cfg.dialAddr())
	ins, err := driver.NewInstruments(cfg.Telemetry, driver.InstrumentsConfig{
		System: System, Instance: cfg.Name, ServerAddress: host, ServerPort: driver.Port(port),
		DiagnosticID: true, EnqueuedTime: true,
	})
	if err != nil {
		return nil, fmt.Errorf("eventhubs: open: %w", err)
	}
	deadCtx, kill := context.WithCancel(context.Background())
	b := &Broker{
		ins:     ins,
		cfg:     cfg,
		log:     cfg.Logger.With("broker", "eventhubs", "name", cfg.Name, "namespace", cfg.Namespace),
		state:   driver.NewStateTracker(broker.StateConnecting),
		gate:    driver.NewGate(),
		deadCtx: deadCtx,
		kill:    kill,
		dead:    deadCtx.Done(),
		conns:   make(map[*amqpConn]struct{}),
		senders: make(map[string]*slot[*senderLink]),
	}
	ins.Track(b.state)
	b.conn.timeout, b.conn.bound = cfg.DialTimeout, "Config.DialTimeout"
	b.maxMsg.Store(int64(cfg.MaxMessageSize))
	b.overhead = batchOverhead()
	start := time.Now()
	fail := func(err error) (*Broker, error) {
		cctx, cancel := context.WithTimeout(context.Background(), linkCloseTimeout)
		defer cancel()
		_ = b.Close(cctx)
		return nil, err
	}
	c, err := b.getConn(ctx)
	if err != nil {
		return fail(fmt.Errorf("eventhubs: open %s: %w", cfg, err))
	}
	if cfg.EventHub != "" {
		if err := c.putToken(ctx, cfg.audience(cfg.EventHub)); err != nil {
			return fail(fmt.Errorf("eventhubs: open %s: %w", cfg, err))
		}
	}
	b.log.Info("broker open", "config", cfg, "elapsed", time.Since(start))
	return b, nil
}

// System is the messaging.system attribute of eventhubs' telemetry.
const System = "eventhubs"

// String describes the broker without secrets.
func (b *Broker) String() string { return b.cfg.String() }

// GoString is String, so that %#v shows no secret either.
func (b *Broker) GoString() string { return b.String() }

// LogValue makes slog print String.
func (b *Broker) LogValue() slog.Value { return slog.StringValue(b.String()) }

// Capabilities reports what Event Hubs guarantees through this adapter:
//
//   - Redelivery false: the service never redelivers one event. A handler
//     error is not checkpointed and is retried by the partition's handler
//     loop (with backoff, Metadata.Redelivered set) before the partition
//     moves on; see Subscribe.
//   - CompetingConsumers false: members of a consumer group each read
//     every partition they attach to; owner levels decide who keeps one.
//   - PerKeyOrdering true: a key maps to one partition, read in order.
//   - Replay true, Persistent true.
//   - DeadLetter true, RedeliveryDelay true: a failing event is retried in
//     place (blocking its partition only) with the redelivery delay, and
//     after broker.MaxDeliveries deliveries published to the dead-letter
//     event hub, which must exist with a "kept" consumer group; see
//     Subscribe.
//   - MaxMessageSize: the largest Body of an event without ID, key or
//     headers that fits the sender link's max-message-size (the configured
//     assumption until a link has reported it).
func (b *Broker) Capabilities() broker.Capabilities {
	return broker.Capabilities{
		PerKeyOrdering:  true,
		Replay:          true,
		Persistent:      true,
		DeadLetter:      true,
		RedeliveryDelay: true,
		MaxMessageSize:  int(b.maxMsg.Load()) - b.overhead,
	}
}

// State reports the connection state: connected, reconnecting after the
// service closed the connection (until the next use rebuilds it), or
// closed.
func (b *Broker) State() broker.State { return b.state.State() }

// WatchState implements broker.Broker.
func (b *Broker) WatchState(ctx context.Context) <-chan broker.StateChange {
	return b.state.Watch(ctx)
}

// life is the instance's lifetime, under which shared state is built.
func (b *Broker) life() lifetime { return lifetime{b.deadCtx, &b.wg} }

func (b *Broker) isClosing() bool { return b.gate.IsClosing() }

func (b *Broker) isDead() bool {
	select {
	case <-b.dead:
		return true
	default:
		return false
	}
}

// backoff is the delay before retry attempt (1-based) under
// Config.Backoff: driver.BackoffDelay, never above Backoff.Max.
func (b *Broker) backoff(attempt int) time.Duration {
	return driver.BackoffDelay(b.cfg.Backoff, attempt)
}

// sleep waits d; false if ctx ended or the broker died first.
func (b *Broker) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil && !b.isDead()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-b.dead:
		return false
	}
}

// Close stops accepting work at once (later calls return
// broker.ErrClosed), stops the subscriptions' receivers, waits until ctx
// ends for running handlers and in-flight publishes, then closes the
// connection and waits for the instance's goroutines. It returns nil after
// a clean drain, an error wrapping ctx.Err() when ctx ended first
// (resources are released either way; handler contexts are cancelled),
// and ErrClosed when called again. It touches nothing of other instances.
func (b *Broker) Close(ctx context.Context) error {
	if !b.gate.Close() {
		return fmt.Errorf("eventhubs: close: %w", broker.ErrClosed)
	}
	b.state.Set(broker.StateClosed, nil)
	start := time.Now()
	_, err := b.gate.Shutdown(ctx, "eventhubs", driver.UntilEnded)

	b.mu.Lock()
	b.dying = true
	conns := make([]*amqpConn, 0, len(b.conns))
	for c := range b.conns {
		conns = append(conns, c)
	}
	b.conns = map[*amqpConn]struct{}{}
	b.mu.Unlock()
	b.kill()
	for _, c := range conns {
		c.shutdown(ctx)
	}
	if werr := b.wg.wait(ctx); werr != nil {
		err = errors.Join(err, fmt.Errorf("internal goroutines still running: %w", werr))
	}
	if err != nil {
		b.log.Warn("broker closed before work finished", "err", err, "elapsed", time.Since(start))
		return fmt.Errorf("eventhubs: close: %w", err)
	}
	b.log.Info("broker closed", "elapsed", time.Since(start))
	return nil
}
