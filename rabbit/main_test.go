package rabbit_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/isobroker/broker/internal/rabbitnode"
	"github.com/isobroker/broker/rabbit"
)

// shared is the node the tests of this binary share (or RABBITMQ_URL).
var shared *rabbitnode.Shared

func TestMain(m *testing.M) {
	shared = rabbitnode.NewShared(rabbitnode.Options{Name: "rabbittest"})
	code := m.Run()
	shared.Close()
	os.Exit(code)
}

// testLogger logs to stderr when RABBIT_TEST_LOG is set, else nowhere.
func testLogger() *slog.Logger {
	if os.Getenv("RABBIT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// logBuffer captures logs (debug and up) for tests that inspect them.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if os.Getenv("RABBIT_TEST_LOG") != "" {
		os.Stderr.Write(p)
	}
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// open opens a broker on url and closes it at the end of the test.
func open(t testing.TB, url string, opts ...rabbit.Option) *rabbit.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts = append([]rabbit.Option{rabbit.WithLogger(testLogger()), rabbit.WithName(t.Name())}, opts...)
	b, err := rabbit.OpenURL(ctx, url, opts...)
	if err != nil {
		t.Fatalf("open %s: %v", t.Name(), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	return b
}

// leakCheck verifies, after every cleanup registered later has run
// (brokers opened by the test included), that no goroutine started since
// is left.
func leakCheck(t *testing.T, opts ...goleak.Option) {
	t.Helper()
	opts = append(opts, goleak.IgnoreCurrent())
	t.Cleanup(func() { goleak.VerifyNone(t, opts...) })
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
