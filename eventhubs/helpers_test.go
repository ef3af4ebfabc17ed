package eventhubs_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The Azure SDK's claim renewer (interop tests and benchmarks)
		// ends asynchronously after its client closes.
		goleak.IgnoreAnyFunction("github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2/internal.(*Namespace).startNegotiateClaimRenewer.func3"),
	)
}

// logBuffer collects log output so tests can grep it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// count counts log lines containing every one of subs.
func (l *logBuffer) count(subs ...string) int {
	n := 0
	for _, line := range strings.Split(l.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			n++
		}
	}
	return n
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startEmulator starts an emulator for one test and closes it at cleanup.
func startEmulator(t testing.TB, cfg emulator.Config) *emulator.Emulator {
	t.Helper()
	logs := &logBuffer{}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	e, err := emulator.New(cfg)
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
		if err := e.Close(ctx); err != nil {
			t.Errorf("emulator close: %v", err)
		}
		if t.Failed() && testing.Verbose() {
			t.Logf("emulator log:\n%s", logs.String())
		}
	})
	return e
}

// newHub creates a fresh hub with n partitions.
func newHub(t testing.TB, e *emulator.Emulator, n int) string {
	t.Helper()
	name := brokertest.RandomName("hub")
	if err := e.AddHub(name, n); err != nil {
		t.Fatal(err)
	}
	return name
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// open opens a broker on e, logging into logs (if not nil), closed at
// cleanup.
func open(t testing.TB, e *emulator.Emulator, logs *logBuffer, opts ...eventhubs.Option) *eventhubs.Broker {
	t.Helper()
	if logs == nil {
		logs = &logBuffer{}
	}
	opts = append([]eventhubs.Option{eventhubs.WithLogger(logs.logger()), eventhubs.WithName(t.Name())}, opts...)
	b, err := eventhubs.OpenURL(ctxT(t, 10*time.Second), e.ConnectionString(""), opts...)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
		if t.Failed() && testing.Verbose() {
			t.Logf("broker log:\n%s", logs.String())
		}
	})
	return b
}
