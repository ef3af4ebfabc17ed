package registry_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobroker/broker/driver"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
	"github.com/isobroker/broker/rabbit"
	"github.com/isobroker/broker/registry"
)

// Every adapter's Opener is a registry.Opener as it is, and the registry's
// OpenConfig is the driver's: this file does not compile otherwise.
var (
	_ registry.Opener     = rabbit.Opener
	_ registry.Opener     = eventhubs.Opener
	_ driver.OpenConfig   = registry.OpenConfig{}
	_ registry.OpenConfig = driver.OpenConfig{}
)

// An adapter's Opener registers under a scheme of the application's own
// and receives the registry's name and logger.
func TestRegisterAdapterOpener(t *testing.T) {
	e, err := emulator.New(emulator.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = e.Close(ctx) }()

	var mu sync.Mutex
	var logs bytes.Buffer
	w := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return logs.Write(p) })
	r := registry.New(registry.WithLogger(slog.New(slog.NewTextHandler(w, nil))))
	if err := r.Register("amqp-again", rabbit.Opener); err != nil {
		t.Fatal(err)
	}
	if err := r.Register("eventhubs", eventhubs.Opener); err != nil {
		t.Fatal(err)
	}
	target := "eventhubs://" + e.KeyName() + ":" + url.QueryEscape(e.Key()) + "@" + e.Addr() + "?emulator=true"
	b, err := r.OpenNamed(ctx, "orders", target)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(ctx, "orders"); err != nil {
		t.Errorf("close: %v", err)
	}
	if _, ok := b.(*eventhubs.Broker); !ok {
		t.Errorf("opened a %T, want *eventhubs.Broker", b)
	}
	mu.Lock()
	text := logs.String()
	mu.Unlock()
	if !strings.Contains(text, "name=orders") {
		t.Errorf("the instance did not log through the registry's logger under its name:\n%s", text)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
