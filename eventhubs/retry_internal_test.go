package eventhubs

import (
	"testing"
	"time"
)

// TestRetryDelay: the one rule of the bounded retry loops (management
// reads and Publish).
func TestRetryDelay(t *testing.T) {
	cfg, err := Config{Namespace: "ns.example", KeyName: "k", Key: "v", Retry: RetryOptions{MaxAttempts: 2}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	b := &Broker{cfg: cfg}
	cases := []struct {
		attempt int
		act     action
		again   bool
		waits   bool
	}{
		{0, actFatal, false, false},
		{0, actStolen, false, false},
		{0, actContext, false, false},
		{0, actReconnect, true, false}, // a lost connection is rebuilt at once
		{0, actRelink, true, false},    // and so is a lost link
		{0, actRetry, true, true},      // busy: back off even the first time
		{1, actReconnect, true, true},
		{1, actRetry, true, true},
		{2, actRetry, false, false}, // MaxAttempts retries have run
		{2, actReconnect, false, false},
	}
	for _, c := range cases {
		d, again := b.retryDelay(c.attempt, c.act)
		if again != c.again || (d > 0) != c.waits {
			t.Errorf("retryDelay(%d, %v) = %v, %t; want retry %t, a wait %t", c.attempt, c.act, d, again, c.again, c.waits)
		}
		if d > time.Minute {
			t.Errorf("retryDelay(%d, %v) = %v: above any configured cap", c.attempt, c.act, d)
		}
	}
}
