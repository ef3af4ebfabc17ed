package broker_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/internal/rabbitnode"
	"github.com/isobroker/broker/rabbit"
)

// sharedRabbit is the RabbitMQ node this test binary's rows share (or
// RABBITMQ_URL when set); TestMain stops it.
var sharedRabbit = rabbitnode.NewShared(rabbitnode.Options{Name: "isolation"})

// rabbitIsolationBackend runs the isolation suite against the RabbitMQ
// adapter and a real node: every instance dials its own connections to the
// same node, so the instances share a server and nothing else.
func rabbitIsolationBackend(t *testing.T) isolationBackend {
	t.Helper()
	url := sharedRabbit.URL(t)
	quiet := slog.New(slog.DiscardHandler)
	return isolationBackend{
		name: "rabbit",
		open: func(ctx context.Context) (broker.Broker, error) {
			return rabbit.OpenURL(ctx, url, rabbit.WithLogger(quiet))
		},
		newTopic: func(testing.TB) string { return brokertest.RandomName("iso") },
	}
}
