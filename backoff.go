package broker

import "time"

// Backoff shapes the waits between an adapter's retries: reconnects,
// reopened channels and links, retried operations. Every adapter takes it
// as its Config.Backoff (and WithBackoff) and applies it the same way.
//
// The delay before retry n (1-based) is drawn uniformly from [d/2, d],
// where the step d is Initial×2^(n−1) capped at Max ("equal jitter"): a
// delay never exceeds Max, and instances that lost their server together
// do not retry in step.
//
// A zero field takes the adapter's default, never beyond the other field
// when that one is set (Initial alone above the default Max raises Max to
// it; Max alone below the default Initial lowers Initial to it). A
// negative field, or a Max below Initial, is refused by the adapter's Open,
// before anything is dialled, with an error wrapping ErrInvalidOption that
// names the field.
type Backoff struct {
	// Initial is the first step (the delay before retry 1 is drawn from
	// [Initial/2, Initial]).
	Initial time.Duration
	// Max caps every step, and so every delay.
	Max time.Duration
}
