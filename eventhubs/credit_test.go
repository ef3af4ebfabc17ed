package eventhubs_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
)

// TestCreditSizedToTheRoundTrip: without broker.Prefetch a partition
// receiver's credit is DefaultPrefetch nearby and PrefetchRate × the
// round trip far away (every frame 40 ms late: a session begin takes at
// least 40 ms, so at least 800 credits); an explicit Prefetch is kept at
// any distance.
func TestCreditSizedToTheRoundTrip(t *testing.T) {
	const delay = 40 * time.Millisecond
	e := startEmulator(t, emulator.Config{IdleTimeout: -1})
	hub := newHub(t, e, 1)
	credit := func(logs *logBuffer) int {
		t.Helper()
		for _, l := range strings.Split(logs.String(), "\n") {
			if !strings.Contains(l, "receiver attached") {
				continue
			}
			_, after, _ := strings.Cut(l, " credit=")
			n, err := strconv.Atoi(strings.Fields(after)[0])
			if err != nil {
				t.Fatalf("no credit in %q: %v", l, err)
			}
			return n
		}
		t.Fatalf("no receiver attached:\n%s", logs)
		return 0
	}
	subscribe := func(dialer eventhubs.ContextDialer, opts ...broker.SubscribeOption) int {
		logs := &logBuffer{}
		var bopts []eventhubs.Option
		if dialer != nil {
			bopts = append(bopts, eventhubs.WithDialer(dialer))
		}
		b := open(t, e, logs, bopts...)
		sub, err := b.Subscribe(ctxT(t, 30*time.Second), hub, func(context.Context, *broker.Delivery) error { return nil }, opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close(context.Background())
		return credit(logs)
	}
	if n := subscribe(nil); n != eventhubs.DefaultPrefetch {
		t.Errorf("credit nearby = %d, want DefaultPrefetch (%d)", n, eventhubs.DefaultPrefetch)
	}
	want := int(eventhubs.PrefetchRate * delay.Seconds())
	if n := subscribe(slowWrites{delay: delay}); n < want || n > eventhubs.MaxAutoPrefetch {
		t.Errorf("credit with every frame %v late = %d, want between %d and MaxAutoPrefetch (%d)", delay, n, want, eventhubs.MaxAutoPrefetch)
	}
	if n := subscribe(slowWrites{delay: delay}, broker.Prefetch(7)); n != 7 {
		t.Errorf("credit with broker.Prefetch(7) far away = %d, want 7", n)
	}
}
