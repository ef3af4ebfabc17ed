package rabbit

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
	"github.com/isobroker/broker/internal/amqpfake"
)

// Every common Option lands in the resolved Config, under the same name as
// in the other adapters.
func TestFrontDoorOptions(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	tc := &tls.Config{ServerName: "from-option", MinVersion: tls.VersionTLS13}
	cases := []struct {
		name  string
		opt   Option
		check func(r *resolved) bool
	}{
		{"WithName", WithName("orders"), func(r *resolved) bool { return r.Name == "orders" }},
		{"WithLogger", WithLogger(logger), func(r *resolved) bool { return r.Logger == logger }},
		{"WithTLSConfig", WithTLSConfig(tc), func(r *resolved) bool {
			ep := r.endpoints[0].tls
			return r.TLSConfig == tc && ep != nil && ep != tc && ep.ServerName == "from-option" && ep.MinVersion == tls.VersionTLS13
		}},
		{"WithDialTimeout", WithDialTimeout(3 * time.Second), func(r *resolved) bool { return r.DialTimeout == 3*time.Second }},
		{"WithBackoff", WithBackoff(broker.Backoff{Initial: time.Second, Max: time.Minute}), func(r *resolved) bool {
			return r.Backoff == broker.Backoff{Initial: time.Second, Max: time.Minute}
		}},
		{"WithBackoff(Initial only)", WithBackoff(broker.Backoff{Initial: time.Second}), func(r *resolved) bool {
			return r.Backoff == broker.Backoff{Initial: time.Second, Max: DefaultBackoffMax}
		}},
		{"WithMaxMessageSize", WithMaxMessageSize(4096), func(r *resolved) bool { return r.MaxMessageSize == 4096 }},
		{"WithConfig", WithConfig(func(c *Config) { c.PublishChannels = 7 }), func(r *resolved) bool { return r.PublishChannels == 7 }},
		{"WithTLS (deprecated)", WithTLS(tc), func(r *resolved) bool { return r.TLSConfig == tc && r.endpoints[0].tls.ServerName == "from-option" }},
		{"nil Option skipped", nil, func(r *resolved) bool { return r.Name == "" }},
	}
	for _, c := range cases {
		r, err := urlConfig("amqps://u:pw@host.example/", c.opt).resolve()
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !c.check(r) {
			t.Errorf("%s: not in the resolved config: %+v", c.name, r.Config)
		}
	}
	// A later option overrides an earlier one.
	r, err := urlConfig("amqp://h/", WithName("a"), WithName("b")).resolve()
	if err != nil || r.Name != "b" {
		t.Errorf("WithName(a), WithName(b): %v, name %q", err, r.Name)
	}
}

// Zero settings take the documented defaults.
func TestFrontDoorDefaults(t *testing.T) {
	r, err := urlConfig("amqps://u:pw@host.example/").resolve()
	if err != nil {
		t.Fatal(err)
	}
	if r.Backoff != (broker.Backoff{Initial: DefaultBackoffInitial, Max: DefaultBackoffMax}) {
		t.Errorf("Backoff = %+v, want the defaults", r.Backoff)
	}
	if DefaultBackoffInitial != 100*time.Millisecond || DefaultBackoffMax != 10*time.Second {
		t.Errorf("defaults changed: %v, %v", DefaultBackoffInitial, DefaultBackoffMax)
	}
	if r.DialTimeout != DefaultDialTimeout || r.MaxMessageSize != DefaultMaxMessageSize || r.Logger == nil {
		t.Errorf("defaults not applied: %+v", r.Config)
	}
	if ep := r.endpoints[0].tls; ep == nil || ep.ServerName != "host.example" || ep.MinVersion != tls.VersionTLS12 {
		t.Errorf("TLS without TLSConfig = %+v, want TLS 1.2+ for host.example", ep)
	}
}

// The deprecated fields are still honoured, and the new ones win when both
// are set.
func TestFrontDoorDeprecated(t *testing.T) {
	oldTLS := &tls.Config{ServerName: "old"}
	newTLS := &tls.Config{ServerName: "new"}
	cases := []struct {
		name  string
		cfg   Config
		check func(r *resolved) bool
	}{
		{"TLS alone", Config{TLS: oldTLS}, func(r *resolved) bool {
			return r.TLSConfig == oldTLS && r.endpoints[0].tls.ServerName == "old"
		}},
		{"TLSConfig wins over TLS", Config{TLS: oldTLS, TLSConfig: newTLS}, func(r *resolved) bool {
			return r.TLSConfig == newTLS && r.endpoints[0].tls.ServerName == "new"
		}},
		{"ReconnectInitial/Max alone", Config{ReconnectInitial: 20 * time.Millisecond, ReconnectMax: 300 * time.Millisecond}, func(r *resolved) bool {
			return r.Backoff == broker.Backoff{Initial: 20 * time.Millisecond, Max: 300 * time.Millisecond}
		}},
		{"ReconnectInitial alone", Config{ReconnectInitial: 20 * time.Millisecond}, func(r *resolved) bool {
			return r.Backoff == broker.Backoff{Initial: 20 * time.Millisecond, Max: DefaultBackoffMax}
		}},
		{"ReconnectMax below ReconnectInitial is raised, as before", Config{ReconnectInitial: time.Second, ReconnectMax: time.Millisecond}, func(r *resolved) bool {
			return r.Backoff == broker.Backoff{Initial: time.Second, Max: time.Second}
		}},
		{"negative ReconnectInitial is the default, as before", Config{ReconnectInitial: -time.Second}, func(r *resolved) bool {
			return r.Backoff == broker.Backoff{Initial: DefaultBackoffInitial, Max: DefaultBackoffMax}
		}},
		{"Backoff wins over ReconnectInitial/Max", Config{Backoff: broker.Backoff{Initial: time.Second}, ReconnectInitial: time.Millisecond, ReconnectMax: 2 * time.Millisecond}, func(r *resolved) bool {
			return r.Backoff == broker.Backoff{Initial: time.Second, Max: DefaultBackoffMax}
		}},
	}
	for _, c := range cases {
		c.cfg.URLs = []string{"amqps://u:pw@host.example/"}
		r, err := c.cfg.resolve()
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !c.check(r) {
			t.Errorf("%s: resolved to TLSConfig %p, Backoff %+v", c.name, r.TLSConfig, r.Backoff)
		}
	}
}

// silentListener listens on loopback and reports whether anything
// connected to it: the proof that a refused Open dialled nothing.
func silentListener(t *testing.T) (addr string, dialled func() bool) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln.Addr().String(), func() bool {
		// A dial completes its TCP handshake before the dialler goes on,
		// so a connection made by a call that has returned is queued.
		_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(200 * time.Millisecond))
		c, err := ln.Accept()
		if err == nil {
			_ = c.Close()
			return true
		}
		return false
	}
}

// Bad values of the common settings are refused by Open, through Config
// and through options, with an error naming the field, before anything is
// dialled.
func TestFrontDoorRefusesBadSettings(t *testing.T) {
	addr, dialled := silentListener(t)
	url := "amqp://u:pw@" + addr + "/"
	cases := []struct {
		name  string
		cfg   Config
		opt   Option
		names string
	}{
		{"negative DialTimeout", Config{DialTimeout: -time.Second}, WithDialTimeout(-time.Second), "DialTimeout -1s is negative"},
		{"negative MaxMessageSize", Config{MaxMessageSize: -1}, WithMaxMessageSize(-1), "MaxMessageSize -1 is negative"},
		{"negative Backoff.Initial", Config{Backoff: broker.Backoff{Initial: -time.Second}}, WithBackoff(broker.Backoff{Initial: -time.Second}), "Backoff.Initial"},
		{"negative Backoff.Max", Config{Backoff: broker.Backoff{Max: -time.Second}}, WithBackoff(broker.Backoff{Max: -time.Second}), "Backoff.Max"},
		{"Backoff.Max below Initial", Config{Backoff: broker.Backoff{Initial: time.Minute, Max: time.Second}}, WithBackoff(broker.Backoff{Initial: time.Minute, Max: time.Second}), "Backoff.Max 1s is below Backoff.Initial 1m0s"},
	}
	for _, c := range cases {
		c.cfg.URLs = []string{url}
		c.cfg.Logger = slog.New(slog.DiscardHandler)
		opens := map[string]func(ctx context.Context) error{
			"Open": func(ctx context.Context) error {
				b, err := Open(ctx, c.cfg)
				if b != nil {
					_ = b.Close(ctx)
				}
				return err
			},
			"OpenURL": func(ctx context.Context) error {
				b, err := OpenURL(ctx, url, WithLogger(c.cfg.Logger), c.opt)
				if b != nil {
					_ = b.Close(ctx)
				}
				return err
			},
		}
		for how, open := range opens {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err := open(ctx)
			cancel()
			switch {
			case !errors.Is(err, broker.ErrInvalidOption):
				t.Errorf("%s %s: %v, want ErrInvalidOption", how, c.name, err)
			case broker.IsRetryable(err):
				t.Errorf("%s %s: %v is retryable", how, c.name, err)
			case !strings.Contains(err.Error(), c.names):
				t.Errorf("%s %s: %v does not say %q", how, c.name, err, c.names)
			}
			if dialled() {
				t.Errorf("%s %s: the server was dialled before the setting was refused", how, c.name)
			}
		}
	}
}

// Opener is registry.Opener's shape and hands the registry's name and
// logger to the instance: the server sees the name, the logger the
// lifecycle.
func TestOpenerPassesNameAndLogger(t *testing.T) {
	var _ func(context.Context, string, driver.OpenConfig) (broker.Broker, error) = Opener
	srv, err := amqpfake.Start(amqpfake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	var mu sync.Mutex
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := Opener(ctx, srv.URL(), driver.OpenConfig{Name: "from-registry", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := srv.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if name, _ := conn.ClientProperties()["connection_name"].(string); !strings.Contains(name, "from-registry") {
		t.Errorf("connection_name = %q, want it to hold the registry's name", name)
	}
	if err := b.Close(ctx); err != nil {
		t.Errorf("close: %v", err)
	}
	mu.Lock()
	text := logs.String()
	mu.Unlock()
	if !strings.Contains(text, "broker open") || !strings.Contains(text, "name=from-registry") {
		t.Errorf("the registry's logger did not get the instance's logs:\n%s", text)
	}
	// A nil Logger is slog.Default(), not a panic; a bad target is refused.
	if bad, err := Opener(ctx, "http://h/", driver.OpenConfig{}); !errors.Is(err, broker.ErrInvalidOption) || bad != nil {
		t.Errorf("Opener(http://h/) = %v, %v; want a nil Broker and ErrInvalidOption", bad, err)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestDialTimeoutIsNotTheCallersDeadline: when DialTimeout cuts an
// attempt short while the caller's ctx still has time, Open's error says
// that the server did not answer in time — ErrUnavailable, retryable,
// naming DialTimeout — and does not read as the caller's own deadline.
func TestDialTimeoutIsNotTheCallersDeadline(t *testing.T) {
	addr, dialled := silentListener(t) // accepts (backlog) and never speaks AMQP
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := Open(ctx, Config{URLs: []string{"amqp://u:pw@" + addr + "/"}, DialTimeout: 300 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	if err == nil {
		_ = b.Close(ctx)
		t.Fatal("Open against a silent peer succeeded")
	}
	if !dialled() {
		t.Fatal("the peer was never dialled: the test proves nothing")
	}
	if ctx.Err() != nil {
		t.Fatalf("the caller's ctx ended (%v): DialTimeout did not bound the attempt", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v: reads as the caller's deadline, which still had time", err)
	}
	if !errors.Is(err, broker.ErrUnavailable) || !broker.IsRetryable(err) {
		t.Errorf("err = %v: want ErrUnavailable, retryable", err)
	}
	if !strings.Contains(err.Error(), "DialTimeout") {
		t.Errorf("err = %v: does not name DialTimeout", err)
	}
}
