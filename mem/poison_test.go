package mem_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/mem"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A handler error that quotes a URL with a password reaches neither the
// logs of its nacks and dead-lettering nor the dead-letter header.
func TestPoisonLogsMaskSecrets(t *testing.T) {
	var logs lockedBuffer
	b, err := mem.New(mem.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	ctx := context.Background()
	dead := make(chan *broker.Delivery, 1)
	if _, err := b.Subscribe(ctx, broker.DeadLetterTopic("orders"), func(_ context.Context, d *broker.Delivery) error {
		dead <- d
		return nil
	}, broker.Group(broker.DeadLetterGroup)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(ctx, "orders", func(context.Context, *broker.Delivery) error {
		return errors.New("dial amqp://app:hunter2-secret@db:5672/: refused")
	}, broker.Group("billing"), broker.MaxDeliveries(2)); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, "orders", &broker.Message{ID: "o-1"}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-dead:
		if strings.Contains(d.Headers[broker.HeaderLastError], "hunter2") {
			t.Errorf("dead-letter header shows the password: %q", d.Headers[broker.HeaderLastError])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not dead-lettered")
	}
	out := logs.String()
	if !strings.Contains(out, "message dead-lettered") || !strings.Contains(out, "handler nacked") {
		t.Fatalf("expected nack and dead-letter log lines, got:\n%s", out)
	}
	if strings.Contains(out, "hunter2") {
		t.Errorf("logs show the password:\n%s", out)
	}
}
