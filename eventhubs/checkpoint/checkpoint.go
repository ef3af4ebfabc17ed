// Package checkpoint defines the store through which the members of one Event
// Hubs consumer group coordinate: who owns which partition (ownership
// records, claimed with optimistic concurrency) and how far each partition
// has been processed (checkpoints).
//
// The Store interface mirrors the CheckpointStore of the official Azure SDK
// for Go (azeventhubs), so that a load balancer written against it behaves
// like the SDK's Processor. Two implementations exist:
//
//   - NewMemoryStore: in process, shared by the members of one process; for
//     tests and single-process deployments.
//   - blobstore.New (package eventhubs/checkpoint/blobstore): Azure Blob
//     Storage with exactly the blob names and metadata of the SDK's
//     checkpoints.BlobStore, so that our consumers and the SDK's Processor
//     can share one store.
//
// The conformance suite in package eventhubs/checkpoint/storetest states the
// contract precisely and is run against every implementation.
//
// # Ownership protocol
//
// An ownership record exists per (namespace, event hub, consumer group,
// partition). Its ETag changes on every successful write. A member claims a
// partition by calling ClaimOwnership with the ETag it last saw for that
// record (from ListOwnership or from its previous claim):
//
//   - ETag "" means "create the record; fail if it exists".
//   - A non-empty ETag means "overwrite the record only if its ETag is still
//     this one".
//
// Exactly one of several concurrent claims with the same starting point
// succeeds; the others are lost races, which ClaimOwnership skips rather than
// report as errors. Renewing is claiming again with one's own current ETag
// (it refreshes LastModified, from which others compute expiry).
// Relinquishing is claiming with OwnerID "" (and the current ETag): the
// record stays, with no owner, so that any member may claim it at once.
//
// Checkpoints are not guarded: the owner of a partition is assumed to be the
// only writer of its checkpoint, and the last write wins.
package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	broker "github.com/isobroker/broker"
)

// ErrCorrupt is returned (wrapped) when a record in the store cannot be read
// as an ownership or checkpoint, for example a checkpoint blob whose
// metadata lacks the sequence number. It is not retryable.
var ErrCorrupt = errors.New("checkpoint: malformed record in store")

// Ownership is the ownership record of one partition of one consumer group.
//
// Namespace is the fully qualified Event Hubs namespace as the SDK's
// Processor uses it (for example "myns.servicebus.windows.net"); names are
// used exactly as given (the Go SDK does not change their case).
type Ownership struct {
	// Namespace, EventHub, ConsumerGroup and PartitionID identify the
	// record. All are required and must not contain "/".
	Namespace     string
	EventHub      string
	ConsumerGroup string
	PartitionID   string

	// OwnerID identifies the owning member; "" means unowned
	// (relinquished). It must be a valid value (see ValidValue); the SDK's
	// Processor uses a UUID.
	OwnerID string
	// ETag is the version of the record: set by the store on every
	// successful claim and by ListOwnership. In a claim, "" means the
	// record must not exist yet; any other value must match the record's
	// current ETag.
	ETag string
	// LastModified is when the record was last written, set by the store.
	// Members compute expiry from it. It is ignored in a claim.
	LastModified time.Time
}

// Checkpoint is the progress record of one partition of one consumer group:
// the offset and sequence number of the last event processed. A consumer
// that takes the partition over starts after it.
type Checkpoint struct {
	// Namespace, EventHub, ConsumerGroup and PartitionID identify the
	// record, with the same rules as in Ownership.
	Namespace     string
	EventHub      string
	ConsumerGroup string
	PartitionID   string

	// Offset is the service's offset of the last processed event (the
	// x-opt-offset annotation), as a string; a valid value (see
	// ValidValue). It is required: the SDK's
	// Processor starts from the offset when there is one, and its blob
	// store refuses checkpoints without one.
	Offset string
	// SequenceNumber is the sequence number of the last processed event;
	// it must not be negative.
	SequenceNumber int64
}

// Store keeps the ownership records and checkpoints of consumer groups.
// Implementations are safe for concurrent use, and every method returns by
// the time ctx ends (with an error wrapping ctx.Err() if it had to stop).
// Errors wrap broker sentinels where one applies (broker.ErrInvalidOption
// for bad input, broker.ErrUnavailable for an unreachable store) and are
// classified for broker.IsRetryable; ErrCorrupt marks unreadable records.
type Store interface {
	// ClaimOwnership tries each claim with optimistic concurrency (see the
	// package documentation): a claim with ETag "" creates the record only
	// if it does not exist, a claim with an ETag overwrites it only if that
	// ETag is still current. It returns the claims that succeeded, in the
	// order given, with their new ETag and LastModified set. A lost race is
	// skipped, not an error. Claiming with OwnerID "" relinquishes the
	// partition.
	//
	// All claims are validated first: if one is malformed, nothing is
	// written and the error wraps broker.ErrInvalidOption. When the store
	// fails part way, the claims that had succeeded until then are
	// returned together with the error.
	ClaimOwnership(ctx context.Context, claims []Ownership) ([]Ownership, error)

	// ListOwnership returns every ownership record of the consumer group,
	// including relinquished ones (OwnerID ""), ordered by PartitionID as
	// strings. Expiry is the caller's business: records are returned
	// however old they are.
	ListOwnership(ctx context.Context, namespace, eventHub, consumerGroup string) ([]Ownership, error)

	// ListCheckpoints returns every checkpoint of the consumer group,
	// ordered by PartitionID as strings.
	ListCheckpoints(ctx context.Context, namespace, eventHub, consumerGroup string) ([]Checkpoint, error)

	// SetCheckpoint creates or overwrites the checkpoint of cp's
	// partition. It does not check ownership: only the partition's owner
	// should call it. A malformed cp (missing field, empty Offset,
	// negative SequenceNumber) gets an error wrapping
	// broker.ErrInvalidOption and nothing is written.
	SetCheckpoint(ctx context.Context, cp Checkpoint) error
}

// ValidateGroup checks the names that identify a consumer group in a store:
// all required, none containing "/". The error wraps
// broker.ErrInvalidOption. Store implementations use it so that all report
// bad input alike.
func ValidateGroup(namespace, eventHub, consumerGroup string) error {
	if err := validName("namespace", namespace); err != nil {
		return err
	}
	if err := validName("event hub", eventHub); err != nil {
		return err
	}
	return validName("consumer group", consumerGroup)
}

// Validate checks that o identifies a partition (see ValidateGroup; the
// PartitionID follows the same rules) and that OwnerID, which may be empty,
// is a valid metadata value (see ValidValue). The error wraps
// broker.ErrInvalidOption.
func (o Ownership) Validate() error {
	if err := ValidateGroup(o.Namespace, o.EventHub, o.ConsumerGroup); err != nil {
		return err
	}
	if err := validName("partition id", o.PartitionID); err != nil {
		return err
	}
	if !ValidValue(o.OwnerID) {
		return fmt.Errorf("%w: checkpoint store: owner id %q of partition %q is not printable ASCII without surrounding spaces", broker.ErrInvalidOption, o.OwnerID, o.PartitionID)
	}
	return nil
}

// ValidValue reports whether v can be stored as blob metadata and read back
// unchanged: printable ASCII, no leading or trailing space. Owner IDs and
// offsets must be valid values, in every store alike.
func ValidValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return false
		}
	}
	return strings.TrimSpace(v) == v
}

// Validate checks that cp identifies a partition and carries a non-empty
// Offset that is a valid value (see ValidValue) and a non-negative
// SequenceNumber. The error wraps
// broker.ErrInvalidOption.
func (cp Checkpoint) Validate() error {
	if err := ValidateGroup(cp.Namespace, cp.EventHub, cp.ConsumerGroup); err != nil {
		return err
	}
	if err := validName("partition id", cp.PartitionID); err != nil {
		return err
	}
	if cp.Offset == "" {
		return fmt.Errorf("%w: checkpoint of partition %q has no offset", broker.ErrInvalidOption, cp.PartitionID)
	}
	if !ValidValue(cp.Offset) {
		return fmt.Errorf("%w: checkpoint of partition %q: offset %q is not printable ASCII without surrounding spaces", broker.ErrInvalidOption, cp.PartitionID, cp.Offset)
	}
	if cp.SequenceNumber < 0 {
		return fmt.Errorf("%w: checkpoint of partition %q has negative sequence number %d", broker.ErrInvalidOption, cp.PartitionID, cp.SequenceNumber)
	}
	return nil
}

func validName(what, v string) error {
	if v == "" {
		return fmt.Errorf("%w: checkpoint store: %s is required", broker.ErrInvalidOption, what)
	}
	if strings.Contains(v, "/") {
		return fmt.Errorf("%w: checkpoint store: %s %q contains '/'", broker.ErrInvalidOption, what, v)
	}
	return nil
}
