package eventhubs

import (
	"cmp"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs/checkpoint"
)

// BalancedSubscription is the broker.Subscription that Subscribe returns
// for a Balanced member. Type-assert to reach its extra methods:
//
//	owned := sub.(*eventhubs.BalancedSubscription).Owned()
type BalancedSubscription struct {
	s   *subscription
	bal *balancer
}

var _ broker.Subscription = (*BalancedSubscription)(nil)

// Close stops the receivers, waits for running handlers until ctx ends,
// writes the final checkpoints and relinquishes this member's claims (see
// Balanced; store calls are bounded by BalanceOptions.CloseTimeout and
// ctx). It returns nil after a clean stop, an error wrapping ctx.Err() if
// ctx ended first (the rest then finishes in the background, promptly),
// and an error wrapping broker.ErrClosed when called again.
func (bs *BalancedSubscription) Close(ctx context.Context) error { return bs.s.Close(ctx) }

// Done is closed when the member has ended: receivers stopped, final
// checkpoints written and claims relinquished (or given up on).
func (bs *BalancedSubscription) Done() <-chan struct{} { return bs.s.Done() }

// Err reports why the member ended: nil while it runs or after Close, the
// Subscribe ctx's error, an error wrapping broker.ErrClosed when the
// Broker closed, or a fatal error (from the service or, in the first
// round, the store). Losing partitions to other members is not an error.
func (bs *BalancedSubscription) Err() error { return bs.s.Err() }

// OwnerID returns the id under which this member claims partitions.
func (bs *BalancedSubscription) OwnerID() string { return bs.bal.o.OwnerID }

// Owned returns the partitions this member holds now — claimed in the
// store and not yet handed over — sorted (numerically where the ids are
// numbers). A partition appears as soon as it is claimed, before its
// receiver has attached. It never blocks on I/O; after the member has
// ended it returns nil.
func (bs *BalancedSubscription) Owned() []string {
	bs.bal.mu.Lock()
	defer bs.bal.mu.Unlock()
	return slices.Clone(bs.bal.owned)
}

// subscribeBalanced is Subscribe for a Balanced member; s holds the
// parsed options.
func (b *Broker) subscribeBalanced(ctx context.Context, s *subscription, o BalancedOption) (broker.Subscription, error) {
	fail := func(err error) (broker.Subscription, error) {
		return nil, fmt.Errorf("eventhubs: subscribe to %q group %q: %w", s.hub, s.group, err)
	}
	opts, err := o.resolve(b)
	if err != nil {
		return fail(err)
	}
	if s.only != nil {
		return fail(fmt.Errorf("%w: the Partitions driver option cannot be combined with Balanced", broker.ErrInvalidOption))
	}
	if err := checkpoint.ValidateGroup(opts.Namespace, s.hub, s.group); err != nil {
		return fail(fmt.Errorf("Balanced: %w", err))
	}
	if s.epoch == nil {
		zero := int64(0) // the SDK Processor's owner level
		s.epoch = &zero
	}
	if !b.gate.Enter() {
		return nil, fmt.Errorf("eventhubs: subscribe: %w", broker.ErrClosed)
	}
	defer b.gate.Leave()
	b.noteHub(s.hub)
	start := time.Now()
	props, err := b.HubProperties(ctx, s.hub)
	if err != nil {
		return fail(err)
	}
	s.init(ctx)
	bal := newBalancer(s, o.store, opts, props.PartitionIDs)
	s.bal = bal

	if !b.gate.Track(s.Subscription) {
		s.abandon(broker.ErrClosed)
		return nil, fmt.Errorf("eventhubs: subscribe: %w", broker.ErrClosed)
	}
	s.start()

	select {
	case <-bal.ready:
	case <-ctx.Done(): // the subscription stops itself (its ctx ended)
		return fail(ctx.Err())
	}
	if s.IsStopping() { // a fatal error in the first round, or the Broker closing
		select {
		case <-s.Done():
		case <-ctx.Done():
			return fail(ctx.Err())
		}
		if err := s.Err(); err != nil {
			return fail(err)
		}
		return nil, fmt.Errorf("eventhubs: subscribe: %w", broker.ErrClosed)
	}
	b.log.Info("subscribed (load-balanced)", "hub", s.hub, "group", s.group, "owner", opts.OwnerID,
		"partitions", len(props.PartitionIDs), "owned", bal.ownedNow(), "strategy", opts.Strategy.String(),
		"update_interval", opts.UpdateInterval, "expiration", opts.OwnershipExpiration,
		"owner_level", epochString(s.epoch), "fallback_start", s.cfg.Start.String(), "elapsed", time.Since(start))
	return &BalancedSubscription{s: s, bal: bal}, nil
}

// balancer runs one member's load balancing in one goroutine, which is
// also the only one that talks to the store.
type balancer struct {
	s     *subscription
	b     *Broker
	store checkpoint.Store
	o     BalanceOptions
	ids   []string
	log   *slog.Logger
	cp    *checkpointer

	ready     chan struct{} // closed after the first round
	readyOnce sync.Once
	exited    chan *heldPartition // partition goroutines report their end

	// Owned by the balancer goroutine.
	rng     *rand.Rand                // this member's own source: plan choices, round jitter
	held    map[string]*heldPartition // partitions with a running goroutine
	stolen  map[string]stealRecord    // partitions whose receiver was taken over
	first   bool                      // the first round is running
	rounds  int                       // rounds started, for logs
	release []checkpoint.Ownership    // claims of ended partitions, relinquished at shutdown

	mu    sync.Mutex
	owned []string // claimed partitions, for Owned
}

// heldPartition is a partition whose goroutine runs. claimed is false
// once the balancer dropped it (its goroutine is stopping).
type heldPartition struct {
	id      string
	own     checkpoint.Ownership // as last claimed (ETag)
	claimed bool
	cancel  context.CancelFunc
	stolen  atomic.Bool // set by the partition goroutine on amqp:link:stolen
}

// ending reports that the partition is being given up: dropped by the
// balancer, or taken over by another receiver.
func (h *heldPartition) ending() bool { return !h.claimed || h.stolen.Load() }

func newBalancer(s *subscription, store checkpoint.Store, o BalanceOptions, ids []string) *balancer {
	log := s.b.log.With("hub", s.hub, "group", s.group, "owner", o.OwnerID)
	return &balancer{
		s: s, b: s.b, store: store, o: o,
		ids:    slices.Clone(ids),
		log:    log,
		rng:    newRand(),
		cp:     newCheckpointer(store, o.Namespace, s.hub, s.group, o.CheckpointEvery, log),
		ready:  make(chan struct{}),
		exited: make(chan *heldPartition, len(ids)),
		held:   make(map[string]*heldPartition),
		stolen: make(map[string]stealRecord),
	}
}

// newRand returns a random source of its own, seeded from crypto/rand.
func newRand() *rand.Rand {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // never fails (it crashes the program instead)
	return rand.New(rand.NewChaCha8(seed))
}

// compareIDs orders partition ids numerically when both are numbers.
func compareIDs(a, b string) int {
	x, errA := strconv.Atoi(a)
	y, errB := strconv.Atoi(b)
	if errA == nil && errB == nil {
		return cmp.Compare(x, y)
	}
	return cmp.Compare(a, b)
}

func (bl *balancer) ownedNow() []string {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	return slices.Clone(bl.owned)
}

// publishOwned refreshes the snapshot Owned returns.
func (bl *balancer) publishOwned() {
	var ids []string
	for id, h := range bl.held {
		if !h.ending() {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, compareIDs)
	bl.mu.Lock()
	bl.owned = ids
	bl.mu.Unlock()
}

// unlist removes id from the snapshot Owned returns; partition
// goroutines call it when their receiver is taken over.
func (bl *balancer) unlist(id string) {
	bl.mu.Lock()
	bl.owned = slices.DeleteFunc(slices.Clone(bl.owned), func(x string) bool { return x == id })
	bl.mu.Unlock()
}

// jitter returns d × [0.8, 1.3).
func (bl *balancer) jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.5*bl.rng.Float64()))
}

// run is the balancer goroutine: rounds, checkpoint flushes, partition
// ends; at stop, the final checkpoints and the relinquishing.
func (bl *balancer) run() {
	s := bl.s
	bl.first = true
	bl.round()
	bl.first = false
	bl.readyOnce.Do(func() { close(bl.ready) })

	roundT := time.NewTimer(bl.jitter(bl.o.UpdateInterval))
	defer roundT.Stop()
	cpT := time.NewTicker(bl.o.CheckpointInterval)
	defer cpT.Stop()
	for !s.IsStopping() {
		select {
		case <-s.Stopping():
		case <-roundT.C:
			bl.round()
			roundT.Reset(bl.jitter(bl.o.UpdateInterval))
		case <-cpT.C:
			bl.flush("interval")
		case <-bl.cp.kick:
			bl.flush("batch")
		case h := <-bl.exited:
			bl.ended(s.StopContext(), h)
		}
	}
	bl.shutdown()
}

// opCtx bounds store calls during normal operation: StoreTimeout, and
// the subscription's stop.
func (bl *balancer) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(bl.s.StopContext(), bl.o.StoreTimeout)
}

func (bl *balancer) flush(why string) {
	ctx, cancel := bl.opCtx()
	defer cancel()
	_ = bl.cp.flush(ctx, why, false) // failures are logged; retried next time
}

// storeFailed logs a failed store call; a fatal one in the first round
// ends the subscription.
func (bl *balancer) storeFailed(op string, err error) {
	if bl.s.IsStopping() {
		return
	}
	if bl.first && !broker.IsRetryable(err) && !errors.Is(err, context.DeadlineExceeded) {
		bl.log.Error("checkpoint store failed", "op", op, "err", err)
		bl.s.Stop(fmt.Errorf("eventhubs: load balancing: %s: %w", op, err))
		return
	}
	bl.log.Warn("checkpoint store failed; keeping the partitions held, retrying next interval", "op", op, "err", err)
}

// planInput is the snapshot planBalance decides from: list, as listed
// at now, and what this member holds.
func (bl *balancer) planInput(list []checkpoint.Ownership, now time.Time) planInput {
	held := make(map[string]holding, len(bl.held))
	for id, h := range bl.held {
		held[id] = holdClaimed
		if h.ending() {
			held[id] = holdEnding
		}
	}
	return planInput{
		me: bl.o.OwnerID, namespace: bl.o.Namespace, hub: bl.s.hub, group: bl.s.group,
		partitions: bl.ids, strategy: bl.o.Strategy, expiration: bl.o.OwnershipExpiration,
		now: now, records: list, held: held, stolen: bl.stolen,
	}
}

// round is one balancing step: list, renew, claim, start new partitions.
//
// A member keeps its partitions while the store fails, even past the
// expiration of its claims: it cannot tell an outage everyone sees (no
// one can claim them) from one of its own, and in the latter case the
// member that claims an expired partition takes its receiver over with
// its epoch, which stops this member's receiver at once.
func (bl *balancer) round() {
	ctx, cancel := bl.opCtx()
	defer cancel()
	defer bl.publishOwned()
	bl.rounds++
	now := time.Now()
	list, err := bl.store.ListOwnership(ctx, bl.o.Namespace, bl.s.hub, bl.s.group)
	if err != nil {
		bl.storeFailed("list ownership", err)
		return
	}
	pl := planBalance(bl.planInput(list, now), bl.rng)
	for id, owner := range pl.lost {
		bl.drop(bl.held[id], "claimed by another member", owner)
	}
	claims := slices.Clone(pl.renew)
	pl.claim = append(pl.reclaim, pl.claim...)
	for _, c := range pl.claim {
		claims = append(claims, c.o)
	}
	if len(claims) == 0 {
		return
	}
	won, err := bl.store.ClaimOwnership(ctx, claims)
	got := make(map[string]checkpoint.Ownership, len(won))
	for _, w := range won {
		got[w.PartitionID] = w
	}
	renewed := 0
	var raced []*heldPartition
	for _, r := range pl.renew {
		h := bl.held[r.PartitionID]
		if w, ok := got[r.PartitionID]; ok {
			h.own = w
			renewed++
		} else if err == nil {
			raced = append(raced, h)
		}
	}
	if renewed > 0 {
		bl.log.Debug("ownership renewed", "partitions", renewed, "owners", pl.owners, "share", pl.share, "round", bl.rounds)
	}
	if err != nil {
		bl.storeFailed("claim ownership", err)
	}
	if len(raced) > 0 {
		bl.settleRaces(ctx, raced)
	}
	var newly []candidate
	for _, c := range pl.claim {
		if w, ok := got[c.o.PartitionID]; ok {
			c.o = w
			newly = append(newly, c)
		} else if err == nil {
			bl.log.Debug("claim lost a race", "partition", c.o.PartitionID, "kind", string(c.kind))
		}
	}
	if len(newly) == 0 {
		return
	}
	cps, err := bl.store.ListCheckpoints(ctx, bl.o.Namespace, bl.s.hub, bl.s.group)
	if err != nil {
		bl.storeFailed("list checkpoints", err)
		bl.relinquish(ctx, newly, "checkpoints unreadable")
		return
	}
	byID := make(map[string]checkpoint.Checkpoint, len(cps))
	for _, cp := range cps {
		byID[cp.PartitionID] = cp
	}
	var failed []candidate
	for _, c := range newly {
		var cp *checkpoint.Checkpoint
		if v, ok := byID[c.o.PartitionID]; ok {
			cp = &v
		}
		if err := bl.startPartition(ctx, c, cp); err != nil {
			bl.log.Warn("cannot start claimed partition; relinquishing it", "partition", c.o.PartitionID, "err", err)
			failed = append(failed, c)
		}
	}
	if len(failed) > 0 {
		bl.relinquish(ctx, failed, "start failed")
	}
}

// settleRaces decides about held partitions whose renewal lost a race (the
// record's ETag changed since it was listed): it lists again, keeps those
// whose record still names this member (a write of its own, such as an
// earlier renewal whose reply was lost, changed the ETag) and drops the
// others. When the store cannot tell, it drops them all: holding on could
// make two members believe they own a partition.
func (bl *balancer) settleRaces(ctx context.Context, raced []*heldPartition) {
	list, err := bl.store.ListOwnership(ctx, bl.o.Namespace, bl.s.hub, bl.s.group)
	if err != nil {
		for _, h := range raced {
			bl.drop(h, "renewal lost a race and the store cannot tell the owner", "")
		}
		bl.storeFailed("list ownership", err)
		return
	}
	owner := make(map[string]checkpoint.Ownership, len(list))
	for _, o := range list {
		owner[o.PartitionID] = o
	}
	for _, h := range raced {
		o, ok := owner[h.id]
		if ok && o.OwnerID == bl.o.OwnerID {
			h.own = o
			bl.log.Debug("renewal lost a race, but the record still names this member; keeping the partition", "partition", h.id)
			continue
		}
		bl.drop(h, "renewal lost a race", o.OwnerID)
	}
}

// relinquish gives up fresh claims that could not be started.
func (bl *balancer) relinquish(ctx context.Context, cs []candidate, why string) {
	rel := make([]checkpoint.Ownership, len(cs))
	for i, c := range cs {
		rel[i] = c.o
		rel[i].OwnerID = ""
	}
	if _, err := bl.store.ClaimOwnership(ctx, rel); err != nil {
		bl.log.Warn("relinquishing failed; the claims will expire", "reason", why, "err", err)
	}
}

// startSelector resolves where a newly claimed partition starts.
func (bl *balancer) startSelector(ctx context.Context, c candidate, cp *checkpoint.Checkpoint) (sel, from string, err error) {
	if cp != nil {
		return seqSelector(cp.SequenceNumber, false), "checkpoint", nil
	}
	const earliest = "amqp.annotation.x-opt-offset > '-1'"
	pos := bl.s.cfg.Start
	switch pos.Kind {
	case broker.StartEarliest:
		return earliest, "earliest", nil
	case broker.StartOffset:
		return fmt.Sprintf("amqp.annotation.x-opt-offset %s '%s'", op(pos.Inclusive), pos.Offset), "offset", nil
	case broker.StartSequence:
		return seqSelector(pos.Sequence, pos.Inclusive), "sequence", nil
	case broker.StartTime:
		return fmt.Sprintf("amqp.annotation.x-opt-enqueued-time >= '%d'", pos.Time.UnixMilli()), "time", nil
	}
	// Latest: pin it and make it the first checkpoint, so a later owner
	// starts there too; if the partition was empty or owned before (by
	// someone who wrote no checkpoint), read everything instead.
	if c.record {
		return earliest, "earliest (owned before, no checkpoint)", nil
	}
	pp, err := bl.b.PartitionProperties(ctx, bl.s.hub, c.o.PartitionID)
	if err != nil {
		return "", "", err
	}
	if pp.IsEmpty || pp.LastEnqueuedSequenceNumber < 0 || pp.LastEnqueuedOffset == "" {
		return earliest, "earliest (empty partition)", nil
	}
	first := checkpoint.Checkpoint{Namespace: bl.o.Namespace, EventHub: bl.s.hub, ConsumerGroup: bl.s.group,
		PartitionID: c.o.PartitionID, Offset: pp.LastEnqueuedOffset, SequenceNumber: pp.LastEnqueuedSequenceNumber}
	if err := bl.store.SetCheckpoint(ctx, first); err != nil {
		return "", "", err
	}
	bl.log.Info("checkpoint written", "partition", first.PartitionID, "sequence", first.SequenceNumber,
		"offset", first.Offset, "reason", "latest pinned")
	return seqSelector(pp.LastEnqueuedSequenceNumber, false), "latest", nil
}

// startPartition starts the goroutine of a partition just claimed.
func (bl *balancer) startPartition(ctx context.Context, c candidate, cp *checkpoint.Checkpoint) error {
	s := bl.s
	id := c.o.PartitionID
	sel, from, err := bl.startSelector(ctx, c, cp)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithCancel(s.StopContext())
	h := &heldPartition{id: id, own: c.o, claimed: true, cancel: cancel}
	p := &partitionReceiver{s: s, id: id, name: s.name + "-" + id, ctx: pctx, start: sel}
	p.acked = func(m *broker.Message) { bl.cp.ack(id, m.Metadata.SequenceNumber, m.Metadata.Offset) }
	p.handover = func(error) {
		h.stolen.Store(true)
		bl.unlist(id) // Owned stops reporting it at once
	}
	bl.cp.track(id)
	bl.held[id] = h
	msg := "partition claimed"
	if c.kind == claimSteal {
		msg = "partition stolen from a member above its share"
	}
	bl.log.Info(msg, "partition", id, "kind", string(c.kind), "previous_owner", c.from, "start", from, "selector", sel)
	s.Go(func() {
		p.run()
		bl.exited <- h // buffered for every partition: never blocks
	})
	return nil
}

// drop stops a held partition this member no longer owns; its goroutine
// finishes the event in hand and ends (see ended).
func (bl *balancer) drop(h *heldPartition, why, owner string) {
	if h == nil || !h.claimed {
		return
	}
	h.claimed = false
	h.cancel()
	bl.log.Info("partition handed over", "partition", h.id, "reason", why, "new_owner", owner)
}

// ended handles a partition goroutine's end: after a steal, a drop or the
// subscription's stop, it writes the partition's checkpoint.
func (bl *balancer) ended(ctx context.Context, h *heldPartition) {
	delete(bl.held, h.id)
	h.cancel()
	if h.stolen.Load() {
		st := bl.stolen[h.id]
		if time.Since(st.at) >= bl.o.OwnershipExpiration {
			st.times = 0
		}
		st.at, st.times = time.Now(), st.times+1
		bl.stolen[h.id] = st
		if h.claimed {
			h.claimed = false
			bl.log.Info("partition handed over", "partition", h.id,
				"reason", "receiver taken over by another member (amqp:link:stolen)")
		}
	}
	why := "close"
	if !h.claimed {
		why = "hand-over"
	}
	fctx, cancel := context.WithTimeout(ctx, bl.o.StoreTimeout)
	defer cancel()
	_ = bl.cp.flush(fctx, why, !h.claimed, h.id) // failures are logged
	bl.cp.untrack(h.id)
	if h.claimed {
		// Stopped with the subscription (or ended on its own, which also
		// stops it): relinquished by shutdown. Otherwise the next round
		// finds our record and claims the partition again.
		bl.release = append(bl.release, h.own)
	}
	bl.publishOwned()
}
