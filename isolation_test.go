package broker_test

// The isolation regression suite: the promise that one Broker instance can
// never block, slow or break another. Every backend runs every scenario
// against a real server; an adapter joins by adding one row to
// isolationBackends. Under -short the RabbitMQ row skips (no server is
// started); mem and the in-process Event Hubs emulator still run.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/internal/rabbitnode"
	"github.com/isobroker/broker/mem"
)

// isolationBackend is one row of the suite.
type isolationBackend struct {
	name string
	// open returns a new, independent instance.
	open func(ctx context.Context) (broker.Broker, error)
	// newTopic returns a fresh topic both instances can use.
	newTopic func(t testing.TB) string
}

// isolationBackends lists the rows by name. Each row is set up inside its
// own subtest, so that a row whose server is missing (RabbitMQ under
// -short) skips alone and the others still run.
func isolationBackends() []struct {
	name  string
	setup func(t *testing.T) isolationBackend
} {
	return []struct {
		name  string
		setup func(t *testing.T) isolationBackend
	}{
		{"mem", memIsolationBackend},
		{"eventhubs", eventhubsIsolationBackend},
		{"rabbit", rabbitIsolationBackend},
	}
}

func memIsolationBackend(*testing.T) isolationBackend {
	return isolationBackend{
		name: "mem",
		open: func(ctx context.Context) (broker.Broker, error) {
			return mem.New(mem.WithLogger(slog.New(slog.DiscardHandler)))
		},
		newTopic: func(testing.TB) string { return brokertest.RandomName("iso") },
	}
}

const (
	// opDeadline bounds one publish on the unaffected broker: far above
	// loopback latency, far below "hung".
	opDeadline = 5 * time.Second
	// waitBound bounds waits for deliveries.
	waitBound = 30 * time.Second
)

func TestMain(m *testing.M) {
	code := m.Run()
	sharedRabbit.Close() // the node outlives the tests that share it
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreAnyFunction(rabbitnode.WaitFunction)); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func TestIsolation(t *testing.T) {
	scenarios := []struct {
		name string
		run  func(t *testing.T, be isolationBackend)
	}{
		{"ClosingOthersNeverHangsPublish", testClosingOthersNeverHangsPublish},
		{"CloseWhileOtherPublishes", testCloseWhileOtherPublishes},
		{"StuckInstanceClosesByContext", testStuckInstanceClosesByContext},
		{"SubscriptionEndIsLocal", testSubscriptionEndIsLocal},
	}
	for _, row := range isolationBackends() {
		t.Run(row.name, func(t *testing.T) {
			be := row.setup(t)
			for _, sc := range scenarios {
				t.Run(sc.name, func(t *testing.T) {
					// Scenario 5: after everything is closed, no goroutine
					// the scenario started is left.
					defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
					sc.run(t, be)
				})
			}
		})
	}
}

func mustOpen(t *testing.T, be isolationBackend) broker.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	b, err := be.open(ctx)
	if err != nil {
		t.Fatalf("open %s: %v", be.name, err)
	}
	return b
}

func mustClose(t *testing.T, b broker.Broker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Errorf("close: %v", err)
	}
}

// publishWithin publishes one message and fails the test if that takes
// longer than opDeadline or errors.
func publishWithin(t *testing.T, b broker.Broker, topic, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opDeadline)
	defer cancel()
	start := time.Now()
	if err := b.Publish(ctx, topic, &broker.Message{ID: id, Body: []byte(id)}); err != nil {
		t.Fatalf("publish %s after %v: %v", id, time.Since(start), err)
	}
}

// counter is a handler that counts distinct message IDs.
type counter struct {
	mu   sync.Mutex
	seen map[string]int
	more chan struct{}
}

func newCounter() *counter { return &counter{seen: make(map[string]int), more: make(chan struct{}, 1)} }

func (c *counter) handle(_ context.Context, d *broker.Delivery) error {
	c.mu.Lock()
	c.seen[d.ID]++
	c.mu.Unlock()
	select {
	case c.more <- struct{}{}:
	default:
	}
	return nil
}

func (c *counter) distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// waitFor waits until the counter has seen n distinct IDs.
func (c *counter) waitFor(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(waitBound)
	for c.distinct() < n {
		select {
		case <-c.more:
		case <-deadline:
			t.Fatalf("received %d of %d distinct messages within %v", c.distinct(), n, waitBound)
		}
	}
}

// Scenario 1, the FastStream bug: opening, using and closing broker B over
// and over never hangs or fails a publish on the long-lived broker A.
func testClosingOthersNeverHangsPublish(t *testing.T, be isolationBackend) {
	const iterations = 200
	topic := be.newTopic(t)
	a := mustOpen(t, be)
	defer mustClose(t, a)
	got := newCounter()
	sub, err := a.Subscribe(context.Background(), topic, got.handle, broker.Group(brokertest.RandomName("a")))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	for i := range iterations {
		b := mustOpen(t, be)
		publishWithin(t, b, topic, fmt.Sprintf("b-%d", i))
		mustClose(t, b)
		publishWithin(t, a, topic, fmt.Sprintf("a-%d", i))
	}
	// A's subscriber saw A's and B's messages (same topic, same server).
	got.waitFor(t, iterations)
}

// Scenario 2: closing A while eight goroutines publish on B costs B nothing.
func testCloseWhileOtherPublishes(t *testing.T, be isolationBackend) {
	const publishers, each = 8, 100
	topic := be.newTopic(t)
	a, b := mustOpen(t, be), mustOpen(t, be)
	defer mustClose(t, b)
	got := newCounter()
	sub, err := b.Subscribe(context.Background(), topic, got.handle, broker.Group(brokertest.RandomName("b")))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	// A is busy too: a subscription and a publisher of its own.
	if _, err := a.Subscribe(context.Background(), topic, newCounter().handle); err != nil {
		t.Fatal(err)
	}
	aDone := make(chan struct{})
	go func() {
		defer close(aDone)
		for i := 0; ; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), opDeadline)
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
				ctx, cancel := context.WithTimeout(context.Background(), opDeadline)
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
	closeCtx, cancel := context.WithTimeout(context.Background(), waitBound)
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
func testStuckInstanceClosesByContext(t *testing.T, be isolationBackend) {
	topic := be.newTopic(t)
	a, b := mustOpen(t, be), mustOpen(t, be)
	defer mustClose(t, b)
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
	got := newCounter()
	sub, err := b.Subscribe(context.Background(), topic, got.handle, broker.Group(brokertest.RandomName("b")))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	publishWithin(t, a, topic, "wedge")
	select {
	case <-stuck:
	case <-time.After(waitBound):
		t.Fatal("A's handler never started")
	}

	const closeDeadline = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), closeDeadline)
	defer cancel()
	start := time.Now()
	err = a.Close(ctx)
	if elapsed := time.Since(start); elapsed > closeDeadline+opDeadline {
		t.Errorf("Close of the stuck instance took %v with a %v ctx", elapsed, closeDeadline)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close of the stuck instance = %v, want an error wrapping DeadlineExceeded", err)
	}
	for i := range 50 {
		publishWithin(t, b, topic, fmt.Sprintf("b-%d", i))
	}
	got.waitFor(t, 50) // at least B's own (on a shared server "wedge" too)
}

// Scenario 4: A's subscription failing (its handler always errors, then its
// ctx is cancelled) and closing never stops B's subscription on the same
// topic.
func testSubscriptionEndIsLocal(t *testing.T, be isolationBackend) {
	topic := be.newTopic(t)
	a, b := mustOpen(t, be), mustOpen(t, be)
	defer mustClose(t, a)
	defer mustClose(t, b)
	failing := func(context.Context, *broker.Delivery) error { return errors.New("always failing") }
	actx, acancel := context.WithCancel(context.Background())
	defer acancel()
	aFail, err := a.Subscribe(actx, topic, failing, broker.Group(brokertest.RandomName("afail")))
	if err != nil {
		t.Fatal(err)
	}
	aClose, err := a.Subscribe(context.Background(), topic, newCounter().handle, broker.Group(brokertest.RandomName("aclose")))
	if err != nil {
		t.Fatal(err)
	}
	got := newCounter()
	sub, err := b.Subscribe(context.Background(), topic, got.handle, broker.Group(brokertest.RandomName("b")))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())

	for i := range 10 {
		publishWithin(t, b, topic, fmt.Sprintf("before-%d", i))
		publishWithin(t, a, topic, fmt.Sprintf("before-a-%d", i))
	}
	acancel()
	<-aFail.Done()
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	if err := aClose.Close(ctx); err != nil {
		t.Errorf("close A's subscription: %v", err)
	}
	for i := range 10 {
		publishWithin(t, b, topic, fmt.Sprintf("after-%d", i))
	}
	got.waitFor(t, 20) // at least B's own (on a shared server A's too)
	select {
	case <-sub.Done():
		t.Fatalf("B's subscription ended: %v", sub.Err())
	default:
	}
}
