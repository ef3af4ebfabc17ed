package broker_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
)

// eventhubsIsolationBackend runs the isolation suite against the Event
// Hubs adapter over real TCP to an in-process emulator, started here and
// stopped at the end of the test.
func eventhubsIsolationBackend(t *testing.T) isolationBackend {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	emu, err := emulator.New(emulator.Config{AutoCreate: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := emu.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := emu.Close(ctx); err != nil {
			t.Errorf("close emulator: %v", err)
		}
	})
	return isolationBackend{
		name: "eventhubs",
		open: func(ctx context.Context) (broker.Broker, error) {
			return eventhubs.Open(ctx, emu.ConnectionString(""), eventhubs.WithLogger(quiet))
		},
		newTopic: func(t testing.TB) string {
			name := brokertest.RandomName("iso")
			if err := emu.AddHub(name, 4); err != nil {
				t.Fatal(err)
			}
			return name
		},
	}
}
