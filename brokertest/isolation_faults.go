package brokertest

// The isolation scenarios that need a fault from the harness: refused
// credentials (Harness.OpenBadCredentials) and a severed connection
// (Harness.Sever).

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isobroker/broker"
)

// isoRefusalBound bounds how long refused credentials may take to be
// reported, although the caller's ctx allows isoWaitBound: above the
// delay a server may impose on a failed login (RabbitMQ waits 3 s before
// it closes the connection), with room for a loaded machine, and far
// below a retry loop that runs until ctx ends.
const isoRefusalBound = 10 * time.Second

// Scenario 5: while B publishes and consumes, instances with credentials
// the server refuses are opened again and again, several at once. Every
// attempt fails within isoRefusalBound with a non-retryable error
// wrapping ErrUnauthorized; B loses no publish, no delivery and never
// leaves StateConnected.
func (s *suite) testBadCredentialsAreLocal(t *testing.T) {
	if s.h.OpenBadCredentials == nil {
		t.Skip("Harness.OpenBadCredentials is nil: no way to open an instance with refused credentials")
	}
	// 20 attempts, 10 at a time: a server may hold each refusal for
	// seconds (RabbitMQ: 3 s), which one at a time would make this the
	// suite's longest scenario.
	const rounds, perRound = 2, 10
	topic := s.h.NewTopic(t)
	b := s.isoOpen(t)
	defer isoClose(t, b)
	got := newIsoCounter()
	sub, err := b.Subscribe(context.Background(), topic, got.handle, broker.Group(RandomName("b")))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	isoPublishWithin(t, b, topic, "b-ready")
	got.waitForID(t, "b-ready")
	watch := isoWatchState(b)
	defer watch.stop()
	pub := isoStartPublisher(t, b, topic, "b")
	defer pub.stop() // before B closes, also when t fails early

	var tooks []time.Duration
	for r := range rounds {
		errs := make([]error, perRound)
		took := make([]time.Duration, perRound)
		var wg sync.WaitGroup
		for j := range perRound {
			wg.Go(func() {
				start := time.Now()
				errs[j] = s.isoBadCredentials(r*perRound+j, topic)
				took[j] = time.Since(start)
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		tooks = append(tooks, slices.Max(took).Round(time.Millisecond))
	}

	pub.waitMore(t, 100) // B keeps working after the last refusal
	sent := pub.stop()
	watch.expectNone(t, "B")
	got.waitForSeries(t, "b", sent)
	select {
	case <-sub.Done():
		t.Fatalf("B's subscription ended: %v", sub.Err())
	default:
	}
	t.Logf("%d refused opens, %d at a time, each round within %v; B published and received %d messages meanwhile",
		rounds*perRound, perRound, tooks, sent)
}

// isoBadCredentials makes attempt i to open an instance with refused
// credentials, and returns why it did not fail as it must.
func (s *suite) isoBadCredentials(i int, topic string) error {
	ctx, cancel := context.WithTimeout(context.Background(), isoWaitBound)
	defer cancel()
	check := func(what string, err error, took time.Duration) error {
		switch {
		case err == nil:
			return fmt.Errorf("attempt %d: %s with refused credentials succeeded", i, what)
		case !errors.Is(err, broker.ErrUnauthorized):
			return fmt.Errorf("attempt %d: %s with refused credentials = %v, want an error wrapping ErrUnauthorized", i, what, err)
		case broker.IsRetryable(err):
			return fmt.Errorf("attempt %d: %s with refused credentials = %v, which IsRetryable calls retryable", i, what, err)
		case took > isoRefusalBound:
			return fmt.Errorf("attempt %d: %s with refused credentials took %v (ctx allowed %v), want at most %v: %v",
				i, what, took.Round(time.Millisecond), isoWaitBound, isoRefusalBound, err)
		}
		return nil
	}
	start := time.Now()
	bad, err := s.h.OpenBadCredentials(ctx)
	if err != nil {
		return check("Open", err, time.Since(start))
	}
	// The adapter checks credentials on first use: that use is refused.
	var errOpen error
	if took := time.Since(start); took > isoRefusalBound {
		errOpen = fmt.Errorf("attempt %d: Open with refused credentials took %v before it returned an instance, want at most %v",
			i, took.Round(time.Millisecond), isoRefusalBound)
	}
	start = time.Now()
	err = bad.Publish(ctx, topic, &broker.Message{ID: fmt.Sprintf("bad-%d", i)})
	errPub := check("Open succeeded, then Publish", err, time.Since(start))
	start = time.Now()
	badSub, err := bad.Subscribe(ctx, topic, func(context.Context, *broker.Delivery) error { return nil },
		broker.Group(RandomName("bad")))
	if err == nil {
		_ = badSub.Close(ctx)
	}
	errSub := check("Open succeeded, then Subscribe", err, time.Since(start))
	var errClose error
	if err := bad.Close(ctx); err != nil {
		errClose = fmt.Errorf("attempt %d: Close of the refused instance: %w", i, err)
	}
	return errors.Join(errOpen, errPub, errSub, errClose)
}

// Scenario 6: A and B subscribe to one topic; A's connections are cut
// from outside, again and again, while B publishes without pause. Each
// cut is noticed by A alone (A's State leaves StateConnected, B's never
// changes), every publish on B succeeds within the per-op deadline and
// reaches B's subscription, and after every cut A recovers by itself: a
// publish on A succeeds (its errors until then retryable), A's
// subscription receives messages published on A, and A's State is
// StateConnected again.
func (s *suite) testSeveredInstanceIsLocal(t *testing.T) {
	if s.h.Sever == nil {
		t.Skip("Harness.Sever is nil: no way to cut one instance's connections")
	}
	const severs = 5
	topic := s.h.NewTopic(t)
	a, b := s.isoOpen(t), s.isoOpen(t)
	defer isoClose(t, a)
	defer isoClose(t, b)
	gotA, gotB := newIsoCounter(), newIsoCounter()
	subA, err := a.Subscribe(context.Background(), topic, gotA.handle, broker.Group(RandomName("a")))
	if err != nil {
		t.Fatal(err)
	}
	defer subA.Close(context.Background())
	subB, err := b.Subscribe(context.Background(), topic, gotB.handle, broker.Group(RandomName("b")))
	if err != nil {
		t.Fatal(err)
	}
	defer subB.Close(context.Background())
	// Both are connected, subscribed and delivering before the first cut.
	isoPublishWithin(t, b, topic, "b-ready")
	gotB.waitForID(t, "b-ready")
	s.isoRecovered(t, a, gotA, topic, "ready")
	watchA, watchB := isoWatchState(a), isoWatchState(b)
	defer watchA.stop()
	defer watchB.stop()
	pub := isoStartPublisher(t, b, topic, "b")
	defer pub.stop() // before B closes, also when t fails early

	var recoveries []time.Duration
	for i := range severs {
		before := watchA.count(broker.StateReconnecting)
		cut := time.Now()
		s.h.Sever(t, a)
		watchA.waitCount(t, broker.StateReconnecting, before+1,
			fmt.Sprintf("after Sever %d, A's State never left StateConnected: the cut did not reach A's connections, or A did not notice", i+1))
		s.isoRecovered(t, a, gotA, topic, fmt.Sprint(i))
		recoveries = append(recoveries, time.Since(cut).Round(time.Millisecond))
	}

	pub.waitMore(t, 100) // B keeps working after the last cut
	sent := pub.stop()
	watchB.expectNone(t, "B")
	gotB.waitForSeries(t, "b", sent)
	for _, sub := range []struct {
		name string
		sub  broker.Subscription
	}{{"A", subA}, {"B", subB}} {
		select {
		case <-sub.sub.Done():
			t.Fatalf("%s's subscription ended: %v", sub.name, sub.sub.Err())
		default:
		}
	}
	// After the last cut, A's subscription receives everything published
	// on A, spread over keys (partitions, where the broker has them).
	const after = 20
	for i := range after {
		ctx, cancel := context.WithTimeout(context.Background(), isoOpDeadline)
		err := a.Publish(ctx, topic, &broker.Message{ID: fmt.Sprintf("a-after-%d", i), Key: fmt.Sprintf("k%d", i)})
		cancel()
		if err != nil {
			t.Fatalf("publish a-after-%d on the recovered A: %v", i, err)
		}
	}
	gotA.waitForSeries(t, "a-after", after)
	t.Logf("%d cuts of A, recovered after %v; B published and received %d messages meanwhile", severs, recoveries, sent)
}

// isoRecovered waits, up to isoWaitBound, until a has recovered: a
// publish on a succeeds (every error before that must be retryable), a's
// subscription (got) receives a message a published, and a's State is
// StateConnected. Markers are "a-<round>-<n>".
func (s *suite) isoRecovered(t *testing.T, a broker.Broker, got *isoCounter, topic, round string) {
	t.Helper()
	deadline := time.Now().Add(isoWaitBound)
	var published []string
	for n := 0; !anyOf(got, published); n++ {
		if time.Now().After(deadline) {
			t.Fatalf("round %s: A did not recover within %v: %d publishes confirmed, none received by A's subscription, State %v",
				round, isoWaitBound, len(published), a.State())
		}
		id := fmt.Sprintf("a-%s-%d", round, n)
		ctx, cancel := context.WithTimeout(context.Background(), min(isoOpDeadline, time.Until(deadline)))
		err := a.Publish(ctx, topic, &broker.Message{ID: id, Key: id})
		cancel()
		switch {
		case err == nil:
			published = append(published, id)
		case !broker.IsRetryable(err):
			t.Fatalf("round %s: publish on A while it recovers = %v, which IsRetryable calls final", round, err)
		}
		got.waitMore(50 * time.Millisecond) // a moment for a delivery before the next marker
	}
	for a.State() != broker.StateConnected {
		if time.Now().After(deadline) {
			t.Fatalf("round %s: A receives again but its State is %v, not %v, after %v",
				round, a.State(), broker.StateConnected, isoWaitBound)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func anyOf(c *isoCounter, ids []string) bool {
	for _, id := range ids {
		if c.has(id) {
			return true
		}
	}
	return false
}

// isoPublisher publishes "<prefix>-0", "<prefix>-1", … on one instance
// without pause, each within isoOpDeadline, until stopped.
type isoPublisher struct {
	stopping chan struct{}
	once     sync.Once
	done     chan struct{}
	sent     atomic.Int64
}

// isoStartPublisher starts publishing; every failed publish fails t.
func isoStartPublisher(t *testing.T, b broker.Broker, topic, prefix string) *isoPublisher {
	p := &isoPublisher{stopping: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for i := 0; ; i++ {
			select {
			case <-p.stopping:
				return
			default:
			}
			id := fmt.Sprintf("%s-%d", prefix, i)
			ctx, cancel := context.WithTimeout(context.Background(), isoOpDeadline)
			start := time.Now()
			err := b.Publish(ctx, topic, &broker.Message{ID: id, Key: id})
			cancel()
			if err != nil {
				t.Errorf("publish %s after %v: %v", id, time.Since(start).Round(time.Millisecond), err)
				return
			}
			p.sent.Add(1)
		}
	}()
	return p
}

// waitMore waits until n more publishes than now have succeeded, so that
// the instance keeps working for a while after a fault, not just during
// it. It fails t if publishing stopped or isoWaitBound passed first.
func (p *isoPublisher) waitMore(t *testing.T, n int) {
	t.Helper()
	want := p.sent.Load() + int64(n)
	deadline := time.Now().Add(isoWaitBound)
	for p.sent.Load() < want {
		select {
		case <-p.done:
			t.Fatalf("publishing stopped after %d messages", p.sent.Load())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d publishes succeeded within %v, want %d", p.sent.Load()-want+int64(n), isoWaitBound, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stop ends publishing and returns how many publishes succeeded: those
// are "<prefix>-0" … "<prefix>-(n-1)". It may be called again.
func (p *isoPublisher) stop() int {
	p.once.Do(func() { close(p.stopping) })
	<-p.done
	return int(p.sent.Load())
}

// isoStates records an instance's state changes.
type isoStates struct {
	cancel context.CancelFunc
	done   chan struct{}
	more   chan struct{}

	mu      sync.Mutex
	changes []broker.StateChange
}

func isoWatchState(b broker.Broker) *isoStates {
	ctx, cancel := context.WithCancel(context.Background())
	w := &isoStates{cancel: cancel, done: make(chan struct{}), more: make(chan struct{}, 1)}
	ch := b.WatchState(ctx)
	go func() {
		defer close(w.done)
		for c := range ch {
			w.mu.Lock()
			w.changes = append(w.changes, c)
			w.mu.Unlock()
			select {
			case w.more <- struct{}{}:
			default:
			}
		}
	}()
	return w
}

// stop ends the watch and waits for its goroutine. Calling it again does
// nothing.
func (w *isoStates) stop() {
	w.cancel()
	<-w.done
}

func (w *isoStates) count(to broker.State) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, c := range w.changes {
		if c.To == to {
			n++
		}
	}
	return n
}

// waitCount waits until n changes to state to were seen, failing with
// why after isoWaitBound.
func (w *isoStates) waitCount(t *testing.T, to broker.State, n int, why string) {
	t.Helper()
	deadline := time.After(isoWaitBound)
	for w.count(to) < n {
		select {
		case <-w.more:
		case <-deadline:
			t.Fatalf("%s (waited %v)", why, isoWaitBound)
		}
	}
}

// expectNone fails t if the instance's state changed at all.
func (w *isoStates) expectNone(t *testing.T, name string) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.changes {
		t.Errorf("%s's State changed from %v to %v (cause: %v) while another instance was faulted", name, c.From, c.To, c.Err)
	}
}
