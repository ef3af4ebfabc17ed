package eventhubs

import (
	"context"
	"slices"

	"github.com/isobroker/broker/eventhubs/checkpoint"
)

// shutdown ends the member: it waits for the partitions (their handlers
// finish the event in hand), writes their checkpoints and relinquishes
// the claims, bounded by CloseTimeout and by the Close context (which
// cancels the handlers' context when it ends).
func (bl *balancer) shutdown() {
	defer bl.readyOnce.Do(func() { close(bl.ready) })
	ctx, cancel := context.WithTimeout(context.Background(), bl.o.CloseTimeout)
	defer cancel()
	if hctx := bl.s.HandlerContext(); hctx.Err() == nil {
		stop := context.AfterFunc(hctx, cancel)
		defer stop()
	}
	for _, h := range bl.held {
		h.cancel()
	}
	for len(bl.held) > 0 {
		bl.ended(ctx, <-bl.exited)
	}
	var rel []checkpoint.Ownership
	for _, o := range bl.release {
		if o.ETag != "" {
			o.OwnerID = ""
			rel = append(rel, o)
		}
	}
	bl.release = nil
	bl.mu.Lock()
	bl.owned = nil
	bl.mu.Unlock()
	ids, lost, err := bl.relinquishAll(ctx, rel)
	if err != nil {
		bl.log.Warn("relinquishing failed; the other members take over after expiry", "relinquished", ids, "err", err)
		return
	}
	if len(ids) > 0 || lost > 0 {
		bl.log.Info("ownership relinquished", "partitions", ids, "lost_races", lost)
	}
}

// relinquishAll relinquishes the claims rel (OwnerID already "") and then
// every other record that still names this member: a claim or renewal
// cut short by the stop may have succeeded without its reply (so that
// this member does not know it, or knows an outdated ETag). It returns
// the partitions relinquished, sorted, and how many claims of rel were
// lost to other members.
func (bl *balancer) relinquishAll(ctx context.Context, rel []checkpoint.Ownership) ([]string, int, error) {
	var ids []string
	note := func(won []checkpoint.Ownership) {
		for _, w := range won {
			ids = append(ids, w.PartitionID)
		}
		slices.SortFunc(ids, compareIDs)
	}
	if len(rel) > 0 {
		won, err := bl.store.ClaimOwnership(ctx, rel)
		note(won)
		if err != nil {
			return ids, 0, err
		}
	}
	list, err := bl.store.ListOwnership(ctx, bl.o.Namespace, bl.s.hub, bl.s.group)
	if err != nil {
		return ids, 0, err
	}
	var again []checkpoint.Ownership
	for _, o := range list {
		if o.OwnerID == bl.o.OwnerID && !slices.Contains(ids, o.PartitionID) {
			o.OwnerID = ""
			again = append(again, o)
		}
	}
	if len(again) > 0 {
		won, err := bl.store.ClaimOwnership(ctx, again)
		note(won)
		if err != nil {
			return ids, 0, err
		}
	}
	lost := 0
	for _, r := range rel {
		if !slices.Contains(ids, r.PartitionID) {
			lost++
		}
	}
	return ids, lost, nil
}
