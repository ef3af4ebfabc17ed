package eventhubs_test

import (
	"context"
	"log/slog"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
)

// benchNet is one network of the network benchmarks: the emulator that
// serves it and how a broker reaches it.
type benchNet struct {
	name string
	e    *emulator.Emulator
	open func(b *testing.B) *eventhubs.Broker
}

// benchNetworks serves tcp (UseDevelopmentEmulator), tls, ws and wss from
// two emulators, so that their costs compare in one run:
//
//	go test -run '^$' -bench 'Network' -benchtime 2000x ./eventhubs/
func benchNetworks(b *testing.B) []benchNet {
	quietEmu := slog.New(slog.DiscardHandler)
	plain := startEmulator(b, emulator.Config{RetentionCount: 200000, WebSocketAddr: "127.0.0.1:0", Logger: quietEmu})
	var hs handshakes
	secure, ca := tlsEmulator(b, emulator.Config{RetentionCount: 200000, WebSocketAddr: "127.0.0.1:0", Logger: quietEmu}, &hs, "localhost")
	open := func(cs string, opts ...eventhubs.Option) func(b *testing.B) *eventhubs.Broker {
		return func(b *testing.B) *eventhubs.Broker {
			br, err := eventhubs.OpenURL(ctxT(b, 10*time.Second), cs, append(opts, eventhubs.WithLogger(slog.New(slog.DiscardHandler)))...)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = br.Close(context.Background()) })
			return br
		}
	}
	tlsOpt := eventhubs.WithTLSConfig(ca.clientTLS())
	return []benchNet{
		{"tcp", plain, open(connString(plain, plain.Addr(), "", true))},
		{"tls", secure, open(connString(secure, "localhost:"+portOf(b, secure.Addr()), "", false), tlsOpt)},
		{"ws", plain, open(connString(plain, plain.WebSocketAddr(), "", true), eventhubs.WithWebSockets())},
		{"wss", secure, open(connString(secure, "localhost:"+portOf(b, secure.WebSocketAddr()), "", false), tlsOpt, eventhubs.WithWebSockets())},
	}
}

// BenchmarkNetworkSend: one op is one batch of 100 events of 1 KiB.
func BenchmarkNetworkSend(b *testing.B) {
	body := make([]byte, benchEventSize)
	ms := make([]*broker.Message, benchBatch)
	for i := range ms {
		ms[i] = &broker.Message{Body: body}
	}
	for _, n := range benchNetworks(b) {
		b.Run(n.name, func(b *testing.B) {
			br := n.open(b)
			hub := newHub(b, n.e, 4)
			ctx := context.Background()
			if err := br.Publish(ctx, hub, ms...); err != nil { // attach outside the timer
				b.Fatal(err)
			}
			b.SetBytes(benchBatch * benchEventSize)
			b.ResetTimer()
			for range b.N {
				if err := br.Publish(ctx, hub, ms...); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkNetworkReceive: one op is one event of 1 KiB read from one
// partition with prefetch 300.
func BenchmarkNetworkReceive(b *testing.B) {
	for _, n := range benchNetworks(b) {
		b.Run(n.name, func(b *testing.B) {
			br := n.open(b)
			hub := fill(b, n.e, br, b.N)
			runtime.GC()
			var got atomic.Int64
			done := make(chan struct{})
			b.SetBytes(benchEventSize)
			b.ResetTimer()
			sub, err := br.Subscribe(context.Background(), hub, func(context.Context, *broker.Delivery) error {
				if got.Add(1) == int64(b.N) {
					close(done)
				}
				return nil
			}, broker.StartAt(broker.Earliest()), broker.Prefetch(300))
			if err != nil {
				b.Fatal(err)
			}
			<-done
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			_ = sub.Close(context.Background())
		})
	}
}

// BenchmarkNetworkRecovery: one op is the time from a forced connection
// close (as the service's idle close) to the next accepted send, which
// rebuilds the connection — TCP, TLS and WebSocket handshakes included.
func BenchmarkNetworkRecovery(b *testing.B) {
	m := &broker.Message{Body: make([]byte, benchEventSize)}
	for _, n := range benchNetworks(b) {
		b.Run(n.name, func(b *testing.B) {
			br := n.open(b)
			hub := newHub(b, n.e, 1)
			if err := br.Publish(context.Background(), hub, m); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				n.e.Faults().CloseConnections("")
				for br.State() != broker.StateReconnecting {
					time.Sleep(100 * time.Microsecond)
				}
				b.StartTimer()
				if err := br.Publish(context.Background(), hub, m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
