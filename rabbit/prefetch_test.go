package rabbit_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
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
