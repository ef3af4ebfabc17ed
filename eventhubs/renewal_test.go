package eventhubs_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
	"github.com/isobroker/broker/internal/testenv"
)

// TestTokenRenewalKeepsLinks: the emulator detaches an event link once no
// token covers it any more, as the service does. With 3-second tokens, a
// publisher and a subscriber run for three token lifetimes: the adapter
// puts fresh tokens before the old ones expire, so no link is ever
// detached for an expired token and every event arrives.
func TestTokenRenewalKeepsLinks(t *testing.T) {
	testenv.Slow(t, "runs for three 3-second token lifetimes")
	e := startEmulator(t, emulator.Config{IdleTimeout: -1})
	hub := newHub(t, e, 1)
	pubLogs, subLogs := &logBuffer{}, &logBuffer{}
	const ttl = 3 * time.Second
	p := open(t, e, pubLogs, eventhubs.WithTokenTTL(ttl))
	s := open(t, e, subLogs, eventhubs.WithTokenTTL(ttl))
	got := newSeen()
	sub, err := s.Subscribe(ctxT(t, 10*time.Second), hub, got.handle, broker.StartAt(broker.Earliest()))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(ctxT(t, 5*time.Second))

	n := 0
	for end := time.Now().Add(3 * ttl); time.Now().Before(end); n++ {
		if err := p.Publish(ctxT(t, 5*time.Second), hub, &broker.Message{ID: fmt.Sprint(n)}); err != nil {
			t.Fatalf("publish %d: %v", n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	got.waitFor(t, 10*time.Second, "every event received", func() bool { return got.distinct() == n })
	for name, logs := range map[string]*logBuffer{"publisher": pubLogs, "subscriber": subLogs} {
		if c := logs.count(emulator.CondUnauthorizedAccess); c != 0 {
			t.Errorf("%s: %d log lines name %s: a token expired before its renewal:\n%s", name, c, emulator.CondUnauthorizedAccess, logs)
		}
		if c := logs.count("token renewed"); c < 2 {
			t.Errorf("%s renewed its tokens %d times in three lifetimes, want at least 2", name, c)
		}
	}
}
