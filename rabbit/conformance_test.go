package rabbit_test

import (
	"context"
	"net/url"
	"testing"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/internal/tcpproxy"
	"github.com/isobroker/broker/rabbit"
)

// The conformance runs use the default Config: mandatory publishes, so
// an unroutable message would be an error (see TestUnroutable).
func TestConformance(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t)
	brokertest.Run(t, conformanceHarness(t, url, rabbit.WithName("conformance")))
}

func TestConformanceSingleConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("short: the two-connection layout is covered by TestConformance")
	}
	url := shared.URL(t)
	leakCheck(t)
	brokertest.Run(t, conformanceHarness(t, url, rabbit.WithName("conformance-single"),
		rabbit.WithConfig(func(c *rabbit.Config) { c.SingleConnection = true })))
}

// conformanceHarness opens every instance on nodeURL with opts, through a
// proxy of its own (internal/tcpproxy), so that the harness can sever one
// instance's connections and no other's. OpenBadCredentials uses the same
// node with a wrong password.
func conformanceHarness(t *testing.T, nodeURL string, opts ...rabbit.Option) brokertest.Harness {
	t.Helper()
	u, err := url.Parse(nodeURL)
	if err != nil {
		t.Fatalf("parse %s: %v", nodeURL, err)
	}
	opts = append([]rabbit.Option{rabbit.WithLogger(testLogger())}, opts...)
	bad := *u
	bad.User = url.UserPassword(u.User.Username(), "not-the-password")
	open := func(ctx context.Context, more ...rabbit.Option) (broker.Broker, error) {
		px, err := tcpproxy.Start(u.Host)
		if err != nil {
			return nil, err
		}
		via := *u
		via.Host = px.Addr()
		b, err := rabbit.OpenURL(ctx, via.String(), append(append([]rabbit.Option(nil), opts...), more...)...)
		if err != nil {
			px.Close()
			return nil, err
		}
		return &tcpproxy.Proxied{Broker: b, Proxy: px}, nil
	}
	return brokertest.Harness{
		Open: func(ctx context.Context) (broker.Broker, error) { return open(ctx) },
		OpenTelemetry: func(ctx context.Context, tel broker.Telemetry) (broker.Broker, error) {
			return open(ctx, rabbit.WithTelemetry(tel))
		},
		System: rabbit.System,
		OpenBadCredentials: func(ctx context.Context) (broker.Broker, error) {
			b, err := rabbit.OpenURL(ctx, bad.String(), opts...)
			if err != nil {
				return nil, err
			}
			return b, nil
		},
		Sever: tcpproxy.Sever,
	}
}

// TestSettlementClassic runs the settlement checks on classic group
// queues, where the subscription counts failed deliveries itself.
func TestSettlementClassic(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t)
	brokertest.RunSettlement(t, withQueueType(conformanceHarness(t, url, rabbit.WithName("settlement-classic")), rabbit.Classic))
}

// withQueueType makes every Subscribe of h's instances ask for kind.
func withQueueType(h brokertest.Harness, kind rabbit.QueueType) brokertest.Harness {
	open := h.Open
	h.Open = func(ctx context.Context) (broker.Broker, error) {
		b, err := open(ctx)
		if err != nil {
			return nil, err
		}
		return queueTyped{Broker: b, kind: kind}, nil
	}
	return h
}

// queueTyped adds a QueueType driver option to every group Subscribe.
type queueTyped struct {
	broker.Broker
	kind rabbit.QueueType
}

func (q queueTyped) Subscribe(ctx context.Context, topic string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscription, error) {
	return q.Broker.Subscribe(ctx, topic, h, append([]broker.SubscribeOption{broker.WithDriverOption(q.kind)}, opts...)...)
}
