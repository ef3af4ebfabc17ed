package brokertest

// The isolation scenarios: the promise that one Broker instance can never
// block, slow or break another instance of the same adapter on the same
// server. Run runs them for every adapter (see runIsolation).

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/isobroker/broker"
)

const (
	// isoOpDeadline bounds one publish on the unaffected instance: far
	// above loopback latency, far below "hung".
	isoOpDeadline = 5 * time.Second
	// isoWaitBound bounds waits for deliveries, opens and closes.
	isoWaitBound = 30 * time.Second
)

// testIsolation runs each isolation scenario as a subtest and checks that,
// once it has closed everything, no goroutine it started is left.
func (s *suite) testIsolation(t *testing.T) {
	scenarios := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"ClosingOthersNeverHangsPublish", s.testClosingOthersNeverHangsPublish},
		{"CloseWhileOtherPublishes", s.testCloseWhileOtherPublishes},
		{"StuckInstanceClosesByContext", s.testStuckInstanceClosesByContext},
		{"SubscriptionEndIsLocal", s.testSubscriptionEndIsLocal},
		{"BadCredentialsAreLocal", s.testBadCredentialsAreLocal},
		{"SeveredInstanceIsLocal", s.testSeveredInstanceIsLocal},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			opts := append([]goleak.Option{goleak.IgnoreCurrent()}, s.h.IgnoreGoroutines...)
			defer goleak.VerifyNone(t, opts...)
			sc.run(t)
		})
	}
}

func (s *suite) isoOpen(t *testing.T) broker.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), isoWaitBound)
	defer cancel()
	b, err := s.h.Open(ctx)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return b
}

func isoClose(t *testing.T, b broker.Broker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), isoWaitBound)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Errorf("close: %v", err)
	}
}

// publishWithin publishes one message and fails the test if that takes
// longer than isoOpDeadline or errors.
func isoPublishWithin(t *testing.T, b broker.Broker, topic, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), isoOpDeadline)
	defer cancel()
	start := time.Now()
	if err := b.Publish(ctx, topic, &broker.Message{ID: id, Body: []byte(id)}); err != nil {
		t.Fatalf("publish %s after %v: %v", id, time.Since(start), err)
	}
}

// isoCounter is a handler that counts distinct message IDs.
type isoCounter struct {
	mu   sync.Mutex
	seen map[string]int
	more chan struct{}
}

func newIsoCounter() *isoCounter {
	return &isoCounter{seen: make(map[string]int), more: make(chan struct{}, 1)}
}

func (c *isoCounter) handle(_ context.Context, d *broker.Delivery) error {
	c.mu.Lock()
	c.seen[d.ID]++
	c.mu.Unlock()
	select {
	case c.more <- struct{}{}:
	default:
	}
	return nil
}

func (c *isoCounter) distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

func (c *isoCounter) has(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[id] > 0
}

// missing returns how many of "<prefix>-0" … "<prefix>-(n-1)" the counter
// has not seen, and the first of them.
func (c *isoCounter) missing(prefix string, n int) (int, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	count, first := 0, ""
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		if c.seen[id] == 0 {
			if count == 0 {
				first = id
			}
			count++
		}
	}
	return count, first
}

// waitMore waits up to d for another delivery.
func (c *isoCounter) waitMore(d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-c.more:
	case <-timer.C:
	}
}

// waitForID waits until the counter has seen id.
func (c *isoCounter) waitForID(t *testing.T, id string) {
	t.Helper()
	deadline := time.After(isoWaitBound)
	for !c.has(id) {
		select {
		case <-c.more:
		case <-deadline:
			t.Fatalf("%s not received within %v", id, isoWaitBound)
		}
	}
}

// waitForSeries waits until the counter has seen every one of
// "<prefix>-0" … "<prefix>-(n-1)".
func (c *isoCounter) waitForSeries(t *testing.T, prefix string, n int) {
	t.Helper()
	deadline := time.After(isoWaitBound)
	for {
		left, first := c.missing(prefix, n)
		if left == 0 {
			return
		}
		select {
		case <-time.After(50 * time.Millisecond): // missing is O(n): poll, no rescan per delivery
		case <-deadline:
			t.Fatalf("%d of %s-0…%s-%d not received within %v (first missing: %s)", left, prefix, prefix, n-1, isoWaitBound, first)
		}
	}
}

// waitFor waits until the counter has seen n distinct IDs.
func (c *isoCounter) waitFor(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(isoWaitBound)
	for c.distinct() < n {
		select {
		case <-c.more:
		case <-deadline:
			t.Fatalf("received %d of %d distinct messages within %v", c.distinct(), n, isoWaitBound)
		}
	}
}

// Scenario 1, the FastStream bug: opening, using and closing broker B over
// and over never hangs or fails a publish on the long-lived broker A.
func (s *suite) testClosingOthersNeverHangsPublish(t *testing.T) {
	const iterations = 200
	topic := s.h.NewTopic(t)
	a := s.isoOpen(t)
	defer isoClose(t, a)
	got := newIsoCounter()
	sub, err := a.Subscribe(context.Background(), topic, got.handle, broker.Group(RandomName("a")))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	for i := range iterations {
		b := s.isoOpen(t)
		isoPublishWithin(t, b, topic, fmt.Sprintf("b-%d", i))
		isoClose(t, b)
		isoPublishWithin(t, a, topic, fmt.Sprintf("a-%d", i))
	}
	// A's subscriber saw A's and B's messages (same topic, same server).
	got.waitFor(t, iterations)
}

// Scenario 2: closing A while eight goroutines publish on B costs B nothing.
func (s *suite) testCloseWhileOtherPublishes(t *testing.T) {
	const publishers, each = 8, 100
	topic := s.h.NewTopic(t)
	a, b := s.isoOpen(t), s.isoOpen(t)
	defer isoClose(t, b)
	got := newIsoCounter()
	sub, err := b.Subscribe(context.Background(), topic, got.handle, broker.Group(RandomName("b")))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	// A is busy too: a subscription and a publisher of its own.
	if _, err := a.Subscribe(context.Background(), topic, newIsoCounter().handle); err != nil {
		t.Fatal(err)
	}
	aDone := make(chan struct{})
	go func() {
		defer close(aDone)
		for i := 0; ; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), isoOpDeadline)
			err := a.Publish(ctx, topic, &broker.Message{ID: fmt.Sprintf("a-%d", i)})
			cancel()
			if errors.Is(err, broker.ErrClosed) {
				return
			}
		}
	}()

	var wg sync.WaitGroup
	var failures atomic.Int64
	halfway := make(chan struct{})
	var sent atomic.Int64
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				ctx, cancel := context.WithTimeout(context.Background(), isoOpDeadline)
				err := b.Publish(ctx, topic, &broker.Message{ID: fmt.Sprintf("b-%d-%d", p, i)})
				cancel()
				if err != nil {
					failures.Add(1)
					t.Errorf("publisher %d, message %d on B: %v", p, i, err)
				}
				if sent.Add(1) == publishers*each/2 {
					close(halfway)
				}
			}
		})
	}
	<-halfway
	closeCtx, cancel := context.WithTimeout(context.Background(), isoWaitBound)
	if err := a.Close(closeCtx); err != nil {
		t.Errorf("close A: %v", err)
	}
	cancel()
	wg.Wait()
	<-aDone
	if failures.Load() > 0 {
		t.Fatalf("%d publishes on B failed while A closed", failures.Load())
	}
	got.waitFor(t, publishers*each)
}

// Scenario 3: A is stuck in a handler that never returns on its own. A's
// Close returns by its ctx, and B publishes and consumes throughout.
func (s *suite) testStuckInstanceClosesByContext(t *testing.T) {
	topic := s.h.NewTopic(t)
	a, b := s.isoOpen(t), s.isoOpen(t)
	defer isoClose(t, b)
	release := make(chan struct{})
	defer close(release)
	stuck := make(chan struct{}, 1)
	if _, err := a.Subscribe(context.Background(), topic, func(ctx context.Context, d *broker.Delivery) error {
		select {
		case stuck <- struct{}{}:
		default:
		}
		<-release // ignores ctx: truly hung
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got := newIsoCounter()
	sub, err := b.Subscribe(context.Background(), topic, got.handle, broker.Group(RandomName("b")))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	isoPublishWithin(t, a, topic, "wedge")
	select {
	case <-stuck:
	case <-time.After(isoWaitBound):
		t.Fatal("A's handler never started")
	}

	const closeDeadline = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), closeDeadline)
	defer cancel()
	start := time.Now()
	err = a.Close(ctx)
	if elapsed := time.Since(start); elapsed > closeDeadline+isoOpDeadline {
		t.Errorf("Close of the stuck instance took %v with a %v ctx", elapsed, closeDeadline)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close of the stuck instance = %v, want an error wrapping DeadlineExceeded", err)
	}
	for i := range 50 {
		isoPublishWithin(t, b, topic, fmt.Sprintf("b-%d", i))
	}
	got.waitFor(t, 50) // at least B's own (on a shared server "wedge" too)
}

// Scenario 4: A's subscription failing (its handler always errors, then its
// ctx is cancelled) and closing never stops B's subscription on the same
// topic.
func (s *suite) testSubscriptionEndIsLocal(t *testing.T) {
	topic := s.h.NewTopic(t)
	a, b := s.isoOpen(t), s.isoOpen(t)
	defer isoClose(t, a)
	defer isoClose(t, b)
	failing := func(context.Context, *broker.Delivery) error { return errors.New("always failing") }
	actx, acancel := context.WithCancel(context.Background())
	defer acancel()
	aFail, err := a.Subscribe(actx, topic, failing, broker.Group(RandomName("afail")))
	if err != nil {
		t.Fatal(err)
	}
	aClose, err := a.Subscribe(context.Background(), topic, newIsoCounter().handle, broker.Group(RandomName("aclose")))
	if err != nil {
		t.Fatal(err)
	}
	got := newIsoCounter()
	sub, err := b.Subscribe(context.Background(), topic, got.handle, broker.Group(RandomName("b")))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())

	for i := range 10 {
		isoPublishWithin(t, b, topic, fmt.Sprintf("before-%d", i))
		isoPublishWithin(t, a, topic, fmt.Sprintf("before-a-%d", i))
	}
	acancel()
	<-aFail.Done()
	ctx, cancel := context.WithTimeout(context.Background(), isoWaitBound)
	defer cancel()
	if err := aClose.Close(ctx); err != nil {
		t.Errorf("close A's subscription: %v", err)
	}
	for i := range 10 {
		isoPublishWithin(t, b, topic, fmt.Sprintf("after-%d", i))
	}
	got.waitFor(t, 20) // at least B's own (on a shared server A's too)
	select {
	case <-sub.Done():
		t.Fatalf("B's subscription ended: %v", sub.Err())
	default:
	}
}
