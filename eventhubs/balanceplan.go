package eventhubs

import (
	"math/rand/v2"
	"slices"
	"time"

	"github.com/isobroker/broker/eventhubs/checkpoint"
)

// The assignment plan of a load-balanced member: from a snapshot of the
// ownership records and of what the member holds, which claims to renew
// and which partitions to claim or steal. It is pure — no store, no
// clock, no logging, no shared random source: the balancer passes its
// own *rand.Rand, and the round carries the plan out.

// claimKind says why a partition was claimable.
type claimKind string

const (
	claimUnowned      claimKind = "unowned"
	claimExpired      claimKind = "expired"
	claimRelinquished claimKind = "relinquished"
	claimOwnRecord    claimKind = "own record"
	claimSteal        claimKind = "steal"
)

// candidate is a partition this member may claim.
type candidate struct {
	o      checkpoint.Ownership // the record as listed (ETag), or a new one
	kind   claimKind
	from   string // previous owner
	record bool   // a record existed
}

// balancePlan is the outcome of one look at the ownership records.
type balancePlan struct {
	renew   []checkpoint.Ownership // our claims, with their current ETag
	reclaim []candidate            // our records we do not hold: claimed with the renewals
	claim   []candidate            // partitions to claim now
	lost    map[string]string      // held partitions another member claimed: id → owner
	owners  int                    // members counted (with us)
	share   int                    // the most partitions we aim for now
}

// stealRecord notes when a partition's receiver was last taken over, and
// how often in a row (takeovers less than an expiration apart).
type stealRecord struct {
	at    time.Time
	times int
}

// holding is the state of a partition whose goroutine runs on this member.
type holding uint8

const (
	// holdClaimed: claimed and read by this member.
	holdClaimed holding = iota + 1
	// holdEnding: dropped by the balancer or taken over by another
	// receiver; its goroutine is still ending.
	holdEnding
)

// planInput is everything the plan decides from.
type planInput struct {
	me                    string // this member's owner id
	namespace, hub, group string // of records made for partitions that have none
	partitions            []string
	strategy              Strategy
	expiration            time.Duration // BalanceOptions.OwnershipExpiration
	now                   time.Time
	records               []checkpoint.Ownership // as listed from the store
	held                  map[string]holding     // partitions whose goroutine runs here
	stolen                map[string]stealRecord // partitions whose receiver was taken over
}

// planBalance decides, from the listed records, which claims to renew and
// which partitions to claim (the Azure SDK Processor's rules): with P
// partitions and N owners, everyone's minimum is ⌊P/N⌋; an owner may keep
// one more when P%N > 0 and we already have the minimum. Free partitions
// (unowned, relinquished, expired) come before steals from members above
// that share; rng picks among them. It reads in and changes nothing in it.
func planBalance(in planInput, rng *rand.Rand) balancePlan {
	me := in.me
	pl := balancePlan{lost: map[string]string{}}
	known := make(map[string]bool, len(in.partitions))
	for _, id := range in.partitions {
		known[id] = true
	}
	seen := map[string]bool{}
	byOwner := map[string][]checkpoint.Ownership{me: nil}
	var free []candidate
	for _, o := range in.records {
		if !known[o.PartitionID] {
			continue
		}
		seen[o.PartitionID] = true
		h := in.held[o.PartitionID]
		expired := in.now.Sub(o.LastModified) > in.expiration
		switch {
		case h == holdEnding:
			// Dropped or stolen, its goroutine still ending: never ours to
			// renew or claim now, but another member's if it says so.
			if o.OwnerID != "" && o.OwnerID != me && !expired {
				byOwner[o.OwnerID] = append(byOwner[o.OwnerID], o)
			}
		case h == holdClaimed:
			if o.OwnerID != me {
				pl.lost[o.PartitionID] = o.OwnerID
				continue
			}
			o.OwnerID = me
			pl.renew = append(pl.renew, o)
			byOwner[me] = append(byOwner[me], o)
		case o.OwnerID == "":
			free = append(free, candidate{o: o, kind: claimRelinquished, record: true})
		case expired:
			free = append(free, candidate{o: o, kind: claimExpired, from: o.OwnerID, record: true})
		case o.OwnerID == me:
			// Ours in the store, but not held: an earlier run of this
			// owner id, or a partition whose receiver was taken over by
			// a receiver the store does not back (a member attaching
			// late for a claim it has lost since). Take it back with the
			// renewals — unless that already happened once and it was
			// taken over again: then leave it until the record expires,
			// rather than fight.
			if st, ok := in.stolen[o.PartitionID]; ok && st.times > 1 && in.now.Sub(st.at) < in.expiration {
				continue
			}
			pl.reclaim = append(pl.reclaim, candidate{o: o, kind: claimOwnRecord, record: true})
			byOwner[me] = append(byOwner[me], o)
		default:
			byOwner[o.OwnerID] = append(byOwner[o.OwnerID], o)
		}
	}
	for _, id := range in.partitions {
		if seen[id] {
			continue
		}
		o := checkpoint.Ownership{Namespace: in.namespace, EventHub: in.hub, ConsumerGroup: in.group, PartitionID: id}
		if h := in.held[id]; h != 0 {
			if h == holdClaimed { // our record vanished: recreate it
				o.OwnerID = me
				pl.renew = append(pl.renew, o)
				byOwner[me] = append(byOwner[me], o)
			}
			continue
		}
		free = append(free, candidate{o: o, kind: claimUnowned})
	}

	p, n := len(in.partitions), len(byOwner)
	mine := len(byOwner[me])
	minShare := p / n
	maxAllowed := minShare
	if p%n > 0 && mine >= minShare {
		maxAllowed++
	}
	pl.owners, pl.share = n, maxAllowed
	want := maxAllowed - mine
	if want <= 0 {
		return pl
	}
	if in.strategy == StrategyBalanced {
		want = 1
	}
	var above []candidate
	for owner, recs := range byOwner {
		if owner != me && len(recs) > maxAllowed {
			for _, o := range recs {
				if in.held[o.PartitionID] != 0 {
					continue // ours, still ending: not claimable until its goroutine ended
				}
				above = append(above, candidate{o: o, kind: claimSteal, from: owner, record: true})
			}
		}
	}
	// A fixed order before the shuffle (not the map's), so that a seeded
	// rng makes the same plan again.
	slices.SortFunc(above, func(a, b candidate) int { return compareIDs(a.o.PartitionID, b.o.PartitionID) })
	rng.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
	rng.Shuffle(len(above), func(i, j int) { above[i], above[j] = above[j], above[i] })
	for _, c := range append(free, above...) {
		if len(pl.claim) == want {
			break
		}
		c.o.OwnerID = me
		pl.claim = append(pl.claim, c)
	}
	return pl
}
