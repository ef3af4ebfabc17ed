package driver

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/isobroker/broker"
)

// BackoffDelay is the delay before retry attempt (1-based; below 1 counts
// as 1) under b, as broker.Backoff documents: uniformly random in
// [d/2, d], where d = b.Initial×2^(attempt−1) capped at b.Max. It never
// exceeds b.Max (or b.Initial, when Max is below it), never overflows
// however large attempt is, and returns 0 when b.Initial is not positive.
// b is expected resolved (ResolveBackoff). The randomness comes from
// math/rand/v2's top-level functions: safe for concurrent use, and no
// state of this package.
func BackoffDelay(b broker.Backoff, attempt int) time.Duration {
	if b.Initial <= 0 {
		return 0
	}
	hi := max(b.Max, b.Initial)
	d := b.Initial
	for i := 1; i < attempt && d < hi; i++ {
		if d > hi/2 {
			d = hi // doubling would pass the cap (or overflow)
			break
		}
		d *= 2
	}
	d = min(d, hi)
	return d/2 + rand.N(d-d/2+1)
}

// ResolveBackoff validates b and fills its zero fields from def, the
// adapter's defaults (both positive, def.Max ≥ def.Initial), as
// broker.Backoff documents: a zero Initial becomes min(def.Initial, b.Max)
// when b.Max is set, a zero Max becomes max(def.Max, b.Initial). A negative
// field, or an explicit Max below an explicit Initial, is an error
// wrapping broker.ErrInvalidOption that names the field (as field, e.g.
// "Backoff"); the adapter adds its own prefix.
func ResolveBackoff(field string, b, def broker.Backoff) (broker.Backoff, error) {
	switch {
	case b.Initial < 0:
		return broker.Backoff{}, fmt.Errorf("%w: %s.Initial %v is negative", broker.ErrInvalidOption, field, b.Initial)
	case b.Max < 0:
		return broker.Backoff{}, fmt.Errorf("%w: %s.Max %v is negative", broker.ErrInvalidOption, field, b.Max)
	case b.Initial > 0 && b.Max > 0 && b.Max < b.Initial:
		return broker.Backoff{}, fmt.Errorf("%w: %s.Max %v is below %s.Initial %v", broker.ErrInvalidOption, field, b.Max, field, b.Initial)
	}
	if b.Initial == 0 {
		b.Initial = def.Initial
		if b.Max > 0 {
			b.Initial = min(b.Initial, b.Max)
		}
	}
	if b.Max == 0 {
		b.Max = max(def.Max, b.Initial)
	}
	return b, nil
}

// Sleep waits d and reports true, or reports false as soon as stop is
// closed: the pause of a retry loop that must end with its owner.
func Sleep(d time.Duration, stop <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	}
}
