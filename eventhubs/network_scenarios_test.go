package eventhubs_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
)

// dialFunc opens a broker the way one test's network needs (TLS, a custom
// endpoint, WebSockets), logging into logs.
type dialFunc func(t *testing.T, logs *logBuffer) *eventhubs.Broker

// openCS opens a broker from a connection string, closed at cleanup.
func openCS(t *testing.T, cs string, logs *logBuffer, opts ...eventhubs.Option) *eventhubs.Broker {
	t.Helper()
	opts = append([]eventhubs.Option{eventhubs.WithLogger(logs.logger()), eventhubs.WithName(t.Name())}, opts...)
	b, err := eventhubs.OpenURL(ctxT(t, 10*time.Second), cs, opts...)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
		if t.Failed() && testing.Verbose() {
			t.Logf("broker log:\n%s", logs)
		}
	})
	return b
}

// bodies records delivered bodies and content types by message ID.
type bodies struct {
	*seen
	mu  sync.Mutex
	got map[string]*broker.Message
}

func newBodies() *bodies { return &bodies{seen: newSeen(), got: map[string]*broker.Message{}} }

func (b *bodies) handle(ctx context.Context, d *broker.Delivery) error {
	b.mu.Lock()
	b.got[d.ID] = d.Message
	b.mu.Unlock()
	return b.seen.handle(ctx, d)
}

// roundTrip reads the hub's properties over $management, then publishes
// events (by key, by partition, plain) on one broker and receives them,
// body and content type intact, on another subscribed from the earliest
// position.
func roundTrip(t *testing.T, hub string, partitions int, dial dialFunc) {
	t.Helper()
	pubLogs, subLogs := &logBuffer{}, &logBuffer{}
	p := dial(t, pubLogs)
	s := dial(t, subLogs)
	props, err := p.HubProperties(ctxT(t, 10*time.Second), hub)
	if err != nil {
		t.Fatalf("hub properties: %v", err)
	}
	if len(props.PartitionIDs) != partitions {
		t.Errorf("hub properties list %d partitions, want %d", len(props.PartitionIDs), partitions)
	}
	got := newBodies()
	sub, err := s.Subscribe(ctxT(t, 10*time.Second), hub, got.handle, broker.StartAt(broker.Earliest()))
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	defer sub.Close(context.Background())
	var sent []*broker.Message
	for i := range 12 {
		m := &broker.Message{ID: fmt.Sprintf("m-%d", i), Body: []byte(fmt.Sprintf("body %d", i)), ContentType: "text/plain"}
		switch i % 3 {
		case 0:
			m.Key = fmt.Sprintf("key-%d", i%4)
		case 1:
			m.Headers = map[string]string{eventhubs.PartitionIDHeader: fmt.Sprint(i % partitions)}
		}
		sent = append(sent, m)
	}
	if err := p.Publish(ctxT(t, 10*time.Second), hub, sent...); err != nil {
		t.Fatalf("publish: %v", err)
	}
	got.waitFor(t, 10*time.Second, "every event received", func() bool { return got.distinct() == len(sent) })
	got.mu.Lock()
	defer got.mu.Unlock()
	for _, m := range sent {
		d := got.got[m.ID]
		if string(d.Body) != string(m.Body) || d.ContentType != m.ContentType {
			t.Errorf("%s: received body %q, content type %q; sent %q, %q", m.ID, d.Body, d.ContentType, m.Body, m.ContentType)
		}
		if pid := m.Headers[eventhubs.PartitionIDHeader]; pid != "" && d.Metadata.Partition != pid {
			t.Errorf("%s: sent to partition %s, received from %s", m.ID, pid, d.Metadata.Partition)
		}
	}
}

// idleEmulator is the emulator configuration of idleCloseRecovery: idle
// connections closed after 1 s, idle links detached after 0.5 s.
var idleEmulator = emulator.Config{IdleTimeout: time.Second, LinkIdleTimeout: 500 * time.Millisecond}

// idleCloseRecovery is TestIdleClose on another network: the emulator
// (configured as idleEmulator) closes the idle publisher's connection
// with amqp:connection:forced; the publisher logs it at info and rebuilds
// its connection lazily — exactly once — for the next Publish; a
// subscriber keeps receiving across the detaches and a forced close of
// its own connection.
func idleCloseRecovery(t *testing.T, e *emulator.Emulator, hub string, dial dialFunc) {
	t.Helper()
	pubLogs, subLogs := &logBuffer{}, &logBuffer{}
	p := dial(t, pubLogs)
	s := dial(t, subLogs)
	got := newSeen()
	sub, err := s.Subscribe(ctxT(t, 10*time.Second), hub, got.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	if err := p.Publish(ctxT(t, 5*time.Second), hub, &broker.Message{ID: "before"}); err != nil {
		t.Fatal(err)
	}
	idleClosed := func() int {
		return pubLogs.count("connection closed by peer", "level=INFO", "amqp:connection:forced")
	}
	for deadline := time.Now().Add(10 * time.Second); idleClosed() == 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if n := idleClosed(); n != 1 {
		t.Fatalf("publisher logged %d idle closes at info, want 1:\n%s", n, pubLogs)
	}
	if st := p.State(); st != broker.StateReconnecting {
		t.Errorf("publisher state after idle close = %v, want reconnecting (rebuilt lazily)", st)
	}
	start := time.Now()
	if err := p.Publish(ctxT(t, 5*time.Second), hub, &broker.Message{ID: "after"}); err != nil {
		t.Fatalf("publish after idle close: %v", err)
	}
	t.Logf("publish after idle close took %v", time.Since(start))
	if n := pubLogs.count("msg=reconnected"); n != 1 {
		t.Errorf("publisher logged %d reconnects, want exactly 1:\n%s", n, pubLogs)
	}
	if st := p.State(); st != broker.StateConnected {
		t.Errorf("publisher state after reconnect = %v, want connected", st)
	}
	got.waitFor(t, 10*time.Second, "both events received", func() bool { return got.has("before") && got.has("after") })

	e.Faults().CloseConnections("The connection was inactive for more than the allowed 1000 milliseconds and is closed by container 'test'.")
	for i := range 5 {
		if err := p.Publish(ctxT(t, 5*time.Second), hub, &broker.Message{ID: fmt.Sprintf("late-%d", i)}); err != nil {
			t.Fatalf("publish late-%d: %v", i, err)
		}
	}
	got.waitFor(t, 10*time.Second, "late events received", func() bool { return got.distinct() == 7 })
	// The close is posted to the emulator's connection loop: the late
	// events may all arrive before it takes effect, the reconnect after.
	waitLog(t, subLogs, 10*time.Second, "msg=reconnected")
	select {
	case <-sub.Done():
		t.Fatalf("subscription ended: %v", sub.Err())
	default:
	}
}

// waitLog waits until logs has a line containing every one of subs.
func waitLog(t *testing.T, logs *logBuffer, d time.Duration, subs ...string) {
	t.Helper()
	for deadline := time.Now().Add(d); logs.count(subs...) == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q within %v:\n%s", subs, d, logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
