package checkpoint

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// MemoryStore is a Store that keeps everything in memory. Members that
// share one *MemoryStore coordinate like members sharing one blob container;
// two MemoryStores share nothing. ETags and LastModified behave as in a real
// store: every successful write gets a new ETag and the current time.
//
// It is safe for concurrent use. Its methods never block beyond a short
// internal lock, and return an error wrapping ctx.Err() when called with a
// context that has already ended.
type MemoryStore struct {
	mu          sync.Mutex
	version     uint64 // source of ETags, incremented per write
	ownerships  map[partitionKey]Ownership
	checkpoints map[partitionKey]Checkpoint
}

type groupKey struct{ namespace, eventHub, consumerGroup string }

type partitionKey struct {
	groupKey
	partitionID string
}

// NewMemoryStore returns an empty in-memory store.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{
		ownerships:  make(map[partitionKey]Ownership),
		checkpoints: make(map[partitionKey]Checkpoint),
	}
}

var _ Store = (*MemoryStore)(nil)

func ownershipKey(o Ownership) partitionKey {
	return partitionKey{groupKey{o.Namespace, o.EventHub, o.ConsumerGroup}, o.PartitionID}
}

func checkpointKey(cp Checkpoint) partitionKey {
	return partitionKey{groupKey{cp.Namespace, cp.EventHub, cp.ConsumerGroup}, cp.PartitionID}
}

func ctxErr(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("checkpoint: memory store: %s: %w", op, err)
	}
	return nil
}

// ClaimOwnership implements Store.ClaimOwnership. All claims are decided
// under one lock, in order; a claim whose ETag is non-empty but matches no
// record (or a record with another ETag), or whose ETag is empty while the
// record exists, is skipped.
func (s *MemoryStore) ClaimOwnership(ctx context.Context, claims []Ownership) ([]Ownership, error) {
	if err := ctxErr(ctx, "claim ownership"); err != nil {
		return nil, err
	}
	for _, c := range claims {
		if err := c.Validate(); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var won []Ownership
	for _, c := range claims {
		k := ownershipKey(c)
		cur, exists := s.ownerships[k]
		if c.ETag == "" && exists || c.ETag != "" && (!exists || cur.ETag != c.ETag) {
			continue // lost race
		}
		s.version++
		c.ETag = fmt.Sprintf("\"0x%X\"", s.version)
		c.LastModified = time.Now()
		s.ownerships[k] = c
		won = append(won, c)
	}
	return won, nil
}

// ListOwnership implements Store.ListOwnership.
func (s *MemoryStore) ListOwnership(ctx context.Context, namespace, eventHub, consumerGroup string) ([]Ownership, error) {
	if err := ctxErr(ctx, "list ownership"); err != nil {
		return nil, err
	}
	if err := ValidateGroup(namespace, eventHub, consumerGroup); err != nil {
		return nil, err
	}
	g := groupKey{namespace, eventHub, consumerGroup}
	s.mu.Lock()
	var out []Ownership
	for k, o := range s.ownerships {
		if k.groupKey == g {
			out = append(out, o)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Ownership) int { return cmp.Compare(a.PartitionID, b.PartitionID) })
	return out, nil
}

// ListCheckpoints implements Store.ListCheckpoints.
func (s *MemoryStore) ListCheckpoints(ctx context.Context, namespace, eventHub, consumerGroup string) ([]Checkpoint, error) {
	if err := ctxErr(ctx, "list checkpoints"); err != nil {
		return nil, err
	}
	if err := ValidateGroup(namespace, eventHub, consumerGroup); err != nil {
		return nil, err
	}
	g := groupKey{namespace, eventHub, consumerGroup}
	s.mu.Lock()
	var out []Checkpoint
	for k, cp := range s.checkpoints {
		if k.groupKey == g {
			out = append(out, cp)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Checkpoint) int { return cmp.Compare(a.PartitionID, b.PartitionID) })
	return out, nil
}

// SetCheckpoint implements Store.SetCheckpoint.
func (s *MemoryStore) SetCheckpoint(ctx context.Context, cp Checkpoint) error {
	if err := ctxErr(ctx, "set checkpoint"); err != nil {
		return err
	}
	if err := cp.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	s.checkpoints[checkpointKey(cp)] = cp
	s.mu.Unlock()
	return nil
}
