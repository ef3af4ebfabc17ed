package eventhubs

import (
	"testing"
	"time"
)

// TestRenewalTime: a short-lived token is renewed half way through its
// life, so that the renewal's own round trip has as much time again; a
// long-lived one five minutes before it expires.
func TestRenewalTime(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	for _, tc := range []struct{ life, renewAfter time.Duration }{
		{3 * time.Second, 1500 * time.Millisecond},
		{2 * time.Second, time.Second},
		{10 * time.Minute, 5 * time.Minute},
		{time.Hour, 55 * time.Minute},
		{2 * time.Hour, 115 * time.Minute},
	} {
		if got := renewalTime(now, now.Add(tc.life)).Sub(now); got != tc.renewAfter {
			t.Errorf("token living %v renewed after %v, want %v", tc.life, got, tc.renewAfter)
		}
	}
}
