package eventhubs_test

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
)

// Benchmarks compare the adapter with the official SDK against the same
// emulator in the same run. Run them with, for example:
//
//	go test -run '^$' -bench . -benchtime 2000x ./eventhubs/

const (
	benchEventSize = 1024
	benchBatch     = 100
)

func benchEmulator(b *testing.B) *emulator.Emulator {
	return startEmulator(b, emulator.Config{RetentionCount: 200000, Logger: slog.New(slog.DiscardHandler)})
}

func benchBroker(b *testing.B, e *emulator.Emulator) *eventhubs.Broker {
	br, err := eventhubs.OpenURL(ctxT(b, 10*time.Second), e.ConnectionString(""), eventhubs.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = br.Close(context.Background()) })
	return br
}

// BenchmarkSend: one op is one batch of 100 events of 1 KiB.
func BenchmarkSend(b *testing.B) {
	e := benchEmulator(b)
	body := make([]byte, benchEventSize)
	b.Run("isobroker", func(b *testing.B) {
		hub := newHub(b, e, 4)
		br := benchBroker(b, e)
		ms := make([]*broker.Message, benchBatch)
		for i := range ms {
			ms[i] = &broker.Message{Body: body}
		}
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
	b.Run("azeventhubs", func(b *testing.B) {
		hub := newHub(b, e, 4)
		p, err := azeventhubs.NewProducerClientFromConnectionString(e.ConnectionString(hub), "", nil)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close(context.Background())
		ctx := context.Background()
		send := func() {
			batch, err := p.NewEventDataBatch(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			for range benchBatch {
				if err := batch.AddEventData(&azeventhubs.EventData{Body: body}, nil); err != nil {
					b.Fatal(err)
				}
			}
			if err := p.SendEventDataBatch(ctx, batch, nil); err != nil {
				b.Fatal(err)
			}
		}
		send()
		b.SetBytes(benchBatch * benchEventSize)
		b.ResetTimer()
		for range b.N {
			send()
		}
		b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "events/s")
	})
}

// fill stores n events of 1 KiB in partition 0 of a new hub.
func fill(b *testing.B, e *emulator.Emulator, br *eventhubs.Broker, n int) string {
	hub := newHub(b, e, 1)
	body := make([]byte, benchEventSize)
	ms := make([]*broker.Message, 0, 500)
	for i := 0; i < n; i += len(ms) {
		ms = ms[:0]
		for j := i; j < n && len(ms) < cap(ms); j++ {
			ms = append(ms, &broker.Message{ID: fmt.Sprint(j), Body: body})
		}
		if err := br.Publish(context.Background(), hub, ms...); err != nil {
			b.Fatal(err)
		}
	}
	return hub
}

// BenchmarkReceive: one op is one event of 1 KiB read from a partition,
// prefetch 300 for both clients.
func BenchmarkReceive(b *testing.B) {
	e := benchEmulator(b)
	b.Run("isobroker", func(b *testing.B) {
		br := benchBroker(b, e)
		hub := fill(b, e, br, b.N)
		runtime.GC()
		var n atomic.Int64
		done := make(chan struct{})
		b.SetBytes(benchEventSize)
		b.ResetTimer()
		sub, err := br.Subscribe(context.Background(), hub, func(context.Context, *broker.Delivery) error {
			if n.Add(1) == int64(b.N) {
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
	b.Run("azeventhubs", func(b *testing.B) {
		br := benchBroker(b, e)
		hub := fill(b, e, br, b.N)
		runtime.GC()
		b.SetBytes(benchEventSize)
		b.ResetTimer()
		c, err := azeventhubs.NewConsumerClientFromConnectionString(e.ConnectionString(hub), "", azeventhubs.DefaultConsumerGroup, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close(context.Background())
		earliest := true
		pc, err := c.NewPartitionClient("0", &azeventhubs.PartitionClientOptions{StartPosition: azeventhubs.StartPosition{Earliest: &earliest}, Prefetch: 300})
		if err != nil {
			b.Fatal(err)
		}
		defer pc.Close(context.Background())
		for got := 0; got < b.N; {
			evs, err := pc.ReceiveEvents(context.Background(), min(300, b.N-got), nil)
			if err != nil {
				b.Fatal(err)
			}
			got += len(evs)
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
}

// BenchmarkRecovery: "fresh" is Open plus the first accepted send on a new
// broker; "after-forced-close" is the time from the service closing the
// connection with amqp:connection:forced (as on idle) to the next
// accepted send, which rebuilds connection → CBS → session → link.
func BenchmarkRecovery(b *testing.B) {
	e := benchEmulator(b)
	hub := newHub(b, e, 1)
	quiet := eventhubs.WithLogger(slog.New(slog.DiscardHandler))
	m := &broker.Message{Body: make([]byte, benchEventSize)}
	b.Run("fresh", func(b *testing.B) {
		for range b.N {
			br, err := eventhubs.OpenURL(context.Background(), e.ConnectionString(""), quiet)
			if err != nil {
				b.Fatal(err)
			}
			if err := br.Publish(context.Background(), hub, m); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			_ = br.Close(context.Background())
			b.StartTimer()
		}
	})
	b.Run("after-forced-close", func(b *testing.B) {
		br := benchBroker(b, e)
		if err := br.Publish(context.Background(), hub, m); err != nil {
			b.Fatal(err)
		}
		for range b.N {
			b.StopTimer()
			e.Faults().CloseConnections("")
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
