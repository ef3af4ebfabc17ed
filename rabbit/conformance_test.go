package rabbit_test

import (
	"context"
	"testing"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/rabbit"
)

// The conformance runs use the default Config except AllowUnroutable:
// brokertest's SubscribeContextEnds publishes to a topic whose only
// subscription has ended and requires success, while by default this
// adapter publishes with mandatory and reports such a message as
// ErrUnroutable (see TestUnroutable).
func allowUnroutable(c *rabbit.Config) { c.AllowUnroutable = true }

func TestConformance(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t)
	brokertest.Run(t, brokertest.Harness{
		Open: func(ctx context.Context) (broker.Broker, error) {
			return rabbit.OpenURL(ctx, url, rabbit.WithLogger(testLogger()), rabbit.WithName("conformance"),
				rabbit.WithConfig(allowUnroutable))
		},
	})
}

func TestConformanceSingleConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("short: the two-connection layout is covered by TestConformance")
	}
	url := shared.URL(t)
	leakCheck(t)
	brokertest.Run(t, brokertest.Harness{
		Open: func(ctx context.Context) (broker.Broker, error) {
			return rabbit.OpenURL(ctx, url, rabbit.WithLogger(testLogger()), rabbit.WithName("conformance-single"),
				rabbit.WithConfig(allowUnroutable),
				rabbit.WithConfig(func(c *rabbit.Config) { c.SingleConnection = true }))
		},
	})
}
