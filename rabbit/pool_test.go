package rabbit_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/rabbit"
)

// TestPublishPoolGrowsOnDemand: an instance opens one publishing channel,
// and one caller publishing in turn never needs another; callers that
// find its writer busy grow the pool, one channel at a time, up to
// PublishChannels and no further. Every message is still confirmed and
// delivered.
func TestPublishPoolGrowsOnDemand(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t)
	ctx := ctxFor(t, 60*time.Second)
	for _, size := range []int{rabbit.DefaultPublishChannels, 2} {
		b := open(t, url, rabbit.WithConfig(func(c *rabbit.Config) { c.PublishChannels = size }))
		topic := brokertest.RandomName("pool")
		var mu sync.Mutex
		seen := map[string]bool{}
		sub, err := b.Subscribe(ctx, topic, func(_ context.Context, d *broker.Delivery) error {
			mu.Lock()
			seen[d.ID] = true
			mu.Unlock()
			return nil
		}, broker.Group(brokertest.RandomName("g")), broker.Concurrency(4))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Close(context.Background()) })
		if n := b.OpenPublishChannels(); n != 1 {
			t.Errorf("pool of %d: %d publishing channels open before any publish, want 1", size, n)
		}
		for i := range 50 {
			if err := b.Publish(ctx, topic, &broker.Message{ID: "one-" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Body: []byte("x")}); err != nil {
				t.Fatal(err)
			}
		}
		if n := b.OpenPublishChannels(); n != 1 {
			t.Errorf("pool of %d: %d publishing channels after one caller's publishes, want 1", size, n)
		}
		const callers, each = 32, 100
		var wg sync.WaitGroup
		for c := range callers {
			wg.Go(func() {
				for i := range each {
					id := topic + "-" + string(rune('A'+c)) + "-" + string(rune('0'+i/10)) + string(rune('0'+i%10))
					if err := b.Publish(ctx, topic, &broker.Message{ID: id, Body: []byte("x")}); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		if n := b.OpenPublishChannels(); n != size {
			t.Errorf("pool of %d: %d publishing channels after %d concurrent callers, want %d", size, n, callers, size)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			mu.Lock()
			n := len(seen)
			mu.Unlock()
			if n == 50+callers*each {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pool of %d: %d of %d confirmed messages delivered", size, n, 50+callers*each)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
