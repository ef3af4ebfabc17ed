package eventhubs_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs/emulator"
)

// cancelRounds is how many cut-then-normal rounds each test runs on one
// Broker.
const cancelRounds = 50

// cancelCutDelay spreads the cut of round i over [0, 1.2) × ref (the
// duration of a recent call of the same kind that ran to its end), plus a
// little jitter, so that across the rounds some calls are cut before they
// start, some while they are being written or set up, some after.
func cancelCutDelay(i int, ref time.Duration, rng *rand.Rand) time.Duration {
	frac := float64((i*7)%20) / 16
	return time.Duration(frac*float64(ref)) + time.Duration(rng.Int64N(int64(100*time.Microsecond)))
}

// cancelStored is one event as a subscriber read it back.
type cancelStored struct {
	id  string
	n   int
	sum [sha256.Size]byte
	seq int64
}

// cancelCollector records every event handed to its handler and closes
// done once the marker event arrives.
type cancelCollector struct {
	marker string
	done   chan struct{}
	once   sync.Once
	mu     sync.Mutex
	got    []cancelStored
}

func (c *cancelCollector) handle(_ context.Context, d *broker.Delivery) error {
	c.mu.Lock()
	c.got = append(c.got, cancelStored{id: d.ID, n: len(d.Body), sum: sha256.Sum256(d.Body), seq: d.Metadata.SequenceNumber})
	c.mu.Unlock()
	if d.ID == c.marker {
		c.once.Do(func() { close(c.done) })
	}
	return nil
}

func (c *cancelCollector) stored() []cancelStored {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]cancelStored(nil), c.got...)
}

// TestCancelledMultiFrameSendLeavesLinkUsable: on one Broker and one
// single-partition hub, 50 rounds of a Publish of a 200-900 KiB event (a
// transfer of 4 to 15 frames of 64 KiB) whose ctx is cancelled after a
// delay varied across the rounds (so that some cuts land in the middle
// of the transfer), each followed by a Publish under a 10 s ctx, which
// must succeed. A cut Publish returns nil or context.Canceled. Read back
// from the earliest position, every event whose Publish returned nil is
// stored, and every stored event has exactly the body it was published
// with (a cut event may be stored or not, but never truncated or mixed
// with another). go-amqp v1.7.0 returns from a multi-frame transfer cut
// by its ctx without aborting it; writing transfers under the caller's
// ctx made the next Publish on the link fail with amqp:not-allowed.
func TestCancelledMultiFrameSendLeavesLinkUsable(t *testing.T) {
	e := startEmulator(t, emulator.Config{})
	hub := newHub(t, e, 1)
	logs := &logBuffer{}
	b := open(t, e, logs)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))

	type sent struct {
		n   int
		sum [sha256.Size]byte
	}
	published := map[string]sent{} // every event the test published
	var confirmed []string         // those whose Publish returned nil
	publish := func(ctx context.Context, id string, n int) error {
		body := make([]byte, n)
		var key [32]byte
		for i := range key {
			key[i] = byte(rng.Uint32())
		}
		_, _ = rand.NewChaCha8(key).Read(body)
		published[id] = sent{n: n, sum: sha256.Sum256(body)}
		err := b.Publish(ctx, hub, &broker.Message{ID: id, Body: body})
		if err == nil {
			confirmed = append(confirmed, id)
		}
		return err
	}
	size := func() int { return 200<<10 + rng.IntN(700<<10) }

	// Attach the sender first, so that the cuts fall on transfers.
	start := time.Now()
	if err := publish(ctxT(t, 10*time.Second), "warm", 512<<10); err != nil {
		t.Fatalf("warm-up publish: %v", err)
	}
	ref := time.Since(start)
	t.Logf("warm-up publish of 512 KiB took %v", ref)

	var cutNil, cutCancelled int
	var minDelay, maxDelay time.Duration = time.Hour, 0
	for i := range cancelRounds {
		cutID := fmt.Sprintf("cut-%02d", i)
		n := size()
		delay := cancelCutDelay(i, ref, rng)
		minDelay, maxDelay = min(minDelay, delay), max(maxDelay, delay)
		ctx, cancel := context.WithCancel(context.Background())
		timer := time.AfterFunc(delay, cancel)
		err := publish(ctx, cutID, n)
		timer.Stop()
		cancel()
		var what string
		switch {
		case err == nil:
			cutNil++
			what = "returned nil"
		case errors.Is(err, context.Canceled):
			cutCancelled++
			what = "returned Canceled"
		default:
			t.Fatalf("round %d: Publish of %d bytes cancelled after %v = %v, want nil or context.Canceled", i, n, delay, err)
		}

		okID := fmt.Sprintf("ok-%02d", i)
		n = size()
		ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		err = publish(ctx, okID, n)
		took := time.Since(start)
		cancel()
		if err != nil {
			t.Fatalf("round %d: Publish of %d bytes after a Publish cancelled after %v (which %s) = %v", i, n, delay, what, err)
		}
		ref = (ref + took) / 2 // follow the machine's current pace
	}
	t.Logf("cut publishes: %d returned nil, %d Canceled; cuts after %v to %v", cutNil, cutCancelled, minDelay, maxDelay)

	// The hub has one partition: once the marker, published last, is
	// read, so is everything stored before it.
	if err := publish(ctxT(t, 10*time.Second), "end", 16); err != nil {
		t.Fatalf("publish of the end marker: %v", err)
	}
	c := &cancelCollector{marker: "end", done: make(chan struct{})}
	subCtx, subCancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer subCancel()
	sub, err := b.Subscribe(subCtx, hub, c.handle, broker.StartAt(broker.Earliest()), broker.Prefetch(8))
	if err != nil {
		t.Fatalf("subscribe from earliest: %v", err)
	}
	select {
	case <-c.done:
	case <-sub.Done():
		t.Fatalf("read-back subscription ended before the end marker (%d events read): %v", len(c.stored()), sub.Err())
	case <-time.After(30 * time.Second):
		t.Fatalf("end marker not read back within 30 s (%d events read)", len(c.stored()))
	}
	if err := sub.Close(ctxT(t, 10*time.Second)); err != nil {
		t.Errorf("read-back subscription close: %v", err)
	}

	stored := c.stored()
	times := map[string]int{}
	for _, s := range stored {
		times[s.id]++
		p, ok := published[s.id]
		switch {
		case !ok:
			t.Errorf("stored event %q (sequence %d, %d bytes) was never published", s.id, s.seq, s.n)
		case s.n != p.n || s.sum != p.sum:
			t.Errorf("stored event %q (sequence %d) has a %d-byte body (sha256 %x), published %d bytes (sha256 %x)", s.id, s.seq, s.n, s.sum[:8], p.n, p.sum[:8])
		}
	}
	for _, id := range confirmed {
		if times[id] == 0 {
			t.Errorf("event %q: Publish returned nil, but it is not stored", id)
		}
	}
	cutStored, dups := 0, 0
	for i := range cancelRounds {
		if times[fmt.Sprintf("cut-%02d", i)] > 0 {
			cutStored++
		}
	}
	for _, k := range times {
		dups += k - 1
	}
	t.Logf("read back %d events: %d of %d cut events stored, %d duplicates", len(stored), cutStored, cancelRounds, dups)
}

// TestCancelledSubscribeLeavesInstanceUsable: on one Broker and a hub of
// four partitions, 50 rounds of a Subscribe whose ctx deadline is varied
// across the rounds from 0 to a little more than a full set-up (so that
// some end while the partitions' sessions and links are being begun and
// attached), each followed by a Subscribe under a normal ctx, which must
// succeed and hand its handler the one event published (by another
// Broker) after it returned, then close cleanly. A cut Subscribe returns
// DeadlineExceeded, or a subscription that ends at once with
// DeadlineExceeded. go-amqp never sends the Begin of a session started
// with an expired ctx, but later an End for it: beginning sessions under
// the caller's ctx made the emulator close the connection with
// amqp:not-allowed, which the adapter took as fatal.
func TestCancelledSubscribeLeavesInstanceUsable(t *testing.T) {
	e := startEmulator(t, emulator.Config{})
	hub := newHub(t, e, 4)
	logs := &logBuffer{}
	b := open(t, e, logs)
	pub := open(t, e, nil)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0x7f4a7c159e3779b9))

	// A first set-up, to learn how long one takes on this machine; it
	// also opens the connection, so that the cuts fall on the set-up.
	start := time.Now()
	first, err := b.Subscribe(ctxT(t, 20*time.Second), hub, func(context.Context, *broker.Delivery) error { return nil })
	if err != nil {
		t.Fatalf("first subscribe: %v", err)
	}
	ref := time.Since(start)
	if err := first.Close(ctxT(t, 10*time.Second)); err != nil {
		t.Fatalf("first subscription close: %v", err)
	}
	t.Logf("a full Subscribe took %v", ref)

	var cutNil, cutExpired int
	var minDelay, maxDelay time.Duration = time.Hour, 0
	for i := range cancelRounds {
		delay := cancelCutDelay(i, ref, rng)
		if i%20 == 0 {
			delay = 0 // expired before the call
		}
		minDelay, maxDelay = min(minDelay, delay), max(maxDelay, delay)
		ctx, cancel := context.WithTimeout(context.Background(), delay)
		cut, err := b.Subscribe(ctx, hub, func(context.Context, *broker.Delivery) error { return nil })
		var what string
		switch {
		case err == nil:
			cutNil++
			what = "returned a subscription"
			select {
			case <-cut.Done():
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d: subscription whose ctx expired after %v still running 10 s later", i, delay)
			}
			if err := cut.Err(); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("round %d: Err of a subscription whose ctx expired after %v = %v, want DeadlineExceeded", i, delay, err)
			}
			_ = cut.Close(ctxT(t, 10*time.Second))
		case errors.Is(err, context.DeadlineExceeded):
			cutExpired++
			what = "returned DeadlineExceeded"
		default:
			t.Fatalf("round %d: Subscribe under a %v deadline = %v, want nil or DeadlineExceeded", i, delay, err)
		}
		cancel() // only now: a subscription it returned ends by its deadline

		got := make(chan string, 16)
		subCtx, subCancel := context.WithTimeout(context.Background(), 30*time.Second)
		start := time.Now()
		sub, err := b.Subscribe(subCtx, hub, func(ctx context.Context, d *broker.Delivery) error {
			select {
			case got <- d.ID:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		took := time.Since(start)
		if err != nil {
			subCancel()
			t.Fatalf("round %d: Subscribe after a Subscribe under a %v deadline (which %s) = %v", i, delay, what, err)
		}
		id := fmt.Sprintf("ev-%02d", i)
		if err := pub.Publish(ctxT(t, 10*time.Second), hub, &broker.Message{ID: id}); err != nil {
			subCancel()
			t.Fatalf("round %d: publish %q: %v", i, id, err)
		}
		select {
		case gotID := <-got:
			if gotID != id {
				t.Errorf("round %d: subscription (start: latest) received %q, want %q", i, gotID, id)
			}
		case <-sub.Done():
			subCancel()
			t.Fatalf("round %d: subscription after a Subscribe under a %v deadline (which %s) ended before receiving %q: %v", i, delay, what, id, sub.Err())
		case <-time.After(15 * time.Second):
			subCancel()
			t.Fatalf("round %d: subscription after a Subscribe under a %v deadline (which %s) did not receive %q within 15 s", i, delay, what, id)
		}
		if err := sub.Close(ctxT(t, 10*time.Second)); err != nil {
			t.Errorf("round %d: subscription close: %v", i, err)
		}
		subCancel()
		ref = (ref + took) / 2 // follow the machine's current pace
	}
	t.Logf("cut subscribes: %d returned a subscription, %d DeadlineExceeded; deadlines %v to %v", cutNil, cutExpired, minDelay, maxDelay)
	t.Logf("subscriber broker logged %d connection losses", logs.count("connection closed by peer"))
}
