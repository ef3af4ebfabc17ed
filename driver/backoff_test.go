package driver_test

import (
	"errors"
	"math"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
)

// step is the capped step before retry attempt, Initial×2^(attempt−1) at
// most Max, computed in arbitrary precision.
func step(b broker.Backoff, attempt int) time.Duration {
	d := new(big.Int).Lsh(big.NewInt(int64(b.Initial)), uint(attempt-1))
	if d.Cmp(big.NewInt(int64(b.Max))) > 0 {
		return b.Max
	}
	return time.Duration(d.Int64())
}

// Every delay lies in [d/2, d] for the step d of its attempt, so no delay
// passes Max; the steps double from Initial until they reach Max.
func TestBackoffDelayBounds(t *testing.T) {
	for _, b := range []broker.Backoff{
		{Initial: 100 * time.Millisecond, Max: 10 * time.Second},
		{Initial: time.Millisecond, Max: time.Millisecond},
		{Initial: 3 * time.Nanosecond, Max: 1000 * time.Nanosecond},
		{Initial: time.Second, Max: time.Duration(math.MaxInt64)},
		{Initial: 1, Max: 1},
	} {
		for attempt := 1; attempt <= 40; attempt++ {
			d := step(b, attempt)
			lo, hi := d/2, d
			for range 200 {
				got := driver.BackoffDelay(b, attempt)
				if got < lo || got > hi {
					t.Fatalf("%+v attempt %d: delay %v outside [%v, %v]", b, attempt, got, lo, hi)
				}
				if got > b.Max {
					t.Fatalf("%+v attempt %d: delay %v exceeds Max", b, attempt, got)
				}
			}
		}
	}
	// The steps themselves: 100 ms, 200 ms, …, capped at 10 s from attempt 8.
	b := broker.Backoff{Initial: 100 * time.Millisecond, Max: 10 * time.Second}
	for attempt, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 7: 6400 * time.Millisecond, 8: 10 * time.Second, 40: 10 * time.Second} {
		if got := step(b, attempt); got != want {
			t.Errorf("step(%d) = %v, want %v", attempt, got, want)
		}
		maxSeen := time.Duration(0)
		for range 2000 {
			maxSeen = max(maxSeen, driver.BackoffDelay(b, attempt))
		}
		if maxSeen <= want*3/4 {
			t.Errorf("attempt %d: the largest of 2000 delays is %v; the step %v is not reached", attempt, maxSeen, want)
		}
	}
}

// Huge attempt numbers neither overflow nor loop long: the delay stays in
// [Max/2, Max].
func TestBackoffDelayHugeAttempt(t *testing.T) {
	for _, b := range []broker.Backoff{
		{Initial: 100 * time.Millisecond, Max: 10 * time.Second},
		{Initial: time.Duration(math.MaxInt64 / 3), Max: time.Duration(math.MaxInt64)},
		{Initial: time.Duration(math.MaxInt64), Max: time.Duration(math.MaxInt64)},
	} {
		for _, attempt := range []int{63, 64, 65, 1000, math.MaxInt32, math.MaxInt} {
			got := driver.BackoffDelay(b, attempt)
			if got < b.Max/2 || got > b.Max {
				t.Errorf("%+v attempt %d: delay %v outside [Max/2, Max]", b, attempt, got)
			}
		}
	}
}

// Edge inputs: attempt below 1 counts as 1; no Initial means no wait; a Max
// below Initial caps at Initial.
func TestBackoffDelayEdges(t *testing.T) {
	cases := []struct {
		name    string
		b       broker.Backoff
		attempt int
		lo, hi  time.Duration
	}{
		{"attempt 0 is attempt 1", broker.Backoff{Initial: 8 * time.Second, Max: time.Minute}, 0, 4 * time.Second, 8 * time.Second},
		{"negative attempt is attempt 1", broker.Backoff{Initial: 8 * time.Second, Max: time.Minute}, -5, 4 * time.Second, 8 * time.Second},
		{"zero Initial: no wait", broker.Backoff{Max: time.Minute}, 3, 0, 0},
		{"negative Initial: no wait", broker.Backoff{Initial: -time.Second, Max: time.Minute}, 3, 0, 0},
		{"Max below Initial caps at Initial", broker.Backoff{Initial: 2 * time.Second, Max: time.Second}, 5, time.Second, 2 * time.Second},
		{"zero Max caps at Initial", broker.Backoff{Initial: 2 * time.Second}, 5, time.Second, 2 * time.Second},
	}
	for _, c := range cases {
		for range 100 {
			if got := driver.BackoffDelay(c.b, c.attempt); got < c.lo || got > c.hi {
				t.Errorf("%s: BackoffDelay(%+v, %d) = %v, want in [%v, %v]", c.name, c.b, c.attempt, got, c.lo, c.hi)
				break
			}
		}
	}
}

// The delays are spread over [d/2, d], not fixed: two instances retrying
// together do not retry in step. Of 1000 draws over a 1 s-wide range,
// both halves get a fair share and nearly all are distinct.
func TestBackoffDelaySpread(t *testing.T) {
	b := broker.Backoff{Initial: 2 * time.Second, Max: 2 * time.Second}
	const n = 1000
	seen := make(map[time.Duration]bool, n)
	low := 0
	for range n {
		d := driver.BackoffDelay(b, 1)
		seen[d] = true
		if d < 1500*time.Millisecond {
			low++
		}
	}
	if len(seen) < n*9/10 {
		t.Errorf("%d distinct delays of %d: not random", len(seen), n)
	}
	if low < n/3 || low > n*2/3 {
		t.Errorf("%d of %d delays in the lower half of [1 s, 2 s]: not uniform", low, n)
	}
}

func TestResolveBackoff(t *testing.T) {
	def := broker.Backoff{Initial: 100 * time.Millisecond, Max: 10 * time.Second}
	ok := []struct {
		name   string
		in     broker.Backoff
		wanted broker.Backoff
	}{
		{"zero: the defaults", broker.Backoff{}, def},
		{"both set: kept", broker.Backoff{Initial: time.Second, Max: time.Minute}, broker.Backoff{Initial: time.Second, Max: time.Minute}},
		{"Initial alone", broker.Backoff{Initial: time.Second}, broker.Backoff{Initial: time.Second, Max: 10 * time.Second}},
		{"Initial alone above the default Max raises Max", broker.Backoff{Initial: 20 * time.Second}, broker.Backoff{Initial: 20 * time.Second, Max: 20 * time.Second}},
		{"Max alone", broker.Backoff{Max: time.Minute}, broker.Backoff{Initial: 100 * time.Millisecond, Max: time.Minute}},
		{"Max alone below the default Initial lowers Initial", broker.Backoff{Max: 50 * time.Millisecond}, broker.Backoff{Initial: 50 * time.Millisecond, Max: 50 * time.Millisecond}},
		{"Max equal to Initial", broker.Backoff{Initial: time.Second, Max: time.Second}, broker.Backoff{Initial: time.Second, Max: time.Second}},
	}
	for _, c := range ok {
		got, err := driver.ResolveBackoff("Backoff", c.in, def)
		if err != nil || got != c.wanted {
			t.Errorf("%s: ResolveBackoff(%+v) = %+v, %v; want %+v", c.name, c.in, got, err, c.wanted)
		}
	}
	bad := []struct {
		in   broker.Backoff
		want string
	}{
		{broker.Backoff{Initial: -time.Second}, "Backoff.Initial"},
		{broker.Backoff{Max: -time.Second}, "Backoff.Max"},
		{broker.Backoff{Initial: time.Minute, Max: time.Second}, "Backoff.Max 1s is below Backoff.Initial 1m0s"},
	}
	for _, c := range bad {
		_, err := driver.ResolveBackoff("Backoff", c.in, def)
		if !errors.Is(err, broker.ErrInvalidOption) || !strings.Contains(fmtErr(err), c.want) {
			t.Errorf("ResolveBackoff(%+v) = %v; want ErrInvalidOption naming %q", c.in, err, c.want)
		}
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestSleep: Sleep reports true once d has passed, and false as soon as
// stop is closed, however long d is.
func TestSleep(t *testing.T) {
	start := time.Now()
	if !driver.Sleep(10*time.Millisecond, make(chan struct{})) {
		t.Fatal("Sleep with an open stop = false")
	}
	if time.Since(start) < 10*time.Millisecond {
		t.Errorf("Sleep(10ms) returned after %v", time.Since(start))
	}
	stop := make(chan struct{})
	done := make(chan bool, 1)
	go func() { done <- driver.Sleep(time.Hour, stop) }()
	close(stop)
	select {
	case ok := <-done:
		if ok {
			t.Error("Sleep with stop closed = true")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Sleep(1h) did not return when stop was closed")
	}
}
