// Package registry opens Brokers from URLs and connection strings and keeps
// named instances.
//
// A Registry is a value the application creates (there is no global one);
// it knows a set of schemes, each with an Opener. New registers the
// built-in schemes:
//
//	mem://[name][?capacity=N&max_message_size=N]   the in-memory broker (package mem)
//	amqp://user:pass@host[,host2][:port]/vhost     RabbitMQ (package rabbit)
//	amqps://…?cacertfile=…&certfile=…&keyfile=…    RabbitMQ over TLS
//	Endpoint=sb://ns/;SharedAccessKeyName=…;…      Event Hubs connection string (package eventhubs)
//	eventhubs://keyName:key@host[:port]/hub[?emulator=true]   Event Hubs URL form
//
// and further schemes are added with Register. Every Open creates a new,
// isolated Broker: opening the same URL twice gives two instances that
// share nothing.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
	"github.com/isobroker/broker/internal/redact"
	"github.com/isobroker/broker/mem"
)

// Errors returned by the registry, wrapped with the offending name or URL
// (passwords and keys redacted).
var (
	// ErrUnknownScheme: no Opener is registered for the URL's scheme.
	ErrUnknownScheme = errors.New("registry: unknown scheme")
	// ErrNameInUse: OpenNamed was given a name the registry already holds.
	ErrNameInUse = errors.New("registry: name in use")
	// ErrNoSuchName: no instance is held under the name.
	ErrNoSuchName = errors.New("registry: no such name")
)

// ConnectionStringScheme is the scheme under which "Endpoint=sb://…;…"
// connection strings (Event Hubs) are looked up.
const ConnectionStringScheme = "sb"

// Opener opens a new Broker for target (the whole URL or connection
// string, unmodified). It must honour ctx and return an error wrapping
// broker.ErrInvalidOption for malformed targets.
type Opener func(ctx context.Context, target string, cfg OpenConfig) (broker.Broker, error)

// OpenConfig carries the registry's settings to an Opener: the instance's
// Name ("" for unnamed instances) and the registry's Logger, never nil. It
// is driver.OpenConfig, so that every adapter's Opener (rabbit.Opener,
// eventhubs.Opener) is an Opener as it is.
type OpenConfig = driver.OpenConfig

// Option configures New.
type Option func(*Registry)

// WithLogger sets the logger handed to Openers (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(r *Registry) { r.logger = l } }

// WithTelemetry turns on OpenTelemetry for every Broker the registry
// opens: it is handed to each Opener in OpenConfig.Telemetry (see
// broker.Telemetry).
func WithTelemetry(t broker.Telemetry) Option { return func(r *Registry) { r.telemetry = t } }

// Registry maps schemes to Openers and names to open Brokers. It is safe
// for concurrent use; it never holds its lock while a Broker opens or
// closes.
type Registry struct {
	logger    *slog.Logger
	telemetry broker.Telemetry

	mu      sync.Mutex
	openers map[string]Opener
	named   map[string]broker.Broker // nil value: being opened
}

// New returns a Registry with the built-in schemes registered.
func New(opts ...Option) *Registry {
	r := &Registry{openers: make(map[string]Opener), named: make(map[string]broker.Broker)}
	for _, o := range opts {
		o(r)
	}
	if r.logger == nil {
		r.logger = slog.Default()
	}
	addBuiltins(r.openers)
	return r
}

// Register adds or replaces the Opener for scheme (lower case, without
// "://").
func (r *Registry) Register(scheme string, o Opener) error {
	scheme = strings.ToLower(scheme)
	if scheme == "" || strings.ContainsAny(scheme, ":/") || o == nil {
		return fmt.Errorf("registry: %w: register scheme %q (want a bare scheme and a non-nil opener)", broker.ErrInvalidOption, scheme)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.openers[scheme] = o
	return nil
}

// Schemes lists the registered schemes, sorted.
func (r *Registry) Schemes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.openers))
	for s := range r.openers {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// schemeOf returns the scheme that selects target's Opener.
func schemeOf(target string) (string, error) {
	t := strings.TrimSpace(target)
	if t == "" {
		return "", fmt.Errorf("registry: %w: empty URL", broker.ErrInvalidOption)
	}
	if strings.HasPrefix(strings.ToLower(t), "endpoint=") {
		return ConnectionStringScheme, nil
	}
	scheme, _, ok := strings.Cut(t, "://")
	if !ok || scheme == "" {
		return "", fmt.Errorf("registry: %w: %q is neither a URL (scheme://…) nor a connection string (Endpoint=…)",
			broker.ErrInvalidOption, redact.Target(t))
	}
	for _, c := range scheme {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.') {
			return "", fmt.Errorf("registry: %w: bad scheme %q in %q", broker.ErrInvalidOption, scheme, redact.Target(t))
		}
	}
	return strings.ToLower(scheme), nil
}

// Open opens a new Broker for target. The caller owns it and must Close it;
// the registry does not hold it. Open blocks while the adapter connects, up
// to ctx.
func (r *Registry) Open(ctx context.Context, target string) (broker.Broker, error) {
	return r.open(ctx, "", target)
}

func (r *Registry) open(ctx context.Context, name, target string) (broker.Broker, error) {
	scheme, err := schemeOf(target)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	o := r.openers[scheme]
	r.mu.Unlock()
	if o == nil {
		return nil, fmt.Errorf("%w %q in %q (registered: %s)", ErrUnknownScheme, scheme, redact.Target(target),
			strings.Join(r.Schemes(), ", "))
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("registry: open %q: %w", redact.Target(target), err)
	}
	b, err := o(ctx, target, OpenConfig{Name: name, Logger: r.logger, Telemetry: r.telemetry})
	if err != nil {
		return nil, fmt.Errorf("registry: open %q: %w", redact.Target(target), err)
	}
	return b, nil
}

// OpenNamed opens a new Broker for target and holds it under name, for Get,
// Close and CloseAll. A name can be held once: reusing it before closing it
// returns ErrNameInUse.
func (r *Registry) OpenNamed(ctx context.Context, name, target string) (broker.Broker, error) {
	if name == "" {
		return nil, fmt.Errorf("registry: %w: empty name", broker.ErrInvalidOption)
	}
	r.mu.Lock()
	if _, taken := r.named[name]; taken {
		r.mu.Unlock()
		return nil, fmt.Errorf("registry: open %q: %w", name, ErrNameInUse)
	}
	r.named[name] = nil // reserved while opening, without holding the lock
	r.mu.Unlock()

	b, err := r.open(ctx, name, target)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		delete(r.named, name)
		return nil, err
	}
	r.named[name] = b
	return b, nil
}

// Get returns the Broker held under name.
func (r *Registry) Get(name string) (broker.Broker, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.named[name]
	return b, b != nil
}

// Names lists the held names, sorted.
func (r *Registry) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.named))
	for n, b := range r.named {
		if b != nil {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// Close releases the name and closes its Broker (see broker.Broker.Close:
// bounded by ctx). It affects no other instance.
func (r *Registry) Close(ctx context.Context, name string) error {
	r.mu.Lock()
	b := r.named[name]
	if b != nil {
		delete(r.named, name)
	}
	r.mu.Unlock()
	if b == nil {
		return fmt.Errorf("registry: close %q: %w", name, ErrNoSuchName)
	}
	if err := b.Close(ctx); err != nil {
		return fmt.Errorf("registry: close %q: %w", name, err)
	}
	return nil
}

// CloseAll closes every held Broker at once, each bounded by ctx, so one
// slow instance delays none of the others. It returns the joined errors.
func (r *Registry) CloseAll(ctx context.Context) error {
	r.mu.Lock()
	held := make(map[string]broker.Broker, len(r.named))
	for n, b := range r.named {
		if b != nil {
			held[n] = b
			delete(r.named, n)
		}
	}
	r.mu.Unlock()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for n, b := range held {
		wg.Go(func() {
			if err := b.Close(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("registry: close %q: %w", n, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// openMem opens mem://[name][?capacity=N&max_message_size=N].
func openMem(_ context.Context, target string, cfg OpenConfig) (broker.Broker, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", broker.ErrInvalidOption, err)
	}
	name := cfg.Name
	if name == "" {
		name = u.Host
	}
	opts, err := memOptions(u.Query())
	if err != nil {
		return nil, err
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("%w: mem URL takes no path (got %q)", broker.ErrInvalidOption, u.Path)
	}
	return newMem(name, cfg.Logger, append(opts, mem.WithTelemetry(cfg.Telemetry))...)
}
