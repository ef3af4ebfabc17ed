package eventhubs_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
)

// TestCallerDeadlineNeverFailsAnotherCaller starts two calls at once on a
// fresh Broker whose shared set-up (put-token, session, sender link or
// $management link) is slow: caller A with a deadline shorter than that
// set-up, caller B with plenty of time. A must fail with its own deadline;
// B must succeed, every round — the set-up runs under the instance's
// lifetime, not under whichever caller triggered it. Under -short one round
// per operation runs (each round waits out the delayed set-up).
func TestCallerDeadlineNeverFailsAnotherCaller(t *testing.T) {
	rounds := 5
	if testing.Short() {
		rounds = 1
	}
	e := startEmulator(t, emulator.Config{})
	hub := newHub(t, e, 2)
	e.Faults().DelayDispositions(400 * time.Millisecond)
	ops := map[string]func(ctx context.Context, b *eventhubs.Broker) error{
		"publish": func(ctx context.Context, b *eventhubs.Broker) error {
			return b.Publish(ctx, hub, &broker.Message{ID: "m", Body: []byte("x")})
		},
		"hub-properties": func(ctx context.Context, b *eventhubs.Broker) error {
			_, err := b.HubProperties(ctx, hub)
			return err
		},
	}
	for name, op := range ops {
		t.Run(name, func(t *testing.T) {
			for round := range rounds {
				b := open(t, e, nil)
				var wg sync.WaitGroup
				var errA, errB error
				var tookB time.Duration
				wg.Add(2)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
					defer cancel()
					errA = op(ctx, b)
				}()
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					defer cancel()
					start := time.Now()
					errB = op(ctx, b)
					tookB = time.Since(start)
				}()
				wg.Wait()
				if !errors.Is(errA, context.DeadlineExceeded) {
					t.Errorf("round %d: caller A (100 ms) got %v, want its own deadline", round, errA)
				}
				if errB != nil {
					t.Fatalf("round %d: caller B (20 s) failed after %v: %v", round, tookB, errB)
				}
				// The instance is healthy afterwards for a short caller too.
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				err := op(ctx, b)
				cancel()
				if err != nil {
					t.Fatalf("round %d: call after the race: %v", round, err)
				}
			}
		})
	}
}
