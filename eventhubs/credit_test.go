package eventhubs_test

import (
	"context"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
)

// TestCreditSizedToTheRoundTrip: without broker.Prefetch a partition
// receiver's credit follows the documented rule, max(DefaultPrefetch,
// PrefetchRate × the session begin's round trip) up to MaxAutoPrefetch:
// nearby that is DefaultPrefetch (unless the machine made the begin
// slower than 15 ms, which the rule then follows), and with every frame
// 40 ms late (a begin of at least 40 ms) at least 800. An explicit
// Prefetch is kept at any distance.
func TestCreditSizedToTheRoundTrip(t *testing.T) {
	const delay = 40 * time.Millisecond
	e := startEmulator(t, emulator.Config{IdleTimeout: -1})
	hub := newHub(t, e, 1)
	// attached reads the credit and the measured round trip off the
	// receiver's "receiver attached" log line.
	attached := func(logs *logBuffer) (int, time.Duration) {
		t.Helper()
		for _, l := range strings.Split(logs.String(), "\n") {
			if !strings.Contains(l, "receiver attached") {
				continue
			}
			_, c, _ := strings.Cut(l, " credit=")
			_, r, _ := strings.Cut(l, " round_trip=")
			n, err1 := strconv.Atoi(strings.Fields(c + " ")[0])
			rtt, err2 := time.ParseDuration(strings.Fields(r + " ")[0])
			if err1 != nil || err2 != nil {
				t.Fatalf("no credit or round trip in %q: %v %v", l, err1, err2)
			}
			return n, rtt
		}
		t.Fatalf("no receiver attached:\n%s", logs)
		return 0, 0
	}
	subscribe := func(dialer eventhubs.ContextDialer, opts ...broker.SubscribeOption) (int, time.Duration) {
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
		return attached(logs)
	}
	// rule is the documented credit for a measured round trip.
	rule := func(rtt time.Duration) int {
		n := int(math.Ceil(rtt.Seconds() * eventhubs.PrefetchRate))
		return max(eventhubs.DefaultPrefetch, min(n, eventhubs.MaxAutoPrefetch))
	}
	n, rtt := subscribe(nil)
	if n != rule(rtt) {
		t.Errorf("credit nearby = %d for a round trip of %v, want %d", n, rtt, rule(rtt))
	}
	n, rtt = subscribe(slowWrites{delay: delay})
	if rtt < delay {
		t.Fatalf("session begin took %v with every frame %v late", rtt, delay)
	}
	if want := int(eventhubs.PrefetchRate * delay.Seconds()); n < want || n != rule(rtt) {
		t.Errorf("credit with every frame %v late = %d (round trip %v), want %d and at least %d", delay, n, rtt, rule(rtt), want)
	}
	if n, _ := subscribe(slowWrites{delay: delay}, broker.Prefetch(7)); n != 7 {
		t.Errorf("credit with broker.Prefetch(7) far away = %d, want 7", n)
	}
}
