package eventhubs_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
	"github.com/isobroker/broker/internal/tcpproxy"
)

// TestConformance opens every instance through a proxy of its own
// (internal/tcpproxy, via WithCustomEndpoint), so that the harness can
// sever one instance's connections and no other's.
func TestConformance(t *testing.T) {
	e := startEmulator(t, emulator.Config{AutoCreate: true})
	quiet := eventhubs.WithLogger(slog.New(slog.DiscardHandler))
	// Refused credentials: the emulator's connection string with a wrong
	// key. eventhubs.Open checks them at once when the connection string
	// names a hub, and on first use when it does not; the attempts
	// alternate, so the suite sees both.
	const wrongKey = "V1JPTkdXUk9OR1dST05HV1JPTkdXUk9ORw=="
	badHub := newHub(t, e, 1)
	var attempts atomic.Int64
	// asBroker keeps a nil *Broker from becoming a non-nil interface.
	asBroker := func(b *eventhubs.Broker, err error) (broker.Broker, error) {
		if err != nil {
			return nil, err
		}
		return b, nil
	}
	open := func(ctx context.Context, more ...eventhubs.Option) (broker.Broker, error) {
		px, err := tcpproxy.Start(e.Addr())
		if err != nil {
			return nil, err
		}
		opts := append([]eventhubs.Option{quiet, eventhubs.WithCustomEndpoint(px.Addr())}, more...)
		b, err := eventhubs.OpenURL(ctx, e.ConnectionString(""), opts...)
		if err != nil {
			px.Close()
			return nil, err
		}
		return &tcpproxy.Proxied{Broker: b, Proxy: px}, nil
	}
	brokertest.Run(t, brokertest.Harness{
		Open: func(ctx context.Context) (broker.Broker, error) { return open(ctx) },
		OpenTelemetry: func(ctx context.Context, tel broker.Telemetry) (broker.Broker, error) {
			return open(ctx, eventhubs.WithTelemetry(tel))
		},
		System: eventhubs.System,
		// Every hub gets the kept consumer group, so that any of them can
		// be a dead-letter hub (MaxDeliveriesDeadLetters reads one made by
		// NewTopic); EnsureTopic makes a topic's default dead-letter hub.
		// The adapter creates neither: an operator does, as here.
		NewTopic: func(t testing.TB) string {
			name := brokertest.RandomName("hub")
			if err := e.AddHub(name, 4, broker.DeadLetterGroup); err != nil {
				t.Fatal(err)
			}
			return name
		},
		EnsureTopic: func(t testing.TB, name string) {
			if err := e.AddHub(name, 2, broker.DeadLetterGroup); err != nil && !errors.Is(err, emulator.ErrHubExists) {
				t.Fatal(err)
			}
		},
		// Default poison handling takes about 14 s here (20 deliveries,
		// the handler loop's backoff capped at 1 s); room for -race on a
		// loaded machine.
		Timeout: time.Minute,
		OpenBadCredentials: func(ctx context.Context) (broker.Broker, error) {
			hub := ""
			if attempts.Add(1)%2 == 0 {
				hub = badHub
			}
			cs := strings.Replace(e.ConnectionString(hub), "SharedAccessKey="+e.Key(), "SharedAccessKey="+wrongKey, 1)
			return asBroker(eventhubs.OpenURL(ctx, cs, quiet))
		},
		Sever: tcpproxy.Sever,
	})
}
