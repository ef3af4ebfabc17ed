package emulator_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/Azure/go-amqp"
	"go.uber.org/goleak"

	"github.com/isobroker/broker/eventhubs/emulator"
)

// clientGoroutines are client-side goroutines (go-amqp, the Azure SDK) that
// end asynchronously after their Close returns; they are not the
// emulator's.
var clientGoroutines = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/Azure/go-amqp.(*Conn).connReader"),
	goleak.IgnoreAnyFunction("github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2/internal.(*Namespace).startNegotiateClaimRenewer.func3"),
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, clientGoroutines...)
}

// logBuffer collects log output so tests can grep it and print it on failure.
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

// startEmulator starts an emulator for one test. Cleanup closes it and
// checks that no goroutine started during the test is left over.
func startEmulator(t *testing.T, cfg emulator.Config) (*emulator.Emulator, *logBuffer) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	logs := &logBuffer{}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
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
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
		if t.Failed() {
			t.Logf("emulator log:\n%s", logs.String())
		}
		goleak.VerifyNone(t, append(clientGoroutines, ignore)...)
	})
	return e, logs
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// dial opens a go-amqp connection with SASL ANONYMOUS.
func dial(t *testing.T, e *emulator.Emulator, opts *amqp.ConnOptions) *amqp.Conn {
	t.Helper()
	if opts == nil {
		opts = &amqp.ConnOptions{}
	}
	if opts.SASLType == nil {
		opts.SASLType = amqp.SASLTypeAnonymous()
	}
	c, err := amqp.Dial(ctxT(t, 5*time.Second), "amqp://"+e.Addr(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func session(t *testing.T, c *amqp.Conn) *amqp.Session {
	t.Helper()
	s, err := c.NewSession(ctxT(t, 5*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func remoteCond(err error) string {
	var le *amqp.LinkError
	if errors.As(err, &le) && le.RemoteErr != nil {
		return string(le.RemoteErr.Condition)
	}
	var ce *amqp.ConnError
	if errors.As(err, &ce) && ce.RemoteErr != nil {
		return string(ce.RemoteErr.Condition)
	}
	var se *amqp.SessionError
	if errors.As(err, &se) && se.RemoteErr != nil {
		return string(se.RemoteErr.Condition)
	}
	var ae *amqp.Error
	if errors.As(err, &ae) {
		return string(ae.Condition)
	}
	return ""
}
