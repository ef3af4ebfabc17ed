package eventhubs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs/checkpoint"
)

// checkpointer tracks, per partition a balanced member owns, the last
// event its handler is done with (acked) and the last checkpoint written.
// Partition goroutines call ack; the balancer goroutine — the only one
// that writes to the store — calls flush. The mutex guards only memory:
// it is never held across a store call.
type checkpointer struct {
	store                 checkpoint.Store
	namespace, hub, group string
	every                 int
	log                   *slog.Logger
	kick                  chan struct{} // capacity 1: a batch is due

	mu    sync.Mutex
	parts map[string]*cpProgress
}

// cpProgress is one partition's progress. Counters only grow, so that a
// write of a snapshot never marks later acks as written.
type cpProgress struct {
	seq     int64  // sequence number of the last acked event
	offset  string // its offset
	acks    uint64 // acks counted since tracking began
	written uint64 // value of acks at the last successful write
}

func newCheckpointer(store checkpoint.Store, namespace, hub, group string, every int, log *slog.Logger) *checkpointer {
	return &checkpointer{
		store: store, namespace: namespace, hub: hub, group: group,
		every: every, log: log,
		kick:  make(chan struct{}, 1),
		parts: make(map[string]*cpProgress),
	}
}

// track starts tracking pid (after a claim); nothing is dirty yet.
func (c *checkpointer) track(pid string) {
	c.mu.Lock()
	c.parts[pid] = &cpProgress{}
	c.mu.Unlock()
}

// untrack forgets pid (after it was flushed and dropped).
func (c *checkpointer) untrack(pid string) {
	c.mu.Lock()
	delete(c.parts, pid)
	c.mu.Unlock()
}

// ack records that the handler is done with the event at seq/offset of
// pid. When a batch is due it wakes the balancer; it never blocks.
func (c *checkpointer) ack(pid string, seq int64, offset string) {
	c.mu.Lock()
	p := c.parts[pid]
	due := false
	if p != nil && offset != "" {
		p.seq, p.offset = seq, offset
		p.acks++
		due = p.acks-p.written >= uint64(c.every)
	}
	c.mu.Unlock()
	if due {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

// pendingCP is a checkpoint to write and the ack count it covers.
type pendingCP struct {
	cp   checkpoint.Checkpoint
	acks uint64
}

// dirty snapshots the partitions (all when pids is empty) with acks not
// yet written, in partition order.
func (c *checkpointer) dirty(pids []string) []pendingCP {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []pendingCP
	for pid, p := range c.parts {
		if len(pids) > 0 && !slices.Contains(pids, pid) {
			continue
		}
		if p.acks == p.written {
			continue
		}
		out = append(out, pendingCP{
			cp: checkpoint.Checkpoint{Namespace: c.namespace, EventHub: c.hub, ConsumerGroup: c.group,
				PartitionID: pid, Offset: p.offset, SequenceNumber: p.seq},
			acks: p.acks,
		})
	}
	slices.SortFunc(out, func(a, b pendingCP) int { return compareIDs(a.cp.PartitionID, b.cp.PartitionID) })
	return out
}

// flush writes the checkpoints of the dirty partitions among pids (all
// when empty). why labels the log event ("batch", "interval",
// "hand-over", "close"); hand-over and close flushes are logged at info,
// batches at debug. With guard set (the partition may already belong to
// another member), a checkpoint is skipped when the store already holds
// one at or past it, so that a late write never moves the new owner's
// checkpoint back. It returns the joined errors of failed writes; the
// partitions stay dirty and are retried by the next flush. After a
// retryable failure it leaves the remaining partitions to the next flush.
func (c *checkpointer) flush(ctx context.Context, why string, guard bool, pids ...string) error {
	todo := c.dirty(pids)
	if len(todo) == 0 {
		return nil
	}
	var stored map[string]int64
	if guard {
		list, err := c.store.ListCheckpoints(ctx, c.namespace, c.hub, c.group)
		if err != nil {
			return fmt.Errorf("eventhubs: checkpoint (%s): %w", why, err)
		}
		stored = make(map[string]int64, len(list))
		for _, cp := range list {
			stored[cp.PartitionID] = cp.SequenceNumber
		}
	}
	level := slog.LevelDebug
	if why == "hand-over" || why == "close" {
		level = slog.LevelInfo
	}
	var errs []error
	for _, w := range todo {
		pid := w.cp.PartitionID
		if s, ok := stored[pid]; ok && s >= w.cp.SequenceNumber {
			c.log.Info("checkpoint skipped: the store is already past it", "partition", pid,
				"sequence", w.cp.SequenceNumber, "stored_sequence", s, "reason", why)
			c.markWritten(pid, w.acks)
			continue
		}
		if err := c.store.SetCheckpoint(ctx, w.cp); err != nil {
			c.log.Warn("checkpoint write failed", "partition", pid, "sequence", w.cp.SequenceNumber, "reason", why, "err", err)
			errs = append(errs, fmt.Errorf("eventhubs: checkpoint partition %s: %w", pid, err))
			if broker.IsRetryable(err) || ctx.Err() != nil {
				// The store is unreachable or slow: the other writes would
				// most likely fail too, and hold up the balancer. They stay
				// dirty for the next flush.
				break
			}
			continue
		}
		c.markWritten(pid, w.acks)
		c.log.Log(ctx, level, "checkpoint written", "partition", pid, "sequence", w.cp.SequenceNumber,
			"offset", w.cp.Offset, "reason", why)
	}
	return errors.Join(errs...)
}

func (c *checkpointer) markWritten(pid string, acks uint64) {
	c.mu.Lock()
	if p := c.parts[pid]; p != nil && p.written < acks {
		p.written = acks
	}
	c.mu.Unlock()
}
