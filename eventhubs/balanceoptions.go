package eventhubs

import (
	"fmt"
	"strconv"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs/checkpoint"
)

// Strategy selects how fast a load-balanced member claims partitions.
type Strategy int

const (
	// StrategyBalanced claims at most one partition per update interval
	// (like the Azure SDK's ProcessorStrategyBalanced): slower to converge,
	// but with the least churn. It is the default.
	StrategyBalanced Strategy = iota
	// StrategyGreedy claims, in one interval, every partition it needs to
	// reach its share: unowned and expired ones first, then partitions of
	// members above their share.
	StrategyGreedy
)

// String returns "balanced" or "greedy".
func (s Strategy) String() string {
	switch s {
	case StrategyBalanced:
		return "balanced"
	case StrategyGreedy:
		return "greedy"
	}
	return "strategy(" + strconv.Itoa(int(s)) + ")"
}

// Defaults of BalanceOptions; those of the update interval and the
// expiration are the Azure SDK Processor's.
const (
	// DefaultUpdateInterval is BalanceOptions.UpdateInterval's default.
	DefaultUpdateInterval = 10 * time.Second
	// DefaultOwnershipExpiration is BalanceOptions.OwnershipExpiration's
	// default.
	DefaultOwnershipExpiration = time.Minute
	// DefaultCheckpointEvery is BalanceOptions.CheckpointEvery's default.
	DefaultCheckpointEvery = 100
	// DefaultCheckpointInterval is BalanceOptions.CheckpointInterval's
	// default.
	DefaultCheckpointInterval = 5 * time.Second
	// DefaultStoreTimeout is BalanceOptions.StoreTimeout's default.
	DefaultStoreTimeout = 10 * time.Second
	// DefaultBalanceCloseTimeout is BalanceOptions.CloseTimeout's default.
	DefaultBalanceCloseTimeout = 10 * time.Second
)

// BalanceOptions configures a load-balanced subscription (see Balanced).
// The zero value is usable: every zero field takes its default.
type BalanceOptions struct {
	// OwnerID identifies this member in the ownership records (default: a
	// random id). Members of one consumer group need distinct ids; a
	// member restarted with its old id takes its own unexpired records
	// back at once. It must be printable ASCII (checkpoint.ValidValue).
	OwnerID string
	// Namespace is the namespace name written to the store (default: the
	// Broker's Config.Namespace). Members sharing a store with the Azure
	// SDK's Processor must use the Processor's fully qualified namespace.
	Namespace string
	// Strategy is StrategyBalanced (default) or StrategyGreedy.
	Strategy Strategy
	// UpdateInterval is how often the member lists ownership, renews its
	// claims and claims more partitions (default 10 s), with jitter in
	// [0.8, 1.3) like the SDK.
	UpdateInterval time.Duration
	// OwnershipExpiration is how long a claim lasts without renewal
	// (default 1 min); it must exceed UpdateInterval. After it, other
	// members may claim the partition (and take its receiver over).
	OwnershipExpiration time.Duration
	// CheckpointEvery writes a partition's checkpoint after this many
	// acknowledged events (default 100).
	CheckpointEvery int
	// CheckpointInterval writes the checkpoints of partitions with
	// unwritten acknowledged events at least this often (default 5 s).
	CheckpointInterval time.Duration
	// StoreTimeout bounds one balancing round's or checkpoint flush's
	// store calls (default 10 s).
	StoreTimeout time.Duration
	// CloseTimeout bounds the final checkpoints and the relinquishing of
	// claims when the subscription ends (default 10 s; also cut short
	// when the Close context ends).
	CloseTimeout time.Duration
}

// BalancedOption is the driver option made by Balanced.
type BalancedOption struct {
	store checkpoint.Store
	opts  BalanceOptions
}

// Balanced makes Subscribe join its consumer group (broker.Group) as one
// load-balanced member that coordinates with the other members through
// store, like the Azure SDK's Processor (and compatibly with it when both
// use the blob store):
//
//	sub, err := b.Subscribe(ctx, hub, h, broker.Group(cg),
//		broker.WithDriverOption(eventhubs.Balanced(store, eventhubs.BalanceOptions{})))
//
// Ownership: every UpdateInterval the member lists the group's ownership
// records, renews its claims (optimistic concurrency on the ETag) and
// claims more partitions until it holds its share: with P partitions and
// N members (those holding an unexpired claim, plus itself) every member
// ends up with ⌊P/N⌋ or ⌈P/N⌉. Claimable are partitions without a record,
// with an expired or relinquished record, or held by a member above its
// share (stealing). A claim opens an epoch receiver (owner level 0, or
// the OwnerLevel driver option), so the new owner takes the partition
// over at once.
//
// Hand-over: the previous owner's receiver is detached with
// amqp:link:stolen. It logs that at info, lets that partition's handler
// finish the event in hand, writes the partition's checkpoint, and drops
// the claim locally: it never re-attaches at once (no steal war). Only if
// the store still names it as the owner at its next update — the receiver
// that took over was not backed by a claim, for example that of a member
// attaching late for a claim it has lost since — does it take the
// partition back; if that happens twice in a row, it leaves the partition
// until its record expires. A member whose update finds the partition
// claimed by another stops the partition the same way. Events the
// receiver had prefetched before the takeover may still be handled until
// the takeover is noticed (at the latest at the next update).
//
// Checkpoints: an event whose handler returned nil (or that was
// dead-lettered, see Subscribe) advances its partition's checkpoint (offset
// and sequence number). Checkpoints are written every CheckpointEvery
// events or CheckpointInterval, on hand-over and on Close. A new owner
// starts after the partition's checkpoint, so a hand-over replays at most
// the events acknowledged since the last write. Without a checkpoint it
// starts at broker.StartAt's position; for the default "latest" the first
// owner of a partition pins the position and writes it as the first
// checkpoint (a partition that was empty, or already owned before without
// a checkpoint, is read from the earliest event instead, so that nothing
// is skipped).
//
// Close (of the subscription or the Broker) stops the receivers, waits
// for the handlers, writes the final checkpoints and relinquishes the
// claims, so that the other members take the partitions over at their
// next update instead of after expiry.
//
// Store failures are logged at warn and retried every interval. The
// member keeps reading the partitions it holds, also past the expiration
// of its claims: if another member can reach the store and claims one of
// them, its epoch receiver takes the partition over and this member lets
// it go. A fatal store error (unauthorized, missing container) in the
// first round fails Subscribe; a retryable one does not (the member
// starts with no partitions and retries).
//
// Subscribe returns a *BalancedSubscription after the first round (its
// claims made; receivers attach in the background). The Partitions driver
// option cannot be combined with Balanced. Store must not be nil.
func Balanced(store checkpoint.Store, opts BalanceOptions) BalancedOption {
	return BalancedOption{store: store, opts: opts}
}

// resolve validates o and fills in defaults.
func (o BalancedOption) resolve(b *Broker) (BalanceOptions, error) {
	v := o.opts
	bad := func(format string, args ...any) (BalanceOptions, error) {
		return v, fmt.Errorf("%w: Balanced: "+format, append([]any{broker.ErrInvalidOption}, args...)...)
	}
	if o.store == nil {
		return bad("the checkpoint store is nil")
	}
	if v.OwnerID == "" {
		v.OwnerID = randomID()
	}
	if !checkpoint.ValidValue(v.OwnerID) {
		return bad("owner id %q is not printable ASCII without surrounding spaces", v.OwnerID)
	}
	if v.Namespace == "" {
		v.Namespace = b.cfg.Namespace
	}
	if v.Strategy != StrategyBalanced && v.Strategy != StrategyGreedy {
		return bad("unknown strategy %d", int(v.Strategy))
	}
	for _, d := range []struct {
		name string
		p    *time.Duration
		def  time.Duration
	}{
		{"UpdateInterval", &v.UpdateInterval, DefaultUpdateInterval},
		{"OwnershipExpiration", &v.OwnershipExpiration, DefaultOwnershipExpiration},
		{"CheckpointInterval", &v.CheckpointInterval, DefaultCheckpointInterval},
		{"StoreTimeout", &v.StoreTimeout, DefaultStoreTimeout},
		{"CloseTimeout", &v.CloseTimeout, DefaultBalanceCloseTimeout},
	} {
		if *d.p < 0 {
			return bad("%s %v is negative", d.name, *d.p)
		}
		if *d.p == 0 {
			*d.p = d.def
		}
	}
	if v.OwnershipExpiration <= v.UpdateInterval {
		return bad("OwnershipExpiration %v must exceed UpdateInterval %v", v.OwnershipExpiration, v.UpdateInterval)
	}
	if v.CheckpointEvery < 0 {
		return bad("CheckpointEvery %d is negative", v.CheckpointEvery)
	}
	if v.CheckpointEvery == 0 {
		v.CheckpointEvery = DefaultCheckpointEvery
	}
	return v, nil
}
