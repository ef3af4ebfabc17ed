package rabbit_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/rabbit"
)

// TestPrefetchBoundsUnacked: with Prefetch(3) and more handler workers
// than that (Concurrency(8)), the node hands the subscription at most 3
// unacknowledged messages at a time, so at most 3 handlers run at once
// while 20 messages wait; once the handlers return, all 20 are delivered.
// With Prefetch(8) the same subscription runs 8 handlers at once, so the
// bound is the prefetch, not the worker count.
func TestPrefetchBoundsUnacked(t *testing.T) {
	url := shared.URL(t)
	for _, prefetch := range []int{3, 8} {
		t.Run(fmt.Sprintf("prefetch-%d", prefetch), func(t *testing.T) {
			b := open(t, url)
			topic := brokertest.RandomName("prefetch")
			var running, most atomic.Int32
			var handled atomic.Int32
			release := make(chan struct{})
			var releaseOnce sync.Once
			t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
			started := make(chan struct{}, 100)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			sub, err := b.Subscribe(ctx, topic, func(ctx context.Context, d *broker.Delivery) error {
				n := running.Add(1)
				for {
					m := most.Load()
					if n <= m || most.CompareAndSwap(m, n) {
						break
					}
				}
				started <- struct{}{}
				select {
				case <-release:
				case <-ctx.Done():
				}
				running.Add(-1)
				handled.Add(1)
				return nil
			}, broker.Group(brokertest.RandomName("g")), broker.Prefetch(prefetch), broker.Concurrency(8))
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close(context.Background())

			const total = 20
			for i := range total {
				if err := b.Publish(ctx, topic, &broker.Message{ID: fmt.Sprint(i), Body: []byte("x")}); err != nil {
					t.Fatal(err)
				}
			}
			// Wait until prefetch handlers are running, then give the node
			// time to (wrongly) hand over more.
			for range prefetch {
				select {
				case <-started:
				case <-ctx.Done():
					t.Fatalf("only %d handlers started, want %d", running.Load(), prefetch)
				}
			}
			time.Sleep(500 * time.Millisecond)
			if got := most.Load(); got != int32(prefetch) {
				t.Errorf("%d handlers ran at once with Prefetch(%d) and Concurrency(8), want exactly %d", got, prefetch, prefetch)
			}
			releaseOnce.Do(func() { close(release) })
			for handled.Load() < total {
				select {
				case <-ctx.Done():
					t.Fatalf("%d of %d handled after release", handled.Load(), total)
				case <-time.After(20 * time.Millisecond):
				}
			}
		})
	}
}

// TestDefaultPrefetchCoversTheRoundTrip: without broker.Prefetch the
// subscription sizes its prefetch to the round trip it measures to the
// server, so that a consumer 10 ms away (each way) is not starved by a
// prefetch chosen for loopback: it holds at least rabbit.PrefetchRate ×
// 20 ms messages, and no more than rabbit.MaxAutoPrefetch. An explicit
// Prefetch is kept as given at any distance, and the default never goes
// below max(2 × Concurrency, rabbit.MinAutoPrefetch).
func TestDefaultPrefetchCoversTheRoundTrip(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t, ignoreToxiproxy...)
	px := newFaultProxy(t, url)
	px.latency(t, 10*time.Millisecond)
	const total = 1500
	for _, tc := range []struct {
		name     string
		url      string
		opts     []broker.SubscribeOption
		min, max int
	}{
		{"default far", px.url, nil, int(rabbit.PrefetchRate * 20 / 1000), rabbit.MaxAutoPrefetch},
		{"explicit far", px.url, []broker.SubscribeOption{broker.Prefetch(5)}, 5, 5},
		{"default near", url, nil, rabbit.MinAutoPrefetch, rabbit.MaxAutoPrefetch},
		{"concurrency above the floor", url, []broker.SubscribeOption{broker.Concurrency(100)}, 200, rabbit.MaxAutoPrefetch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxFor(t, 90*time.Second)
			b := open(t, tc.url)
			topic := brokertest.RandomName("autoprefetch")
			group := brokertest.RandomName("g")
			release := make(chan struct{})
			sub, err := b.Subscribe(ctx, topic, func(ctx context.Context, _ *broker.Delivery) error {
				select {
				case <-release:
				case <-ctx.Done():
				}
				return nil
			}, append([]broker.SubscribeOption{broker.Group(group)}, tc.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				close(release)
				_ = sub.Close(context.Background())
			})
			msgs := make([]*broker.Message, 100)
			for i := range msgs {
				msgs[i] = &broker.Message{Body: []byte("x")}
			}
			for range total / len(msgs) {
				if err := b.Publish(ctx, topic, msgs...); err != nil {
					t.Fatal(err)
				}
			}
			// The handlers hold every message they get: what the server
			// has handed out is what the prefetch allowed.
			held := heldBy(t, ctx, url, topic+"."+group, total, tc.min)
			if held < tc.min || held > tc.max {
				t.Errorf("the subscription holds %d unacknowledged messages, want %d to %d", held, tc.min, tc.max)
			}
		})
	}
}

// heldBy waits until queue's unacknowledged messages (total published
// minus those ready) reach atLeast, or stop changing for half a second,
// and returns them.
func heldBy(t *testing.T, ctx context.Context, url, queue string, total, atLeast int) int {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	last, since := -1, time.Now()
	for {
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		held := total - q.Messages
		if held != last {
			last, since = held, time.Now()
		}
		if (held >= atLeast && time.Since(since) > 200*time.Millisecond) || time.Since(since) > 500*time.Millisecond {
			return held
		}
		select {
		case <-ctx.Done():
			t.Fatalf("queue %s: %v (held %d)", queue, ctx.Err(), held)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
