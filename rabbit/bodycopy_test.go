package rabbit_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
)

// TestBodiesAreCopied: Publish copies the bodies it sends (into buffers a
// Broker recycles between calls), so a caller may overwrite a Body as
// soon as Publish returns — after a nil, and after a return by a short
// ctx. Eight publishers send calls of random sizes (up to 256 KiB a
// message) and scribble over every body right after each call; every
// delivered body must still match the checksum in its ID.
func TestBodiesAreCopied(t *testing.T) {
	url := shared.URL(t)
	b := open(t, url)
	topic := brokertest.RandomName("copies")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var mu sync.Mutex
	bad := map[string]bool{}
	seen := map[string]bool{}
	more := make(chan struct{}, 1)
	sub, err := b.Subscribe(ctx, topic, func(_ context.Context, d *broker.Delivery) error {
		sum := sha256.Sum256(d.Body)
		mu.Lock()
		defer mu.Unlock()
		if want := d.ID[:16]; hex.EncodeToString(sum[:8]) != want {
			bad[d.ID] = true
		}
		seen[d.ID] = true
		select {
		case more <- struct{}{}:
		default:
		}
		return nil
	}, broker.Group("g"), broker.Concurrency(4))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())

	const publishers, calls = 8, 25
	var confirmed sync.Map
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(p), 1))
			for c := range calls {
				msgs := make([]*broker.Message, 1+rng.IntN(8))
				for i := range msgs {
					body := make([]byte, rng.IntN(256<<10))
					for j := range body {
						body[j] = byte(rng.Uint32())
					}
					sum := sha256.Sum256(body)
					msgs[i] = &broker.Message{ID: fmt.Sprintf("%s-%d-%d-%d", hex.EncodeToString(sum[:8]), p, c, i), Body: body}
				}
				callCtx, cancelCall := ctx, context.CancelFunc(func() {})
				if c%5 == 4 { // now and then a deadline that may end the call early
					callCtx, cancelCall = context.WithTimeout(ctx, time.Millisecond)
				}
				err := b.Publish(callCtx, topic, msgs...)
				cancelCall()
				for _, m := range msgs { // the caller reuses its buffers at once
					for j := range m.Body {
						m.Body[j] = 0xAA
					}
				}
				if err == nil {
					for _, m := range msgs {
						confirmed.Store(m.ID, true)
					}
				}
			}
		})
	}
	wg.Wait()
	n := 0
	confirmed.Range(func(any, any) bool { n++; return true })
	if n == 0 {
		t.Fatal("no call was confirmed")
	}
	for {
		missing := 0
		mu.Lock()
		confirmed.Range(func(id, _ any) bool {
			if !seen[id.(string)] {
				missing++
			}
			return true
		})
		mu.Unlock()
		if missing == 0 {
			break
		}
		select {
		case <-more:
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			t.Fatalf("%d confirmed messages not delivered", missing)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for id := range bad {
		t.Errorf("message %s delivered with a body that does not match its checksum", id)
	}
	t.Logf("%d messages confirmed and delivered intact (%d delivered in all, counting those of calls that ended by their deadline)", n, len(seen))
}
