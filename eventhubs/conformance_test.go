package eventhubs_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
)

func TestConformance(t *testing.T) {
	e := startEmulator(t, emulator.Config{AutoCreate: true})
	brokertest.Run(t, brokertest.Harness{
		Open: func(ctx context.Context) (broker.Broker, error) {
			return eventhubs.OpenURL(ctx, e.ConnectionString(""), eventhubs.WithLogger(slog.New(slog.DiscardHandler)))
		},
		NewTopic: func(t testing.TB) string { return newHub(t, e, 4) },
	})
}
