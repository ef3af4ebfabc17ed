package eventhubs_test

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
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
)

// seen records deliveries by ID.
type seen struct {
	mu   sync.Mutex
	ids  map[string]int
	more chan struct{}
}

func newSeen() *seen { return &seen{ids: map[string]int{}, more: make(chan struct{}, 1)} }

func (s *seen) handle(_ context.Context, d *broker.Delivery) error {
	s.mu.Lock()
	s.ids[d.ID]++
	s.mu.Unlock()
	select {
	case s.more <- struct{}{}:
	default:
	}
	return nil
}

func (s *seen) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}

func (s *seen) duplicates() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.ids {
		n += c - 1
	}
	return n
}

func (s *seen) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ids[id] > 0
}

// waitFor waits until ok holds.
func (s *seen) waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.After(d)
	for !ok() {
		select {
		case <-s.more:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%s: not reached within %v (%d distinct received)", what, d, s.distinct())
		}
	}
}

// TestIdleClose: the emulator closes idle connections after 1 s (and
// detaches links idle for 0.5 s, so that the connection has none): a
// publish after 2 s of silence succeeds on a rebuilt connection, with
// exactly one reconnect logged, the close logged at info; a subscriber
// keeps receiving across link detaches and across a forced connection
// close of its own.
func TestIdleClose(t *testing.T) {
	e := startEmulator(t, emulator.Config{IdleTimeout: time.Second, LinkIdleTimeout: 500 * time.Millisecond})
	hub := newHub(t, e, 2)
	pubLogs, subLogs := &logBuffer{}, &logBuffer{}
	p := open(t, e, pubLogs)
	s := open(t, e, subLogs)
	got := newSeen()
	sub, err := s.Subscribe(ctxT(t, 10*time.Second), hub, got.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())

	if err := p.Publish(ctxT(t, 5*time.Second), hub, &broker.Message{ID: "before"}); err != nil {
		t.Fatal(err)
	}
	// The close comes about 1 s after the connection's last frame: the
	// sender's detach at 0.5 s, or the release of the idle $cbs link
	// about 1 s after the token was put.
	idleClosed := func() int {
		return pubLogs.count("connection closed by peer", "level=INFO", "amqp:connection:forced")
	}
	for deadline := time.Now().Add(10 * time.Second); idleClosed() == 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if n := idleClosed(); n != 1 {
		t.Fatalf("publisher logged %d idle closes at info, want 1", n)
	}
	if st := p.State(); st != broker.StateReconnecting {
		t.Errorf("publisher state after idle close = %v, want reconnecting (rebuilt lazily)", st)
	}
	start := time.Now()
	if err := p.Publish(ctxT(t, 5*time.Second), hub, &broker.Message{ID: "after"}); err != nil {
		t.Fatalf("publish after idle close: %v", err)
	}
	t.Logf("publish after idle close took %v", time.Since(start))
	if n := pubLogs.count(`msg=reconnected`); n != 1 {
		t.Errorf("publisher logged %d reconnects, want exactly 1:\n%s", n, pubLogs)
	}
	if st := p.State(); st != broker.StateConnected {
		t.Errorf("publisher state after reconnect = %v, want connected", st)
	}
	got.waitFor(t, 10*time.Second, "both events received", func() bool { return got.has("before") && got.has("after") })

	// The subscriber's own connection closed the way the service closes
	// idle ones: it reconnects at once and keeps receiving.
	e.Faults().CloseConnections("The connection was inactive for more than the allowed 1000 milliseconds and is closed by container 'test'.")
	for i := range 5 {
		if err := p.Publish(ctxT(t, 5*time.Second), hub, &broker.Message{ID: fmt.Sprintf("late-%d", i)}); err != nil {
			t.Fatalf("publish late-%d: %v", i, err)
		}
	}
	got.waitFor(t, 10*time.Second, "late events received", func() bool { return got.distinct() == 7 })
	if n := subLogs.count(`msg=reconnected`); n < 1 {
		t.Errorf("subscriber logged no reconnect")
	}
	select {
	case <-sub.Done():
		t.Fatalf("subscription ended: %v", sub.Err())
	default:
	}
}

// TestForcedFaults: connection closes, link detaches and server-busy
// refusals injected during a 5,000-event run: every accepted event is
// received at least once.
func TestForcedFaults(t *testing.T) {
	e := startEmulator(t, emulator.Config{})
	hub := newHub(t, e, 4)
	pubLogs, subLogs := &logBuffer{}, &logBuffer{}
	p := open(t, e, pubLogs, eventhubs.WithRetry(eventhubs.RetryOptions{MaxAttempts: 10}), eventhubs.WithBackoff(broker.Backoff{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond}))
	s := open(t, e, subLogs, eventhubs.WithBackoff(broker.Backoff{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond}))
	got := newSeen()
	sub, err := s.Subscribe(ctxT(t, 10*time.Second), hub, got.handle, broker.StartAt(broker.Earliest()), broker.Prefetch(100))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(ctxT(t, 30*time.Second))

	// At most maxFaults faults (about 4 s of them), so that publishing
	// always gets through on a loaded machine; run bounds the whole test.
	const total, chunk, maxFaults = 5000, 50, 100
	run := ctxT(t, 4*time.Minute)
	stop := make(chan struct{})
	var faults sync.WaitGroup
	var injected [3]atomic.Int64
	faults.Go(func() {
		tick := time.NewTicker(40 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < maxFaults; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			switch i % 3 {
			case 0:
				e.Faults().CloseConnections("")
			case 1:
				e.Faults().DetachLinks(hub, emulator.CondLinkDetachForced, "The link is force detached (fault injection).")
			case 2:
				e.Faults().RefuseNextAttach(emulator.CondServerBusy, "")
			}
			injected[i%3].Add(1)
		}
	})
	start := time.Now()
	publishErrors := 0
	for i := 0; i < total; i += chunk {
		batch := make([]*broker.Message, chunk)
		for j := range batch {
			batch[j] = &broker.Message{ID: fmt.Sprintf("e-%d", i+j), Key: fmt.Sprintf("k%d", (i+j)%7), Body: []byte("payload")}
		}
		for {
			if run.Err() != nil {
				t.Fatalf("publish chunk %d: still failing when the test's time ran out", i/chunk)
			}
			err := p.Publish(ctxT(t, 20*time.Second), hub, batch...)
			if err == nil {
				break
			}
			if !broker.IsRetryable(err) {
				t.Fatalf("publish chunk %d: non-retryable %v", i/chunk, err)
			}
			publishErrors++ // republish: at least once
		}
	}
	close(stop)
	faults.Wait()
	got.waitFor(t, 60*time.Second, "every accepted event received", func() bool { return got.distinct() == total })
	t.Logf("%d events in %v; faults: %d connection closes, %d detaches, %d busy refusals; %d publish calls failed after retries; %d duplicates received",
		total, time.Since(start).Round(time.Millisecond), injected[0].Load(), injected[1].Load(), injected[2].Load(), publishErrors, got.duplicates())
	if n := subLogs.count("msg=reconnected"); n == 0 && injected[0].Load() > 0 {
		t.Errorf("subscriber never reconnected")
	}
	select {
	case <-sub.Done():
		t.Fatalf("subscription ended: %v", sub.Err())
	default:
	}
}

// TestStolenLink: a receiver with a higher owner level takes the
// partitions; the first reports ownership lost and stops, without
// re-attaching, and no goroutine is left.
func TestStolenLink(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		goleak.VerifyNone(t, ignore)
	})
	e := startEmulator(t, emulator.Config{})
	hub := newHub(t, e, 2)
	aLogs := &logBuffer{}
	a, b := open(t, e, aLogs), open(t, e, nil)

	var mu sync.Mutex
	lost := map[string]error{}
	first := newSeen()
	subA, err := a.Subscribe(ctxT(t, 10*time.Second), hub, first.handle,
		broker.WithDriverOption(eventhubs.OwnerLevel(1)),
		broker.WithDriverOption(eventhubs.OnOwnershipLost(func(id string, err error) {
			mu.Lock()
			lost[id] = err
			mu.Unlock()
		})))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Publish(ctxT(t, 5*time.Second), hub, &broker.Message{ID: "one"}); err != nil {
		t.Fatal(err)
	}
	first.waitFor(t, 10*time.Second, "first receiver gets events", func() bool { return first.has("one") })

	second := newSeen()
	subB, err := b.Subscribe(ctxT(t, 10*time.Second), hub, second.handle, broker.WithDriverOption(eventhubs.OwnerLevel(2)))
	if err != nil {
		t.Fatal(err)
	}
	defer subB.Close(context.Background())
	select {
	case <-subA.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("first subscription still running after both partitions were taken over")
	}
	err = subA.Err()
	if !errors.Is(err, broker.ErrOwnershipLost) || broker.IsRetryable(err) {
		t.Errorf("Err = %v (retryable %v), want a non-retryable ErrOwnershipLost", err, broker.IsRetryable(err))
	}
	mu.Lock()
	if len(lost) != 2 {
		t.Errorf("OnOwnershipLost called for %d partitions, want 2", len(lost))
	}
	for id, err := range lost {
		if !errors.Is(err, broker.ErrOwnershipLost) {
			t.Errorf("partition %s: %v, want ErrOwnershipLost", id, err)
		}
	}
	mu.Unlock()
	if n := aLogs.count("msg=\"receiver attached\""); n != 2 {
		t.Errorf("first broker attached %d receivers, want 2 (no re-attach after a steal)", n)
	}
	if n := aLogs.count("partition ownership lost", "level=INFO"); n != 2 {
		t.Errorf("logged %d ownership losses at info, want 2", n)
	}
	if err := a.Publish(ctxT(t, 5*time.Second), hub, &broker.Message{ID: "two"}); err != nil {
		t.Fatal(err)
	}
	second.waitFor(t, 10*time.Second, "new owner gets events", func() bool { return second.has("two") })
	if first.has("two") {
		t.Errorf("the old owner received an event after losing ownership")
	}
	// A lower owner level cannot take the partitions back.
	_, err = a.Subscribe(ctxT(t, 10*time.Second), hub, first.handle, broker.WithDriverOption(eventhubs.OwnerLevel(1)))
	if !errors.Is(err, broker.ErrOwnershipLost) {
		t.Errorf("subscribe with a lower owner level = %v, want ErrOwnershipLost", err)
	}
}
