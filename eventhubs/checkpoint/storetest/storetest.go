// Package storetest is the conformance suite every checkpoint.Store passes.
//
// An implementation runs it from a test:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) checkpoint.Store { return newMyStore(t) })
//	}
//
// Each subtest calls newStore once and uses names (namespace, event hub,
// consumer group) no other subtest uses, so newStore may return the same
// store every time, or a fresh one.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs/checkpoint"
)

// ClockTolerance is how far a store's LastModified may lie outside the
// interval of the call that set it. Blob storage reports whole seconds.
const ClockTolerance = 3 * time.Second

// callTimeout bounds every store call of the suite.
const callTimeout = 30 * time.Second

// Run runs the whole suite as subtests of t.
func Run(t *testing.T, newStore func(t *testing.T) checkpoint.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s checkpoint.Store, g group)
	}{
		{"ClaimNew", testClaimNew},
		{"ClaimExistingWithoutETagLoses", testClaimExistingWithoutETag},
		{"Renew", testRenew},
		{"StaleETagLoses", testStaleETag},
		{"UnknownETagLoses", testUnknownETag},
		{"Steal", testSteal},
		{"Relinquish", testRelinquish},
		{"MixedBatch", testMixedBatch},
		{"ListOwnership", testListOwnership},
		{"Checkpoints", testCheckpoints},
		{"InvalidInput", testInvalidInput},
		{"CanceledContext", testCanceledContext},
		{"ConcurrentClaimers", testConcurrentClaimers},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			if s == nil {
				t.Fatal("newStore returned nil")
			}
			tc.fn(t, s, newGroup())
		})
	}
}

// group is a consumer group with names unique to one subtest.
type group struct{ ns, hub, cg string }

func newGroup() group {
	var b [6]byte
	_, _ = rand.Read(b[:])
	suffix := hex.EncodeToString(b[:])
	return group{ns: "ns-" + suffix + ".servicebus.windows.net", hub: "hub-" + suffix, cg: "$Default"}
}

func (g group) own(pid, owner, etag string) checkpoint.Ownership {
	return checkpoint.Ownership{Namespace: g.ns, EventHub: g.hub, ConsumerGroup: g.cg, PartitionID: pid, OwnerID: owner, ETag: etag}
}

func (g group) cp(pid, offset string, seq int64) checkpoint.Checkpoint {
	return checkpoint.Checkpoint{Namespace: g.ns, EventHub: g.hub, ConsumerGroup: g.cg, PartitionID: pid, Offset: offset, SequenceNumber: seq}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return ctx
}

// claim claims and fails the test on error.
func claim(t *testing.T, s checkpoint.Store, claims ...checkpoint.Ownership) []checkpoint.Ownership {
	t.Helper()
	got, err := s.ClaimOwnership(ctxFor(t), claims)
	if err != nil {
		t.Fatalf("ClaimOwnership: %v", err)
	}
	return got
}

// claimOne claims one partition and requires it to be won.
func claimOne(t *testing.T, s checkpoint.Store, c checkpoint.Ownership) checkpoint.Ownership {
	t.Helper()
	start := time.Now()
	got := claim(t, s, c)
	end := time.Now()
	if len(got) != 1 {
		t.Fatalf("claim of partition %s by %q with etag %q: won %d claims, want 1", c.PartitionID, c.OwnerID, c.ETag, len(got))
	}
	o := got[0]
	if o.Namespace != c.Namespace || o.EventHub != c.EventHub || o.ConsumerGroup != c.ConsumerGroup || o.PartitionID != c.PartitionID || o.OwnerID != c.OwnerID {
		t.Fatalf("claim returned %+v for claim %+v", o, c)
	}
	if o.ETag == "" || o.ETag == c.ETag {
		t.Fatalf("claim returned etag %q (claimed with %q); want a new non-empty etag", o.ETag, c.ETag)
	}
	checkTime(t, o.LastModified, start, end)
	return o
}

// claimLost claims and requires the claim to be skipped.
func claimLost(t *testing.T, s checkpoint.Store, c checkpoint.Ownership) {
	t.Helper()
	if got := claim(t, s, c); len(got) != 0 {
		t.Fatalf("claim of partition %s by %q with etag %q won (%+v); want it skipped as a lost race", c.PartitionID, c.OwnerID, c.ETag, got)
	}
}

func checkTime(t *testing.T, got, start, end time.Time) {
	t.Helper()
	if got.Before(start.Add(-ClockTolerance)) || got.After(end.Add(ClockTolerance)) {
		t.Fatalf("LastModified %v not within the call's interval [%v, %v] (tolerance %v)", got, start, end, ClockTolerance)
	}
}

func listOwn(t *testing.T, s checkpoint.Store, g group) []checkpoint.Ownership {
	t.Helper()
	got, err := s.ListOwnership(ctxFor(t), g.ns, g.hub, g.cg)
	if err != nil {
		t.Fatalf("ListOwnership: %v", err)
	}
	return got
}

func listCps(t *testing.T, s checkpoint.Store, g group) []checkpoint.Checkpoint {
	t.Helper()
	got, err := s.ListCheckpoints(ctxFor(t), g.ns, g.hub, g.cg)
	if err != nil {
		t.Fatalf("ListCheckpoints: %v", err)
	}
	return got
}

// requireOwnership checks that the listed records are exactly want (owner,
// ETag, partition), in order, and that LastModified matches to the second.
func requireOwnership(t *testing.T, got []checkpoint.Ownership, want ...checkpoint.Ownership) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("ListOwnership returned %d records %+v, want %d %+v", len(got), got, len(want), want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Namespace != w.Namespace || g.EventHub != w.EventHub || g.ConsumerGroup != w.ConsumerGroup ||
			g.PartitionID != w.PartitionID || g.OwnerID != w.OwnerID || g.ETag != w.ETag {
			t.Fatalf("ListOwnership record %d = %+v, want %+v", i, g, w)
		}
		if d := g.LastModified.Sub(w.LastModified); d < -time.Second || d > time.Second {
			t.Fatalf("ListOwnership record %d LastModified %v, claim returned %v", i, g.LastModified, w.LastModified)
		}
	}
}

func testClaimNew(t *testing.T, s checkpoint.Store, g group) {
	if got := listOwn(t, s, g); len(got) != 0 {
		t.Fatalf("fresh group lists %d ownerships, want 0", len(got))
	}
	o := claimOne(t, s, g.own("0", "member-a", ""))
	requireOwnership(t, listOwn(t, s, g), o)
}

func testClaimExistingWithoutETag(t *testing.T, s checkpoint.Store, g group) {
	o := claimOne(t, s, g.own("0", "member-a", ""))
	claimLost(t, s, g.own("0", "member-b", ""))
	requireOwnership(t, listOwn(t, s, g), o)
}

func testRenew(t *testing.T, s checkpoint.Store, g group) {
	o1 := claimOne(t, s, g.own("0", "member-a", ""))
	o2 := claimOne(t, s, o1)
	if o2.LastModified.Before(o1.LastModified) {
		t.Fatalf("renewal moved LastModified back: %v then %v", o1.LastModified, o2.LastModified)
	}
	o3 := claimOne(t, s, o2)
	requireOwnership(t, listOwn(t, s, g), o3)
}

func testStaleETag(t *testing.T, s checkpoint.Store, g group) {
	o1 := claimOne(t, s, g.own("0", "member-a", ""))
	o2 := claimOne(t, s, o1) // renewed: o1's ETag is stale now
	stale := o1
	stale.OwnerID = "member-b"
	claimLost(t, s, stale)
	claimLost(t, s, o1) // also for the owner itself
	requireOwnership(t, listOwn(t, s, g), o2)
}

func testUnknownETag(t *testing.T, s checkpoint.Store, g group) {
	// An ETag for a record that does not exist cannot match.
	o := claimOne(t, s, g.own("0", "member-a", ""))
	c := g.own("1", "member-a", o.ETag)
	claimLost(t, s, c)
	requireOwnership(t, listOwn(t, s, g), o)
}

func testSteal(t *testing.T, s checkpoint.Store, g group) {
	a := claimOne(t, s, g.own("0", "member-a", ""))
	// b read the record (ListOwnership) and claims it with its ETag.
	listed := listOwn(t, s, g)
	steal := listed[0]
	steal.OwnerID = "member-b"
	b := claimOne(t, s, steal)
	// a's renewal with its old ETag loses: a learns it no longer owns it.
	claimLost(t, s, a)
	requireOwnership(t, listOwn(t, s, g), b)
}

func testRelinquish(t *testing.T, s checkpoint.Store, g group) {
	a := claimOne(t, s, g.own("0", "member-a", ""))
	rel := a
	rel.OwnerID = ""
	r := claimOne(t, s, rel)
	listed := listOwn(t, s, g)
	requireOwnership(t, listed, r)
	if listed[0].OwnerID != "" {
		t.Fatalf("relinquished record lists owner %q", listed[0].OwnerID)
	}
	// Anyone may claim it at once, with the relinquished record's ETag.
	next := listed[0]
	next.OwnerID = "member-b"
	b := claimOne(t, s, next)
	requireOwnership(t, listOwn(t, s, g), b)
}

func testMixedBatch(t *testing.T, s checkpoint.Store, g group) {
	taken := claimOne(t, s, g.own("1", "member-b", ""))
	got := claim(t, s,
		g.own("0", "member-a", ""),
		g.own("1", "member-a", ""), // exists: lost
		g.own("2", "member-a", ""),
		g.own("3", "member-a", `"0xNOPE"`), // no such record: lost
	)
	if len(got) != 2 || got[0].PartitionID != "0" || got[1].PartitionID != "2" {
		t.Fatalf("batch won %+v, want partitions 0 and 2 in order", got)
	}
	requireOwnership(t, listOwn(t, s, g), got[0], taken, got[1])
}

func testListOwnership(t *testing.T, s checkpoint.Store, g group) {
	var want []checkpoint.Ownership
	for _, pid := range []string{"0", "1", "10", "2"} { // string order
		want = append(want, claimOne(t, s, g.own(pid, "member-"+pid, "")))
	}
	// Other groups, hubs and namespaces are separate.
	others := []group{
		{ns: g.ns, hub: g.hub, cg: "other-cg"},
		{ns: g.ns, hub: g.hub + "-other", cg: g.cg},
		{ns: "other-" + g.ns, hub: g.hub, cg: g.cg},
	}
	var otherOwn []checkpoint.Ownership
	for _, o := range others {
		otherOwn = append(otherOwn, claimOne(t, s, o.own("0", "member-x", "")))
	}
	requireOwnership(t, listOwn(t, s, g), want...)
	for i, o := range others {
		requireOwnership(t, listOwn(t, s, o), otherOwn[i])
	}
	// A group with a common name prefix is separate too.
	prefix := group{ns: g.ns, hub: g.hub, cg: g.cg[:len(g.cg)-1]}
	if got := listOwn(t, s, prefix); len(got) != 0 {
		t.Fatalf("group %q lists %d ownerships of group %q", prefix.cg, len(got), g.cg)
	}
}

func requireCheckpoints(t *testing.T, got []checkpoint.Checkpoint, want ...checkpoint.Checkpoint) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("ListCheckpoints returned %d checkpoints %+v, want %d %+v", len(got), got, len(want), want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ListCheckpoints[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func setCp(t *testing.T, s checkpoint.Store, cp checkpoint.Checkpoint) {
	t.Helper()
	if err := s.SetCheckpoint(ctxFor(t), cp); err != nil {
		t.Fatalf("SetCheckpoint(%+v): %v", cp, err)
	}
}

func testCheckpoints(t *testing.T, s checkpoint.Store, g group) {
	if got := listCps(t, s, g); len(got) != 0 {
		t.Fatalf("fresh group lists %d checkpoints, want 0", len(got))
	}
	c0 := g.cp("0", "4096", 12)
	c1 := g.cp("1", "0", 0)
	c10 := g.cp("10", "1:2048:77", math.MaxInt64) // any offset string; the largest sequence number
	setCp(t, s, c0)
	setCp(t, s, c10)
	setCp(t, s, c1)
	requireCheckpoints(t, listCps(t, s, g), c0, c1, c10)

	// Overwrite.
	c0 = g.cp("0", "8192", 40)
	setCp(t, s, c0)
	requireCheckpoints(t, listCps(t, s, g), c0, c1, c10)

	// Other groups are separate, and ownership records are not checkpoints.
	other := group{ns: g.ns, hub: g.hub, cg: "other-cg"}
	oc := other.cp("0", "1", 1)
	setCp(t, s, oc)
	claimOne(t, s, g.own("5", "member-a", ""))
	requireCheckpoints(t, listCps(t, s, g), c0, c1, c10)
	requireCheckpoints(t, listCps(t, s, other), oc)
}

func testInvalidInput(t *testing.T, s checkpoint.Store, g group) {
	ctx := ctxFor(t)
	isInvalid := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, broker.ErrInvalidOption) {
			t.Fatalf("%s: err = %v, want broker.ErrInvalidOption", what, err)
		}
		if broker.IsRetryable(err) {
			t.Fatalf("%s: err %v is retryable", what, err)
		}
	}
	good := g.own("0", "member-a", "")
	bad := []checkpoint.Ownership{
		{EventHub: g.hub, ConsumerGroup: g.cg, PartitionID: "0"},
		{Namespace: g.ns, ConsumerGroup: g.cg, PartitionID: "0"},
		{Namespace: g.ns, EventHub: g.hub, PartitionID: "0"},
		{Namespace: g.ns, EventHub: g.hub, ConsumerGroup: g.cg},
		g.own("a/b", "member-a", ""),
		{Namespace: g.ns, EventHub: "x/y", ConsumerGroup: g.cg, PartitionID: "0"},
		g.own("0", "membré", ""),
		g.own("0", " member-a", ""),
		g.own("0", "member\na", ""),
	}
	for _, b := range bad {
		got, err := s.ClaimOwnership(ctx, []checkpoint.Ownership{good, b})
		isInvalid("ClaimOwnership", err)
		if len(got) != 0 {
			t.Fatalf("ClaimOwnership with an invalid claim won %+v", got)
		}
	}
	if got := listOwn(t, s, g); len(got) != 0 {
		t.Fatalf("a batch with an invalid claim wrote %+v", got)
	}
	_, err := s.ListOwnership(ctx, g.ns, "", g.cg)
	isInvalid("ListOwnership", err)
	_, err = s.ListCheckpoints(ctx, "", g.hub, g.cg)
	isInvalid("ListCheckpoints", err)
	for _, cp := range []checkpoint.Checkpoint{
		g.cp("0", "", 1),
		g.cp("0", "1", -1),
		g.cp("0", "1 ", 1),
		g.cp("0", "\x00", 1),
		g.cp("", "1", 1),
		{Namespace: g.ns, EventHub: g.hub, PartitionID: "0", Offset: "1"},
	} {
		isInvalid("SetCheckpoint", s.SetCheckpoint(ctx, cp))
	}
	if got := listCps(t, s, g); len(got) != 0 {
		t.Fatalf("invalid checkpoints were written: %+v", got)
	}
}

func testCanceledContext(t *testing.T, s checkpoint.Store, g group) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	is := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("%s with a canceled context: err = %v, want context.Canceled", what, err)
		}
	}
	_, err := s.ClaimOwnership(ctx, []checkpoint.Ownership{g.own("0", "member-a", "")})
	is("ClaimOwnership", err)
	_, err = s.ListOwnership(ctx, g.ns, g.hub, g.cg)
	is("ListOwnership", err)
	_, err = s.ListCheckpoints(ctx, g.ns, g.hub, g.cg)
	is("ListCheckpoints", err)
	is("SetCheckpoint", s.SetCheckpoint(ctx, g.cp("0", "1", 1)))
	if got := listOwn(t, s, g); len(got) != 0 {
		t.Fatalf("canceled claim was written: %+v", got)
	}
	if got := listCps(t, s, g); len(got) != 0 {
		t.Fatalf("canceled checkpoint was written: %+v", got)
	}
}

func testConcurrentClaimers(t *testing.T, s checkpoint.Store, g group) {
	const members = 8
	const rounds = 4
	// Round 0 races to create the record; later rounds race to take it
	// over from the same listed ETag.
	var current checkpoint.Ownership
	for round := range rounds {
		etag := current.ETag
		results := make([][]checkpoint.Ownership, members)
		errs := make([]error, members)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for m := range members {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				c := g.own("0", "member-"+string(rune('a'+m)), etag)
				results[m], errs[m] = s.ClaimOwnership(ctxFor(t), []checkpoint.Ownership{c})
			}()
		}
		close(start)
		wg.Wait()
		winners := 0
		for m := range members {
			if errs[m] != nil {
				t.Fatalf("round %d: member %d: ClaimOwnership: %v", round, m, errs[m])
			}
			if len(results[m]) == 1 {
				winners++
				current = results[m][0]
			}
		}
		if winners != 1 {
			t.Fatalf("round %d: %d of %d concurrent claimers won, want exactly 1", round, winners, members)
		}
		requireOwnership(t, listOwn(t, s, g), current)
	}
}
