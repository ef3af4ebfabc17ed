package rabbit_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/rabbit"
)

// Benchmarks compare the adapter with raw amqp091-go on the same node in
// the same run and report the ratio (ours / raw throughput; > 1 is
// faster). ns/op and allocs/op cover the adapter's part only: the raw runs
// happen with the timer stopped.

// benchQueue declares topic's exchange and a durable queue "<topic>.bench"
// bound with "#", as a group subscription "bench" would, and returns a raw
// connection and channel for the raw side of the benchmark.
func benchQueue(b *testing.B, url, topic string) (*amqp.Connection, *amqp.Channel, string) {
	b.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	queue := topic + ".bench"
	if err := ch.ExchangeDeclare(topic, "topic", true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	if err := ch.QueueBind(queue, "#", topic, false, nil); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _, _ = ch.QueueDelete(queue, false, false, false) })
	return conn, ch, queue
}

// rawPublish publishes n persistent messages with pipelined confirms on
// one channel (up to window unconfirmed) and returns the time taken.
func rawPublish(b *testing.B, conn *amqp.Connection, topic string, body []byte, n, window int) time.Duration {
	b.Helper()
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pending := make([]*amqp.DeferredConfirmation, 0, window)
	begin := time.Now()
	for i := range n {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, topic, "k", true, false, amqp.Publishing{
			DeliveryMode: amqp.Persistent, MessageId: fmt.Sprint(i), Body: body,
		})
		if err != nil {
			b.Fatal(err)
		}
		pending = append(pending, dc)
		if len(pending) == window {
			if ok, err := pending[0].WaitContext(ctx); !ok || err != nil {
				b.Fatalf("raw confirm: %v %v", ok, err)
			}
			pending = pending[1:]
		}
	}
	for _, dc := range pending {
		if ok, err := dc.WaitContext(ctx); !ok || err != nil {
			b.Fatalf("raw confirm: %v %v", ok, err)
		}
	}
	return time.Since(begin)
}

func purge(b *testing.B, ch *amqp.Channel, queue string) {
	b.Helper()
	if _, err := ch.QueuePurge(queue, false); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPublishConfirmed: 1 KiB persistent messages, confirmed, vs raw
// amqp091-go with pipelined confirms on one channel, allowed as many
// unconfirmed messages in flight as the adapter's callers can have:
//   - concurrent-16: 16 goroutines, one message per Publish call (raw window 16);
//   - concurrent-64: 64 goroutines (raw window 64);
//   - concurrent-512: 512 goroutines (raw window 512);
//   - batch-100: 4 goroutines publishing 100 messages per call (raw window 400).
func BenchmarkPublishConfirmed(b *testing.B) {
	url := shared.URL(b)
	body := make([]byte, 1024)
	run := func(b *testing.B, workers, perCall int) {
		topic := brokertest.RandomName("benchpub")
		conn, ch, queue := benchQueue(b, url, topic)
		br := open(b, url)
		ctx := context.Background()
		// Warm up: declare the exchange on the adapter's connection.
		if err := br.Publish(ctx, topic, &broker.Message{Body: body}); err != nil {
			b.Fatal(err)
		}
		n := max(b.N, workers*perCall)

		// Raw and adapter runs alternate in rounds, so that both see the
		// same background load on a shared machine.
		const rounds = 4
		var rawDur, oursDur time.Duration
		sent := 0
		for r := range rounds {
			chunk := n / rounds
			if r == rounds-1 {
				chunk = n - chunk*(rounds-1)
			}
			b.StopTimer()
			// The raw side gets as many unconfirmed messages in flight as
			// the adapter's callers can have (workers × perCall).
			rawDur += rawPublish(b, conn, topic, body, chunk, workers*perCall)
			purge(b, ch, queue)
			b.StartTimer()

			begin := time.Now()
			var next atomic.Int64
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					msgs := make([]*broker.Message, perCall)
					for i := range msgs {
						msgs[i] = &broker.Message{ID: "m", Key: "k", Body: body}
					}
					for next.Add(int64(perCall)) <= int64(chunk) {
						if err := br.Publish(ctx, topic, msgs...); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			oursDur += time.Since(begin)
			sent += (chunk / perCall) * perCall
			b.StopTimer()
			purge(b, ch, queue)
		}
		raw := float64(n) / rawDur.Seconds()
		ours := float64(sent) / oursDur.Seconds()
		b.ReportMetric(raw, "raw-msg/s")
		b.ReportMetric(ours, "msg/s")
		b.ReportMetric(ours/raw, "ratio")
	}
	b.Run("concurrent-16", func(b *testing.B) { b.ReportAllocs(); run(b, 16, 1) })
	b.Run("concurrent-64", func(b *testing.B) { b.ReportAllocs(); run(b, 64, 1) })
	b.Run("concurrent-512", func(b *testing.B) { b.ReportAllocs(); run(b, 512, 1) })
	b.Run("batch-100", func(b *testing.B) { b.ReportAllocs(); run(b, 4, 100) })
}

// BenchmarkConsume: consume (and ack) b.N queued 1 KiB messages with
// prefetch 100 vs a raw amqp091-go consumer with the same prefetch.
func BenchmarkConsume(b *testing.B) {
	url := shared.URL(b)
	b.ReportAllocs()
	const prefetch = 100
	topic := brokertest.RandomName("benchcons")
	conn, ch, queue := benchQueue(b, url, topic)
	body := make([]byte, 1024)
	n := max(b.N, 1000)

	b.StopTimer()
	rawPublish(b, conn, topic, body, n, 1000)
	rawDur := func() time.Duration {
		c, err := conn.Channel()
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if err := c.Qos(prefetch, 0, false); err != nil {
			b.Fatal(err)
		}
		ds, err := c.Consume(queue, "raw", false, false, false, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		begin := time.Now()
		for i := 0; i < n; i++ {
			d := <-ds
			if err := d.Ack(false); err != nil {
				b.Fatal(err)
			}
		}
		took := time.Since(begin)
		if err := c.Cancel("raw", false); err != nil {
			b.Fatal(err)
		}
		return took
	}()
	purge(b, ch, queue)
	rawPublish(b, conn, topic, body, n, 1000)
	br := open(b, url)
	runtime.GC()
	b.StartTimer()

	var got atomic.Int64
	done := make(chan struct{})
	begin := time.Now()
	sub, err := br.Subscribe(context.Background(), topic, func(context.Context, *broker.Delivery) error {
		if got.Add(1) == int64(n) {
			close(done)
		}
		return nil
	}, broker.Group("bench"), broker.Prefetch(prefetch))
	if err != nil {
		b.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("consumed %d of %d", got.Load(), n)
	}
	oursDur := time.Since(begin)
	b.StopTimer()
	_ = sub.Close(context.Background())
	raw := float64(n) / rawDur.Seconds()
	ours := float64(n) / oursDur.Seconds()
	b.ReportMetric(raw, "raw-msg/s")
	b.ReportMetric(ours, "msg/s")
	b.ReportMetric(ours/raw, "ratio")
}

// BenchmarkRecovery: time from a forced cut of the connection (the fault
// proxy drops it) to the next confirmed publish, vs a fresh
// dial-to-first-confirm through the same proxy. The first reconnect
// attempt is immediate (the backoff applies between rounds), so the target
// is recovery ≤ 3 × fresh.
func BenchmarkRecovery(b *testing.B) {
	url := shared.URL(b)
	px := newFaultProxy(b, url)
	topic := brokertest.RandomName("benchrec")
	benchQueue(b, url, topic)
	ctx := context.Background()
	msg := &broker.Message{ID: "r", Body: make([]byte, 1024)}

	b.StopTimer()
	var fresh time.Duration
	const freshRuns = 10
	for range freshRuns {
		begin := time.Now()
		br, err := rabbit.OpenURL(ctx, px.url, rabbit.WithLogger(testLogger()))
		if err != nil {
			b.Fatal(err)
		}
		if err := br.Publish(ctx, topic, msg); err != nil {
			b.Fatal(err)
		}
		fresh += time.Since(begin)
		_ = br.Close(ctx)
	}
	fresh /= freshRuns

	br := open(b, px.url, rabbit.WithBackoff(broker.Backoff{Initial: 10 * time.Millisecond}))
	if err := br.Publish(ctx, topic, msg); err != nil {
		b.Fatal(err)
	}
	// Each recovery takes milliseconds; more than 200 samples add nothing
	// but minutes (ns/op then covers the sampled recoveries only).
	iters := min(b.N, 200)
	var total time.Duration
	for range iters {
		b.StartTimer()
		begin := time.Now()
		px.p.Stop()
		if err := px.p.Start(); err != nil {
			b.Fatal(err)
		}
		for {
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := br.Publish(pctx, topic, msg)
			cancel()
			if err == nil {
				break
			}
			if !errors.Is(err, broker.ErrUnavailable) {
				b.Fatal(err)
			}
		}
		total += time.Since(begin)
		b.StopTimer()
	}
	rec := total / time.Duration(iters)
	b.ReportMetric(float64(fresh.Microseconds())/1000, "fresh-ms")
	b.ReportMetric(float64(rec.Microseconds())/1000, "recovery-ms")
	b.ReportMetric(float64(rec)/float64(fresh), "ratio")
}
