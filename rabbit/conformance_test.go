package rabbit_test

import (
	"context"
	"testing"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/rabbit"
)

// The conformance runs use the default Config: mandatory publishes, so
// an unroutable message would be an error (see TestUnroutable).
func TestConformance(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t)
	brokertest.Run(t, brokertest.Harness{
		Open: func(ctx context.Context) (broker.Broker, error) {
			return rabbit.OpenURL(ctx, url, rabbit.WithLogger(testLogger()), rabbit.WithName("conformance"))
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
				rabbit.WithConfig(func(c *rabbit.Config) { c.SingleConnection = true }))
		},
	})
}
