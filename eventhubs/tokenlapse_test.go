package eventhubs_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs/emulator"
)

// TestLapsedTokenRecovers: the emulator ends every token a publisher and a
// subscriber put, as the service does when a renewal comes too late (a
// paused process, a loaded machine), and detaches their links with
// amqp:unauthorized-access. The credentials are still good, so neither
// may fail: the next Publish puts a fresh token, re-attaches and succeeds
// within its ctx, and the subscription re-attaches and receives what
// follows, without ending.
func TestLapsedTokenRecovers(t *testing.T) {
	emuLogs := &logBuffer{}
	e := startEmulator(t, emulator.Config{Logger: slog.New(slog.NewTextHandler(emuLogs, nil))})
	hub := newHub(t, e, 1)
	pubLogs, subLogs := &logBuffer{}, &logBuffer{}
	p := open(t, e, pubLogs)
	s := open(t, e, subLogs)
	got := newSeen()
	sub, err := s.Subscribe(ctxT(t, 10*time.Second), hub, got.handle, broker.StartAt(broker.Earliest()))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(ctxT(t, 5*time.Second))
	if err := p.Publish(ctxT(t, 10*time.Second), hub, &broker.Message{ID: "before"}); err != nil {
		t.Fatal(err)
	}
	got.waitFor(t, 10*time.Second, "first event received", func() bool { return got.has("before") })

	e.Faults().ExpireTokens()
	got.waitFor(t, 10*time.Second, "both links detached for their tokens", func() bool {
		return emuLogs.count("links detached: token expired") >= 2
	})

	if err := p.Publish(ctxT(t, 10*time.Second), hub, &broker.Message{ID: "after"}); err != nil {
		t.Fatalf("publish after the token lapsed: %v", err)
	}
	got.waitFor(t, 10*time.Second, "event after the lapse received", func() bool { return got.has("after") })
	select {
	case <-sub.Done():
		t.Fatalf("subscription ended after the token lapsed: %v", sub.Err())
	default:
	}
	if c := pubLogs.count("publish retrying", emulator.CondUnauthorizedAccess); c != 1 {
		t.Errorf("publisher logged %d retries after the lapse, want 1:\n%s", c, pubLogs)
	}
	if c := subLogs.count("receiver detached; re-attaching", emulator.CondUnauthorizedAccess); c != 1 {
		t.Errorf("subscriber logged %d re-attaches after the lapse, want 1:\n%s", c, subLogs)
	}
}
