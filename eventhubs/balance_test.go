package eventhubs_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/checkpoint"
	"github.com/isobroker/broker/eventhubs/emulator"
	"github.com/isobroker/broker/internal/testenv"
)

// testBalanceOptions are short intervals for tests. The expiration is many
// intervals long, so that a slow round on a loaded machine never lets a
// claim expire by accident.
func testBalanceOptions(s eventhubs.Strategy) eventhubs.BalanceOptions {
	return eventhubs.BalanceOptions{
		Strategy:            s,
		UpdateInterval:      200 * time.Millisecond,
		OwnershipExpiration: 5 * time.Second,
		CheckpointEvery:     5,
		CheckpointInterval:  300 * time.Millisecond,
		StoreTimeout:        10 * time.Second,
		CloseTimeout:        20 * time.Second,
	}
}

// roundBounds are the most rounds the newest members may need to reach
// an even spread in each step of a scale-out of 8 partitions.
type roundBounds struct{ one, two, four int64 }

// TestBalancedScaleOut: 8 partitions, members started 1 → 2 → 4 while
// events are published, with each strategy on the in-memory store.
func TestBalancedScaleOut(t *testing.T) {
	t.Run("balanced", func(t *testing.T) {
		// One claim per round: the first member needs 8 rounds for 8
		// partitions, the second 4, the third and fourth 2 each; a few
		// more for claims that lose a race.
		scaleOut(t, checkpoint.NewMemoryStore(), testBalanceOptions(eventhubs.StrategyBalanced), roundBounds{8 + 2, 4 + 3, 2 + 4})
	})
	t.Run("greedy", func(t *testing.T) {
		scaleOut(t, checkpoint.NewMemoryStore(), testBalanceOptions(eventhubs.StrategyGreedy), roundBounds{1 + 2, 1 + 3, 1 + 4})
	})
}

// scaleOut runs the scale-out scenario on store and asserts:
//   - after each step the members converge on ⌊P/N⌋ or ⌈P/N⌉ partitions
//     each, in the store and in what Owned reports, within the bounded
//     number of rounds of the newest members, and stay there (no churn);
//   - every event published (before and during the rebalancing) is
//     handled, duplicates only within the un-checkpointed window;
//   - no partition is held by two members across a round of the member
//     giving it up;
//   - claim, renew, steal, hand-over and checkpoint are logged;
//   - after every member closed, each partition's checkpoint is the last
//     event handled and every claim is relinquished.
func scaleOut(t *testing.T, store checkpoint.Store, opts eventhubs.BalanceOptions, bounds roundBounds) {
	e := startEmulator(t, emulator.Config{})
	c := newCluster(t, e, 8, store, opts)
	om := c.monitorOverlaps()
	c.publishNow("early", 3) // waiting before anyone reads

	start := time.Now()
	m1 := c.join("m1")
	r1 := c.waitConverged("1 member", []*member{m1}, nil, bounds.one)
	t1 := time.Since(start)

	c.publish(40 * time.Millisecond)
	start = time.Now()
	base := rounds(c.live())
	m2 := c.join("m2")
	r2 := c.waitConverged("1 → 2 members", []*member{m2}, base, bounds.two)
	t2 := time.Since(start)

	start = time.Now()
	base = rounds(c.live())
	m3, m4 := c.join("m3"), c.join("m4")
	r4 := c.waitConverged("2 → 4 members", []*member{m3, m4}, base, bounds.four)
	t4 := time.Since(start)
	t.Logf("%s: converged in %d rounds (%v), %d rounds (%v), %d rounds (%v) with interval %v",
		opts.Strategy, r1, t1.Round(time.Millisecond), r2, t2.Round(time.Millisecond), r4, t4.Round(time.Millisecond), opts.UpdateInterval)

	// Stable: three more rounds of everyone change nothing.
	all := c.live()
	owners := ownersOf(c.view())
	claims := countLogs(all, `msg="partition claimed"`) + countLogs(all, `msg="partition stolen`)
	waitRounds(t, all, 3)
	if got := ownersOf(c.view()); !maps2Equal(got, owners) {
		t.Errorf("ownership changed after convergence: %v → %v", owners, got)
	}
	if n := countLogs(all, `msg="partition claimed"`) + countLogs(all, `msg="partition stolen`); n != claims {
		t.Errorf("%d claims after convergence", n-claims)
	}
	if ok, desc := c.converged(all); !ok {
		t.Errorf("no longer converged:%s", desc)
	}

	c.stopPublishing()
	c.waitHandled("scale-out")
	om.check(t)
	rep := c.rec.checkDuplicates(t)
	t.Logf("%s: %v", opts.Strategy, rep)

	// Observability: every kind of event was logged.
	for _, want := range []struct {
		who  []*member
		what string
	}{
		{all, `msg="partition claimed"`},
		{all, `msg="ownership renewed"`},
		{[]*member{m2, m3, m4}, `msg="partition stolen from a member above its share"`},
		{[]*member{m1}, `msg="partition handed over"`},
		{[]*member{m1}, `msg="partition ownership lost"`},
		{all, `msg="checkpoint written"`},
	} {
		if countLogs(want.who, want.what) == 0 {
			t.Errorf("no %s logged by %v", want.what, names(want.who))
		}
	}
	if n := countLogs(all, "level=ERROR"); n != 0 {
		t.Errorf("%d errors logged", n)
	}

	// Scale in to zero: each Close checkpoints and relinquishes.
	for _, m := range slices.Backward(all) {
		c.closeMember(m)
	}
	final := c.rec.maxHandled()
	cps, err := store.ListCheckpoints(ctxT(t, 10*time.Second), c.ns(), c.hub, eventhubs.DefaultConsumerGroup)
	if err != nil {
		t.Fatal(err)
	}
	if len(cps) != 8 {
		t.Errorf("%d checkpoints, want 8", len(cps))
	}
	for _, cp := range cps {
		if cp.SequenceNumber != final[cp.PartitionID] {
			t.Errorf("partition %s: checkpoint %d after Close, last handled %d", cp.PartitionID, cp.SequenceNumber, final[cp.PartitionID])
		}
	}
	for p, o := range c.view() {
		if o.OwnerID != "" {
			t.Errorf("partition %s still owned by %q after every member closed", p, o.OwnerID)
		}
	}
}

func ownersOf(view map[string]checkpoint.Ownership) map[string]string {
	out := map[string]string{}
	for p, o := range view {
		out[p] = o.OwnerID
	}
	return out
}

func maps2Equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func countLogs(ms []*member, sub ...string) int {
	n := 0
	for _, m := range ms {
		n += m.logs.count(sub...)
	}
	return n
}

func names(ms []*member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.name
	}
	return out
}

// TestBalancedLeave: of three members, one leaves. Closed, it relinquishes
// its partitions after checkpointing them: the others claim them as
// relinquished within a few rounds, starting exactly after the last event
// it handled. Killed (no checkpoint, no relinquish), its claims stand
// until they expire: the others claim them as expired, and only after the
// expiration.
func TestBalancedLeave(t *testing.T) {
	opts := testBalanceOptions(eventhubs.StrategyBalanced)
	opts.OwnershipExpiration = 2 * time.Second
	balancedLeave(t, func(*testing.T) checkpoint.Store { return checkpoint.NewMemoryStore() }, opts)
}

// balancedLeave runs TestBalancedLeave's close and kill cases with a
// fresh store from newStore for each.
func balancedLeave(t *testing.T, newStore func(*testing.T) checkpoint.Store, opts eventhubs.BalanceOptions) {
	for _, kill := range []bool{false, true} {
		name := map[bool]string{false: "close", true: "kill"}[kill]
		t.Run(name, func(t *testing.T) {
			e := startEmulator(t, emulator.Config{})
			c := newCluster(t, e, 8, newStore(t), opts)
			om := c.monitorOverlaps()
			a, b, x := c.join("a"), c.join("b"), c.join("x")
			c.waitConverged("3 members", []*member{a, b, x}, nil, 20)
			c.publish(40 * time.Millisecond)
			waitRounds(t, c.live(), 2) // x handles and checkpoints some events

			xParts := x.sub.Owned()
			lastRenewal := map[string]time.Time{}
			for _, p := range xParts {
				cl := c.rec.claimsOf(p, "x")
				lastRenewal[p] = cl[len(cl)-1].lastModified
			}
			survivors := []*member{a, b}
			base := rounds(survivors)
			left := time.Now()
			if kill {
				c.kill(x)
			} else {
				c.closeMember(x)
			}
			bound := int64(len(xParts) + 2) // balanced: one claim per round
			if kill {
				bound = 1000 // the expiration decides, checked below
			}
			r := c.waitConverged("after x left", survivors, base, bound)
			t.Logf("%s: x's %d partitions %v taken over in %d rounds, %v after x left (expiration %v)",
				name, len(xParts), xParts, r, time.Since(left).Round(time.Millisecond), opts.OwnershipExpiration)

			kind := "kind=relinquished"
			if kill {
				kind = "kind=expired"
			}
			for _, p := range xParts {
				if n := countLogs(survivors, `msg="partition claimed"`, "partition="+p+" ", kind); n != 1 {
					t.Errorf("partition %s claimed %d times with %s", p, n, kind)
				}
				if !kill {
					continue
				}
				// Nobody claimed it before x's last claim expired.
				for _, s := range survivors {
					for _, cl := range c.rec.claimsOf(p, s.name) {
						if cl.lastModified.After(lastRenewal[p]) && cl.lastModified.Sub(lastRenewal[p]) < opts.OwnershipExpiration {
							t.Errorf("partition %s claimed by %s %v after x's last renewal, before the expiration %v",
								p, s.name, cl.lastModified.Sub(lastRenewal[p]), opts.OwnershipExpiration)
						}
					}
				}
			}

			c.stopPublishing()
			c.waitHandled(name)
			om.check(t)
			rep := c.rec.checkDuplicates(t)
			t.Logf("%s: %v", name, rep)
			// A closed member's successors start right after its last event.
			again := handledAgainAfter(c.rec, "x", xParts)
			t.Logf("%s: %d of x's events handled again by its successors", name, again)
			if !kill && again != 0 {
				t.Errorf("%d events x handled before Close were handled again by its successors", again)
			}
		})
	}
}

// handledAgainAfter counts events of parts first handled by member that
// another member handled again later.
func handledAgainAfter(r *recorder, member string, parts []string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, p := range parts {
		byMember := map[int64]bool{}
		for _, h := range r.handled[p] {
			if h.member == member {
				byMember[h.seq] = true
			} else if byMember[h.seq] {
				n++
			}
		}
	}
	return n
}

// TestBalancedStoreFaults: with the store unreachable for longer than the
// expiration, members keep consuming what they own, and a member joining
// meanwhile starts with nothing; once the store is back, claims are
// retried and the three converge. ETag conflicts on renewals (a record
// rewritten unchanged) make no member give a partition up. A foreign
// claim makes the owner hand the partition over within a round; after
// that claim expires, a member takes the partition back. No partition is
// ever held by two members across a round of the one giving it up, and
// nothing is lost.
func TestBalancedStoreFaults(t *testing.T) {
	testenv.Slow(t, "waits out ownership expirations and a store outage of ten rounds")
	e := startEmulator(t, emulator.Config{})
	opts := testBalanceOptions(eventhubs.StrategyBalanced)
	opts.OwnershipExpiration = 1500 * time.Millisecond
	store := checkpoint.NewMemoryStore()
	c := newCluster(t, e, 8, store, opts)
	om := c.monitorOverlaps()
	a, b := c.join("a"), c.join("b")
	c.waitConverged("2 members", []*member{a, b}, nil, 12)
	c.publish(40 * time.Millisecond)

	// Outage, for everyone, longer than the expiration.
	ownedA, ownedB := a.sub.Owned(), b.sub.Owned()
	a.fs.down.Store(true)
	b.fs.down.Store(true)
	cm := c.joinDown("c")
	if got := cm.sub.Owned(); len(got) != 0 {
		t.Errorf("member c, joined during the outage, owns %v", got)
	}
	// 10 rounds are at least 10 × 0.8 intervals = 1.6 s > the expiration.
	waitRounds(t, []*member{a, b, cm}, 10)
	c.waitHandled("during the outage")
	if got := a.sub.Owned(); !slices.Equal(got, ownedA) {
		t.Errorf("a owns %v during the outage, %v before", got, ownedA)
	}
	if got := b.sub.Owned(); !slices.Equal(got, ownedB) {
		t.Errorf("b owns %v during the outage, %v before", got, ownedB)
	}
	if got := cm.sub.Owned(); len(got) != 0 {
		t.Errorf("member c owns %v during the outage", got)
	}
	if countLogs([]*member{a, b, cm}, "level=WARN", `msg="checkpoint store failed; keeping the partitions held, retrying next interval"`) == 0 {
		t.Errorf("store failures not logged")
	}
	if a.fs.failures.Load() == 0 || cm.fs.failures.Load() == 0 {
		t.Errorf("the outage was not seen")
	}

	// Back: claims are retried; the three converge.
	base := rounds(c.live())
	for _, m := range c.live() {
		m.fs.down.Store(false)
	}
	c.waitConverged("after the outage", c.live(), base, 12)

	// ETag conflicts on every third claim: renewals race, and lose, but
	// the records still name their owners, who keep their partitions.
	owners := ownersOf(c.view())
	handedOver := countLogs(c.live(), `msg="partition handed over"`)
	for _, m := range c.live() {
		m.fs.conflictEvery.Store(3)
	}
	waitRounds(t, c.live(), 6)
	for _, m := range c.live() {
		m.fs.conflictEvery.Store(0)
	}
	conflicts := int64(0)
	for _, m := range c.live() {
		conflicts += m.fs.conflicts.Load()
	}
	if conflicts == 0 {
		t.Errorf("no conflict injected")
	}
	if got := ownersOf(c.view()); !maps2Equal(got, owners) {
		t.Errorf("ownership changed under ETag conflicts: %v → %v", owners, got)
	}
	if n := countLogs(c.live(), `msg="partition handed over"`); n != handedOver {
		t.Errorf("%d partitions handed over under ETag conflicts", n-handedOver)
	}
	if countLogs(c.live(), "renewal lost a race, but the record still names this member") == 0 {
		t.Errorf("no raced renewal logged (%d conflicts injected)", conflicts)
	}
	t.Logf("%d ETag conflicts injected; ownership unchanged", conflicts)

	// A foreign claim: the owner hands the partition over at its next
	// round; once the claim expires, a member takes it back.
	victim := a.sub.Owned()[0]
	var rec checkpoint.Ownership
	for _, o := range c.view() {
		if o.PartitionID == victim {
			rec = o
		}
	}
	rec.OwnerID = "intruder"
	won, err := store.ClaimOwnership(ctxT(t, 5*time.Second), []checkpoint.Ownership{rec})
	if err != nil || len(won) != 1 {
		t.Fatalf("intruder claim: %v, %d won", err, len(won))
	}
	c.rec.claimed(won[0])
	waitRounds(t, []*member{a}, 2)
	if slices.Contains(a.sub.Owned(), victim) {
		t.Errorf("a still owns %s two rounds after the intruder claimed it", victim)
	}
	if a.logs.count(`msg="partition handed over"`, "partition="+victim+" ", "new_owner=intruder") != 1 {
		t.Errorf("hand-over to the intruder not logged")
	}
	c.waitConverged("after the intruder's claim expired", c.live(), rounds(c.live()), 1000)
	for _, m := range c.live() {
		for _, cl := range c.rec.claimsOf(victim, m.name) {
			if cl.lastModified.After(won[0].LastModified) && cl.lastModified.Sub(won[0].LastModified) < opts.OwnershipExpiration {
				t.Errorf("%s claimed %s %v after the intruder, before its claim expired", m.name, victim, cl.lastModified.Sub(won[0].LastModified))
			}
		}
	}
	if countLogs(c.live(), `msg="partition claimed"`, "partition="+victim+" ", "kind=expired", "previous_owner=intruder") != 1 {
		t.Errorf("the intruder's expired claim was not taken over once")
	}

	c.stopPublishing()
	c.waitHandled("store faults")
	om.check(t)
	t.Logf("store faults: %v", c.rec.checkDuplicates(t))
}

// TestBalancedOptions: bad options are refused before anything starts;
// a fatal store error in the first round fails Subscribe, a retryable one
// does not.
func TestBalancedOptions(t *testing.T) {
	e := startEmulator(t, emulator.Config{})
	hub := newHub(t, e, 2)
	b := open(t, e, nil)
	ctx := ctxT(t, 20*time.Second)
	h := func(context.Context, *broker.Delivery) error { return nil }
	store := checkpoint.NewMemoryStore()
	bad := []struct {
		name string
		opts []broker.SubscribeOption
	}{
		{"nil store", []broker.SubscribeOption{broker.WithDriverOption(eventhubs.Balanced(nil, eventhubs.BalanceOptions{}))}},
		{"owner id", []broker.SubscribeOption{broker.WithDriverOption(eventhubs.Balanced(store, eventhubs.BalanceOptions{OwnerID: "bad\nid"}))}},
		{"strategy", []broker.SubscribeOption{broker.WithDriverOption(eventhubs.Balanced(store, eventhubs.BalanceOptions{Strategy: 7}))}},
		{"expiration", []broker.SubscribeOption{broker.WithDriverOption(eventhubs.Balanced(store, eventhubs.BalanceOptions{
			UpdateInterval: time.Second, OwnershipExpiration: time.Second}))}},
		{"negative", []broker.SubscribeOption{broker.WithDriverOption(eventhubs.Balanced(store, eventhubs.BalanceOptions{CheckpointEvery: -1}))}},
		{"partitions", []broker.SubscribeOption{broker.WithDriverOption(eventhubs.Balanced(store, eventhubs.BalanceOptions{})),
			broker.WithDriverOption(eventhubs.Partitions{"0"})}},
		{"namespace", []broker.SubscribeOption{broker.WithDriverOption(eventhubs.Balanced(store, eventhubs.BalanceOptions{Namespace: "a/b"}))}},
	}
	for _, tc := range bad {
		sub, err := b.Subscribe(ctx, hub, h, tc.opts...)
		if !errors.Is(err, broker.ErrInvalidOption) {
			t.Errorf("%s: Subscribe = %v, %v; want ErrInvalidOption", tc.name, sub, err)
		}
	}
	if got := []string{eventhubs.StrategyBalanced.String(), eventhubs.StrategyGreedy.String(), eventhubs.Strategy(9).String()}; !slices.Equal(got, []string{"balanced", "greedy", "strategy(9)"}) {
		t.Errorf("Strategy strings %v", got)
	}

	// Fatal in the first round: Subscribe fails with that error.
	denied := &errStore{Store: store, err: fmt.Errorf("test: %w", broker.ErrUnauthorized)}
	sub, err := b.Subscribe(ctx, hub, h, broker.WithDriverOption(eventhubs.Balanced(denied, eventhubs.BalanceOptions{})))
	if !errors.Is(err, broker.ErrUnauthorized) {
		t.Errorf("unauthorized store: Subscribe = %v, %v", sub, err)
	}
	// Retryable: Subscribe succeeds, owning nothing yet.
	down := &errStore{Store: store, err: fmt.Errorf("test: %w", broker.ErrUnavailable)}
	sub, err = b.Subscribe(ctx, hub, h, broker.WithDriverOption(eventhubs.Balanced(down, eventhubs.BalanceOptions{})))
	if err != nil {
		t.Fatalf("unavailable store: Subscribe: %v", err)
	}
	if got := sub.(*eventhubs.BalancedSubscription).Owned(); len(got) != 0 {
		t.Errorf("owns %v with the store down", got)
	}
	if err := sub.Close(ctx); err != nil {
		t.Errorf("close: %v", err)
	}
	if err := sub.Close(ctx); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("second close: %v", err)
	}
	// Broker.Close ends a member: Err wraps ErrClosed.
	sub, err = b.Subscribe(ctx, hub, h, broker.WithDriverOption(eventhubs.Balanced(store, eventhubs.BalanceOptions{})))
	if err != nil {
		t.Fatal(err)
	}
	if got := sub.(*eventhubs.BalancedSubscription).Owned(); !slices.Equal(got, []string{"0"}) && !slices.Equal(got, []string{"1"}) {
		t.Errorf("a balanced member's first round claims one partition; owns %v", got)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sub.Err(); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Err after Broker.Close = %v", err)
	}
	list, err := store.ListOwnership(ctx, mustNamespace(t, e), hub, eventhubs.DefaultConsumerGroup)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range list {
		if o.OwnerID != "" {
			t.Errorf("partition %s owned by %q after Broker.Close", o.PartitionID, o.OwnerID)
		}
	}
}

func mustNamespace(t *testing.T, e *emulator.Emulator) string {
	t.Helper()
	cfg, err := eventhubs.ParseConnectionString(e.ConnectionString(""))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Namespace
}

// errStore fails every call with err.
type errStore struct {
	checkpoint.Store
	err error
}

func (s *errStore) ClaimOwnership(context.Context, []checkpoint.Ownership) ([]checkpoint.Ownership, error) {
	return nil, s.err
}

func (s *errStore) ListOwnership(context.Context, string, string, string) ([]checkpoint.Ownership, error) {
	return nil, s.err
}

func (s *errStore) ListCheckpoints(context.Context, string, string, string) ([]checkpoint.Checkpoint, error) {
	return nil, s.err
}

func (s *errStore) SetCheckpoint(context.Context, checkpoint.Checkpoint) error { return s.err }

// TestBalancedForeignTakeover: a receiver the store does not back (here a
// plain subscription with an owner level; in practice a member attaching
// late for a claim it has lost since) takes a partition over. The member
// lets it go at once, and since the store still names it, takes it back at
// its next round. Taken over a second time, it does not fight: it leaves
// the partition until its record expires, then claims it as expired.
func TestBalancedForeignTakeover(t *testing.T) {
	e := startEmulator(t, emulator.Config{})
	opts := testBalanceOptions(eventhubs.StrategyGreedy)
	opts.OwnershipExpiration = 1500 * time.Millisecond
	c := newCluster(t, e, 2, checkpoint.NewMemoryStore(), opts)
	a := c.join("a")
	c.waitConverged("one member", []*member{a}, nil, 3)
	c.publishNow("before", 3)
	c.waitHandled("before")

	rogue := func(name string) (broker.Subscription, chan string) {
		lost := make(chan string, 1)
		b := open(t, e, nil, eventhubs.WithName(name))
		sub, err := b.Subscribe(ctxT(t, 10*time.Second), c.hub, func(context.Context, *broker.Delivery) error { return nil },
			broker.WithDriverOption(eventhubs.OwnerLevel(0)), broker.WithDriverOption(eventhubs.Partitions{"0"}),
			broker.WithDriverOption(eventhubs.OnOwnershipLost(func(p string, _ error) { lost <- p })))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return sub, lost
	}
	waitOwnedSet := func(what string, want []string) {
		t.Helper()
		guard := time.Now().Add(30 * time.Second)
		for !slices.Equal(a.sub.Owned(), want) {
			if time.Now().After(guard) {
				t.Fatalf("%s: a owns %v, want %v", what, a.sub.Owned(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// First takeover: let go at once, taken back at the next round.
	_, lost1 := rogue("rogue-1")
	waitOwnedSet("after the first takeover", []string{"1"})
	base := rounds([]*member{a})
	waitOwnedSet("taken back", []string{"0", "1"})
	if r := a.fs.lists.Load() - base["a"]; r > 2 {
		t.Errorf("taken back after %d rounds, want the next one", r)
	}
	select {
	case <-lost1:
	case <-time.After(10 * time.Second):
		t.Errorf("rogue-1 did not lose the partition")
	}
	if n := a.logs.count(`msg="partition claimed"`, "partition=0 ", `kind="own record"`); n != 1 {
		t.Errorf("partition 0 taken back %d times", n)
	}

	// Second takeover within the expiration: no fight.
	_, lost2 := rogue("rogue-2")
	waitOwnedSet("after the second takeover", []string{"1"})
	waitRounds(t, []*member{a}, 3)
	if got := a.sub.Owned(); !slices.Equal(got, []string{"1"}) {
		t.Errorf("a took partition 0 back from the second takeover within the expiration: owns %v", got)
	}
	if n := a.logs.count(`msg="partition claimed"`, "partition=0 ", `kind="own record"`); n != 1 {
		t.Errorf("partition 0 taken back %d times", n)
	}
	// After the expiration it is claimed as expired, from the rogue.
	waitOwnedSet("after the expiration", []string{"0", "1"})
	if n := a.logs.count(`msg="partition claimed"`, "partition=0 ", "kind=expired", "previous_owner=a"); n != 1 {
		t.Errorf("partition 0 not claimed as expired after the second takeover")
	}
	select {
	case <-lost2:
	case <-time.After(10 * time.Second):
		t.Errorf("rogue-2 did not lose the partition")
	}
	c.publishNow("after", 3)
	c.waitHandled("after the takeovers")
}

// TestBalancedRestartSameOwner: a member that restarts with its old owner
// id (after a crash, so its claims still stand) takes its unexpired
// records back in its first round, and resumes after their checkpoints.
func TestBalancedRestartSameOwner(t *testing.T) {
	e := startEmulator(t, emulator.Config{})
	c := newCluster(t, e, 2, checkpoint.NewMemoryStore(), testBalanceOptions(eventhubs.StrategyBalanced))
	first := c.join("a")
	c.waitConverged("first run", []*member{first}, nil, 4)
	c.publishNow("before", 5)
	c.waitHandled("first run")
	waitRounds(t, []*member{first}, 2) // checkpoints written
	c.kill(first)

	again := c.join("a")
	if got := again.sub.Owned(); !slices.Equal(got, []string{"0", "1"}) {
		t.Errorf("restarted member owns %v after its first round, want both partitions", got)
	}
	if n := again.logs.count(`msg="partition claimed"`, `kind="own record"`); n != 2 {
		t.Errorf("%d own records taken back, want 2", n)
	}
	c.publishNow("after", 5)
	c.waitHandled("second run")
	if rep := c.rec.checkDuplicates(t); rep.dups != 0 {
		t.Errorf("%d events handled again after the restart; the checkpoints covered them all", rep.dups)
	}
}
