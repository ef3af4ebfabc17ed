package broker

import (
	"fmt"
	"time"
)

// SubscribeOption configures one Subscribe call.
type SubscribeOption func(*SubscribeConfig)

// SubscribeConfig is the resolved form of a Subscribe call's options.
// Adapters obtain it with driver.NewSubscribeConfig.
type SubscribeConfig struct {
	// Group names the subscription group ("" = a private subscription that
	// receives every message and disappears when closed).
	Group string
	// Concurrency is the number of handler calls that may run at once
	// (default 1).
	Concurrency int
	// Prefetch bounds how many messages the broker hands out before they
	// are acknowledged. Zero (the default) leaves it to the adapter, which
	// documents its default; see driver.PrefetchOr.
	Prefetch int
	// Start is where a new group starts reading, where the broker retains
	// history (default StartLatest).
	Start Position
	// MaxDeliveries bounds the failed deliveries of one message before it
	// is dead-lettered: 0 means DefaultMaxDeliveries, NoDeliveryLimit
	// turns dead-lettering off (see MaxDeliveries).
	MaxDeliveries int
	// DeadLetterTopic receives dead-lettered messages ("" means
	// DeadLetterTopic(topic)).
	DeadLetterTopic string
	// Redelivery delays redeliveries of failed messages (zero: at once);
	// see RedeliveryDelay and RedeliveryBackoff.
	Redelivery Backoff
	// DriverOptions holds adapter-specific options added with
	// WithDriverOption. An adapter rejects values it does not know.
	DriverOptions []any
}

// Group makes the subscription a member of group name: members of one group
// compete for messages (where Capabilities.CompetingConsumers) and
// different groups each receive every message.
func Group(name string) SubscribeOption {
	return func(c *SubscribeConfig) { c.Group = name }
}

// Concurrency lets up to n handler calls run at once. Values below 1 are
// rejected by Subscribe.
func Concurrency(n int) SubscribeOption {
	return func(c *SubscribeConfig) { c.Concurrency = n }
}

// Prefetch bounds the number of unacknowledged messages in flight to this
// subscription. Values below 1 are rejected by Subscribe.
func Prefetch(n int) SubscribeOption {
	return func(c *SubscribeConfig) { c.Prefetch = n }
}

// StartAt sets where a new group starts reading (brokers with
// Capabilities.Replay; others reject anything but StartLatest).
func StartAt(p Position) SubscribeOption {
	return func(c *SubscribeConfig) { c.Start = p }
}

// WithDriverOption passes an adapter-specific option (for example an Event
// Hubs owner level) through the portable Subscribe signature.
func WithDriverOption(v any) SubscribeOption {
	return func(c *SubscribeConfig) { c.DriverOptions = append(c.DriverOptions, v) }
}

// PositionKind says which field of a Position applies.
type PositionKind int

// Position kinds.
const (
	// StartLatest reads only messages published after the subscription
	// starts. It is the zero value.
	StartLatest PositionKind = iota
	// StartEarliest reads everything the broker still retains.
	StartEarliest
	// StartOffset reads from an Event Hubs offset.
	StartOffset
	// StartSequence reads from a sequence number.
	StartSequence
	// StartTime reads messages enqueued at or after a time.
	StartTime
)

// Position is where a new group starts reading.
type Position struct {
	// Kind says which start this is, and so which field below applies.
	Kind PositionKind
	// Offset for StartOffset.
	Offset string
	// Sequence for StartSequence.
	Sequence int64
	// Time for StartTime.
	Time time.Time
	// Inclusive makes StartOffset and StartSequence include the message at
	// the position itself; otherwise reading starts after it.
	Inclusive bool
}

// Latest is the position after the last message (the default).
func Latest() Position { return Position{Kind: StartLatest} }

// Earliest is the position of the oldest retained message.
func Earliest() Position { return Position{Kind: StartEarliest} }

// AtOffset is the position at (inclusive) or after an offset.
func AtOffset(offset string, inclusive bool) Position {
	return Position{Kind: StartOffset, Offset: offset, Inclusive: inclusive}
}

// AtSequence is the position at (inclusive) or after a sequence number.
func AtSequence(seq int64, inclusive bool) Position {
	return Position{Kind: StartSequence, Sequence: seq, Inclusive: inclusive}
}

// AtTime is the position of the first message enqueued at or after t.
func AtTime(t time.Time) Position { return Position{Kind: StartTime, Time: t} }

// Validate reports whether p is a start position a Subscribe can take;
// the error wraps ErrInvalidOption and names the problem.
func (p Position) Validate() error {
	switch p.Kind {
	case StartLatest, StartEarliest:
	case StartOffset:
		if p.Offset == "" {
			return fmt.Errorf("%w: start offset is empty", ErrInvalidOption)
		}
	case StartSequence:
		if p.Sequence < 0 {
			return fmt.Errorf("%w: start sequence %d is negative", ErrInvalidOption, p.Sequence)
		}
	case StartTime:
		if p.Time.IsZero() {
			return fmt.Errorf("%w: start time is zero", ErrInvalidOption)
		}
	default:
		return fmt.Errorf("%w: unknown start position kind %d", ErrInvalidOption, p.Kind)
	}
	return nil
}

// String describes the position for logs and errors.
func (p Position) String() string {
	incl := ">"
	if p.Inclusive {
		incl = ">="
	}
	switch p.Kind {
	case StartLatest:
		return "latest"
	case StartEarliest:
		return "earliest"
	case StartOffset:
		return "offset" + incl + p.Offset
	case StartSequence:
		return fmt.Sprintf("sequence%s%d", incl, p.Sequence)
	case StartTime:
		return "time>=" + p.Time.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("position(%d)", p.Kind)
}
