package registry_test

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs/emulator"
	"github.com/isobroker/broker/registry"
)

// Event Hubs targets, both forms, open real brokers against the emulator,
// and the same target twice gives two connections.
func TestOpenEventHubsTargets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	emu, err := emulator.New(emulator.Config{
		Hubs:   []emulator.HubConfig{{Name: "orders", Partitions: 2}},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer emu.Close(context.Background())

	r := registry.New(registry.WithLogger(slog.New(slog.DiscardHandler)))
	defer r.CloseAll(context.Background())
	connStr := emu.ConnectionString("orders")
	urlForm := "eventhubs://" + url.PathEscape(emu.KeyName()) + ":" + url.QueryEscape(emu.Key()) + "@" + emu.Addr() + "/orders?emulator=true"
	got := make(chan string, 4)
	for i, target := range []string{connStr, connStr, urlForm} {
		b, err := r.OpenNamed(ctx, []string{"a", "b", "c"}[i], target)
		if err != nil {
			t.Fatalf("open %s: %v", []string{"connection string", "connection string again", "URL form"}[i], err)
		}
		if i == 0 {
			if _, err := b.Subscribe(ctx, "orders", func(_ context.Context, d *broker.Delivery) error {
				got <- d.ID
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Publish(ctx, "orders", &broker.Message{ID: []string{"a", "b", "c"}[i]}); err != nil {
			t.Fatalf("publish through instance %d: %v", i, err)
		}
	}
	for range 3 {
		select {
		case <-got:
		case <-ctx.Done():
			t.Fatal("deliveries missing")
		}
	}
	if n := emu.ConnectionCount(); n != 3 {
		t.Errorf("emulator sees %d connections for three instances, want 3", n)
	}
}

// An unreachable RabbitMQ fails fast with a retryable error that hides the
// password.
func TestOpenRabbitUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r := registry.New(registry.WithLogger(slog.New(slog.DiscardHandler)))
	_, err := r.Open(ctx, "amqp://guest:hunter2@127.0.0.1:1/")
	if err == nil {
		t.Fatal("opening an unreachable server succeeded")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error leaks the password: %v", err)
	}
	if !errors.Is(err, broker.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error = %v, want ErrUnavailable", err)
	}
}
