package eventhubs

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
	"github.com/isobroker/broker/eventhubs/emulator"
)

const frontDoorCS = "Endpoint=sb://ns.example/;SharedAccessKeyName=k;SharedAccessKey=c2VjcmV0"

// resolvedURL is the Config Open would run with for OpenURL(target, opts...).
func resolvedURL(t *testing.T, target string, opts ...Option) (Config, error) {
	t.Helper()
	c, err := urlConfig(target, opts...)
	if err != nil {
		return Config{}, err
	}
	return c.withDefaults()
}

// Every common Option lands in the resolved Config, under the same name as
// in the other adapters.
func TestFrontDoorOptions(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	tc := &tls.Config{ServerName: "from-option", MinVersion: tls.VersionTLS13}
	cases := []struct {
		name  string
		opt   Option
		check func(c Config) bool
	}{
		{"WithName", WithName("orders"), func(c Config) bool { return c.Name == "orders" }},
		{"WithLogger", WithLogger(logger), func(c Config) bool { return c.Logger == logger }},
		{"WithTLSConfig", WithTLSConfig(tc), func(c Config) bool {
			got := c.tlsConfig()
			return c.TLSConfig == tc && got != tc && got.ServerName == "from-option" && got.MinVersion == tls.VersionTLS13
		}},
		{"WithDialTimeout", WithDialTimeout(3 * time.Second), func(c Config) bool { return c.DialTimeout == 3*time.Second }},
		{"WithBackoff", WithBackoff(broker.Backoff{Initial: time.Second, Max: time.Minute}), func(c Config) bool {
			return c.Backoff == broker.Backoff{Initial: time.Second, Max: time.Minute}
		}},
		{"WithBackoff(Max only)", WithBackoff(broker.Backoff{Max: 50 * time.Millisecond}), func(c Config) bool {
			return c.Backoff == broker.Backoff{Initial: 50 * time.Millisecond, Max: 50 * time.Millisecond}
		}},
		{"WithMaxMessageSize", WithMaxMessageSize(4096), func(c Config) bool { return c.MaxMessageSize == 4096 }},
		{"nil Option skipped", nil, func(c Config) bool { return c.Name == "" }},
	}
	for _, target := range []string{frontDoorCS, "eventhubs://k:c2VjcmV0@ns.example/hub"} {
		for _, c := range cases {
			got, err := resolvedURL(t, target, c.opt)
			if err != nil {
				t.Errorf("%s on %s: %v", c.name, target[:9], err)
				continue
			}
			if !c.check(got) {
				t.Errorf("%s on %s: not in the resolved config: %+v", c.name, target[:9], got)
			}
		}
	}
	// A later option overrides an earlier one.
	if got, err := resolvedURL(t, frontDoorCS, WithName("a"), WithName("b")); err != nil || got.Name != "b" {
		t.Errorf("WithName(a), WithName(b): %v, name %q", err, got.Name)
	}
}

// Zero settings take the documented defaults.
func TestFrontDoorDefaults(t *testing.T) {
	c, err := resolvedURL(t, frontDoorCS)
	if err != nil {
		t.Fatal(err)
	}
	if c.Backoff != (broker.Backoff{Initial: DefaultBackoffInitial, Max: DefaultBackoffMax}) {
		t.Errorf("Backoff = %+v, want the defaults", c.Backoff)
	}
	if DefaultBackoffInitial != 100*time.Millisecond || DefaultBackoffMax != 10*time.Second {
		t.Errorf("defaults changed: %v, %v", DefaultBackoffInitial, DefaultBackoffMax)
	}
	if c.DialTimeout != DefaultDialTimeout || DefaultDialTimeout != setupTimeout {
		t.Errorf("DialTimeout = %v, want DefaultDialTimeout = setupTimeout (%v)", c.DialTimeout, setupTimeout)
	}
	if c.MaxMessageSize != DefaultMaxMessageSize || c.Logger == nil || c.Retry.MaxAttempts != DefaultRetryAttempts {
		t.Errorf("defaults not applied: %+v", c)
	}
}

// The deprecated RetryOptions delays are still honoured when Backoff is
// zero, the new field wins when both are set, and MaxAttempts is kept.
func TestFrontDoorDeprecated(t *testing.T) {
	cases := []struct {
		name  string
		retry RetryOptions
		bo    broker.Backoff
		want  broker.Backoff
	}{
		{"BaseDelay/MaxDelay alone", RetryOptions{BaseDelay: 10 * time.Millisecond, MaxDelay: 200 * time.Millisecond}, broker.Backoff{}, broker.Backoff{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond}},
		{"BaseDelay alone", RetryOptions{BaseDelay: 10 * time.Millisecond}, broker.Backoff{}, broker.Backoff{Initial: 10 * time.Millisecond, Max: DefaultBackoffMax}},
		{"MaxDelay below BaseDelay is raised, as before", RetryOptions{BaseDelay: time.Second, MaxDelay: time.Millisecond}, broker.Backoff{}, broker.Backoff{Initial: time.Second, Max: time.Second}},
		{"negative BaseDelay is the default, as before", RetryOptions{BaseDelay: -time.Second}, broker.Backoff{}, broker.Backoff{Initial: DefaultBackoffInitial, Max: DefaultBackoffMax}},
		{"Backoff wins over BaseDelay/MaxDelay", RetryOptions{BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond}, broker.Backoff{Initial: time.Second}, broker.Backoff{Initial: time.Second, Max: DefaultBackoffMax}},
	}
	for _, c := range cases {
		c.retry.MaxAttempts = 3
		got, err := resolvedURL(t, frontDoorCS, WithRetry(c.retry), WithBackoff(c.bo))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got.Backoff != c.want || got.Retry.MaxAttempts != 3 {
			t.Errorf("%s: Backoff %+v, MaxAttempts %d; want %+v, 3", c.name, got.Backoff, got.Retry.MaxAttempts, c.want)
		}
	}
	// OpenConfig and OpenTarget still open.
	e := startFrontDoorEmulator(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b1, err := OpenConfig(ctx, Config{Namespace: e.Addr(), KeyName: e.KeyName(), Key: e.Key(), UseDevelopmentEmulator: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("OpenConfig: %v", err)
	}
	_ = b1.Close(ctx)
	b2, err := OpenTarget(ctx, e.ConnectionString(""), slog.New(slog.DiscardHandler), "old")
	if err != nil {
		t.Fatalf("OpenTarget: %v", err)
	}
	if b2.(*Broker).cfg.Name != "old" {
		t.Errorf("OpenTarget lost the name: %q", b2.(*Broker).cfg.Name)
	}
	_ = b2.Close(ctx)
}

// The Broker's retry delays are Config.Backoff's: never above Max (the
// former jitter reached 1.3 × MaxDelay), never below half the step.
func TestBackoffStaysUnderMax(t *testing.T) {
	c, err := resolvedURL(t, frontDoorCS, WithBackoff(broker.Backoff{Initial: 100 * time.Millisecond, Max: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	b := &Broker{cfg: c}
	for attempt := 1; attempt <= 40; attempt++ {
		step := min(100*time.Millisecond<<min(attempt-1, 20), time.Second)
		for range 200 {
			if d := b.backoff(attempt); d > time.Second || d < step/2 || d > step {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v] and at most Max 1s", attempt, d, step/2, step)
			}
		}
	}
}

// silentListener listens on loopback, accepts TCP connections and never
// answers; dialled reports whether anything connected.
func silentListener(t *testing.T) (addr string, dialled func() bool) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	n := 0
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			n++
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String(), func() bool {
		// A dial completes its TCP handshake before the dialler goes on,
		// so a connection made by a call that has returned is accepted
		// within moments.
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		return n > 0
	}
}

// Bad values of the common settings are refused by Open and OpenURL with
// an error naming the field, before anything is dialled.
func TestFrontDoorRefusesBadSettings(t *testing.T) {
	addr, dialled := silentListener(t)
	cs := "Endpoint=sb://" + addr + "/;SharedAccessKeyName=k;SharedAccessKey=c2VjcmV0;UseDevelopmentEmulator=true"
	cases := []struct {
		name  string
		set   func(*Config)
		opt   Option
		names string
	}{
		{"negative DialTimeout", func(c *Config) { c.DialTimeout = -time.Second }, WithDialTimeout(-time.Second), "DialTimeout -1s is negative"},
		{"negative MaxMessageSize", func(c *Config) { c.MaxMessageSize = -1 }, WithMaxMessageSize(-1), "MaxMessageSize -1 is negative"},
		{"negative Backoff.Initial", func(c *Config) { c.Backoff.Initial = -time.Second }, WithBackoff(broker.Backoff{Initial: -time.Second}), "Backoff.Initial"},
		{"negative Backoff.Max", func(c *Config) { c.Backoff.Max = -time.Second }, WithBackoff(broker.Backoff{Max: -time.Second}), "Backoff.Max"},
		{"Backoff.Max below Initial", func(c *Config) { c.Backoff = broker.Backoff{Initial: time.Minute, Max: time.Second} }, WithBackoff(broker.Backoff{Initial: time.Minute, Max: time.Second}), "Backoff.Max 1s is below Backoff.Initial 1m0s"},
	}
	quiet := slog.New(slog.DiscardHandler)
	for _, c := range cases {
		opens := map[string]func(ctx context.Context) error{
			"Open": func(ctx context.Context) error {
				cfg := Config{Namespace: addr, KeyName: "k", Key: "c2VjcmV0", UseDevelopmentEmulator: true, Logger: quiet}
				c.set(&cfg)
				b, err := Open(ctx, cfg)
				if b != nil {
					_ = b.Close(ctx)
				}
				return err
			},
			"OpenURL": func(ctx context.Context) error {
				b, err := OpenURL(ctx, cs, WithLogger(quiet), c.opt)
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
				t.Fatalf("%s %s: the namespace was dialled before the setting was refused", how, c.name)
			}
		}
	}
}

// DialTimeout bounds the connection attempt itself, under the instance's
// lifetime: against a peer that accepts TCP and never answers, Open fails
// after about DialTimeout although the caller's ctx allows much longer
// (before, the attempt ran into the 30 s setup bound, or the caller's
// deadline).
func TestDialTimeoutBoundsTheAttempt(t *testing.T) {
	addr, dialled := silentListener(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	b, err := Open(ctx, Config{Namespace: addr, KeyName: "k", Key: "c2VjcmV0", UseDevelopmentEmulator: true,
		DialTimeout: 300 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	elapsed := time.Since(start)
	if err == nil {
		_ = b.Close(ctx)
		t.Fatal("Open against a silent peer succeeded")
	}
	if !dialled() {
		t.Fatal("the peer was never dialled: the test proves nothing")
	}
	if ctx.Err() != nil || elapsed > 10*time.Second {
		t.Fatalf("Open took %v (caller's ctx: %v): DialTimeout 300ms did not bound the attempt; err %v", elapsed, ctx.Err(), err)
	}
	// The instance's own bound ran out, not the caller's ctx: the error
	// must say so, and must not read as the caller's deadline (which
	// retry loops and callers take as "stop now").
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

// Opener is registry.Opener's shape and hands the registry's name and
// logger to the instance.
func TestOpenerPassesNameAndLogger(t *testing.T) {
	var _ func(context.Context, string, driver.OpenConfig) (broker.Broker, error) = Opener
	e := startFrontDoorEmulator(t)
	var mu sync.Mutex
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, target := range []string{e.ConnectionString(""), "eventhubs://" + e.KeyName() + ":" + url.QueryEscape(e.Key()) + "@" + e.Addr() + "?emulator=true"} {
		mu.Lock()
		logs.Reset()
		mu.Unlock()
		b, err := Opener(ctx, target, driver.OpenConfig{Name: "from-registry", Logger: logger})
		if err != nil {
			t.Fatalf("Opener(%s…): %v", target[:9], err)
		}
		if got := b.(*Broker).cfg.Name; got != "from-registry" {
			t.Errorf("name %q, want the registry's", got)
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
	}
	if bad, err := Opener(ctx, "Endpoint=sb://ns/", driver.OpenConfig{}); !errors.Is(err, broker.ErrInvalidOption) || bad != nil {
		t.Errorf("Opener(no key) = %v, %v; want a nil Broker and ErrInvalidOption", bad, err)
	}
}

func startFrontDoorEmulator(t *testing.T) *emulator.Emulator {
	t.Helper()
	e, err := emulator.New(emulator.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.Close(ctx)
	})
	return e
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
