// Package blobstore is a checkpoint.Store on an Azure Blob Storage container,
// compatible with the blob checkpoint store of the official Azure SDK for Go
// (azeventhubs/v2 checkpoints.BlobStore): our consumers and the SDK's
// Processor can share one container, seeing each other's ownership claims
// and checkpoints.
//
// # Layout
//
// Every record is an empty block blob whose metadata holds the data:
//
//	<namespace>/<event hub>/<consumer group>/ownership/<partition id>   metadata: ownerid
//	<namespace>/<event hub>/<consumer group>/checkpoint/<partition id>  metadata: sequencenumber, offset
//
// Names are used exactly as given, as the Go SDK does (the .NET, Java and
// Python SDKs lower-case them; to share a container with those, pass
// lower-case names). The sequence number is written in decimal.
//
// A claim with an ETag sets the ownership blob's metadata with If-Match; a
// claim without one uploads the blob with If-None-Match "*". A refused
// condition (412 ConditionNotMet, 409 BlobAlreadyExists, or 404 BlobNotFound
// for a record that no longer exists) is a lost race and skipped. A
// checkpoint sets the checkpoint blob's metadata, uploading the blob if it
// does not exist yet; it is not conditional.
//
// ETags are reported in the quoted form of the HTTP header ("0x8D..."),
// also for listed records, whose listing carries them bare.
//
// LastModified comes from the service and has a resolution of one second.
//
// The container must exist; the store never creates or deletes containers.
package blobstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
	"github.com/isobroker/broker/eventhubs/checkpoint"
)

// Metadata keys, as the Azure SDKs write them.
const (
	MetaOwnerID        = "ownerid"
	MetaSequenceNumber = "sequencenumber"
	MetaOffset         = "offset"
)

// ErrRefused is wrapped by errors of requests the service refused for a
// reason other than the ones mapped to broker sentinels (for example 400
// for a malformed request). Not retryable.
var ErrRefused = errors.New("blobstore: request refused by the service")

// Options configures New. The zero value is usable.
type Options struct {
	// Logger receives debug events for claims won and lost and
	// checkpoints written (default: discarded).
	Logger *slog.Logger
}

// Store is a checkpoint.Store on one blob container. It is safe for
// concurrent use; it holds no state besides the container client, so any
// number of Stores (in any number of processes, with the SDK's BlobStore
// among them) may share a container.
//
// Every call returns by the time its context ends. The container client's
// own retry policy (azcore's, configurable through its ClientOptions)
// applies within that bound. Errors classify for broker.IsRetryable: HTTP
// 408, 429 and 5xx and transport failures wrap broker.ErrUnavailable (or
// broker.ErrBusy for 429/503) and are retryable; 401/403 wrap
// broker.ErrUnauthorized and a missing container broker.ErrNotFound, both
// fatal; any other refusal wraps ErrRefused, fatal. These errors are
// *Error values (wrapped by the classification), through which the
// underlying *azcore.ResponseError stays reachable with errors.As. Error texts never contain the request URL's query (where a SAS
// token would be).
type Store struct {
	cc  *container.Client
	log *slog.Logger
}

var _ checkpoint.Store = (*Store)(nil)

// New returns a Store on the container cc refers to. It sends nothing; a
// missing container shows on first use as an error wrapping
// broker.ErrNotFound.
func New(cc *container.Client, opts Options) (*Store, error) {
	if cc == nil {
		return nil, fmt.Errorf("%w: blobstore: container client is nil", broker.ErrInvalidOption)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Store{cc: cc, log: opts.Logger}, nil
}

func groupPrefix(namespace, eventHub, consumerGroup, kind string) string {
	return namespace + "/" + eventHub + "/" + consumerGroup + "/" + kind + "/"
}

// OwnershipBlobName returns the name of o's ownership blob.
func OwnershipBlobName(o checkpoint.Ownership) string {
	return groupPrefix(o.Namespace, o.EventHub, o.ConsumerGroup, "ownership") + o.PartitionID
}

// CheckpointBlobName returns the name of cp's checkpoint blob.
func CheckpointBlobName(cp checkpoint.Checkpoint) string {
	return groupPrefix(cp.Namespace, cp.EventHub, cp.ConsumerGroup, "checkpoint") + cp.PartitionID
}

// ClaimOwnership implements checkpoint.Store.ClaimOwnership. Claims are
// sent one after another, in order.
func (s *Store) ClaimOwnership(ctx context.Context, claims []checkpoint.Ownership) ([]checkpoint.Ownership, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("blobstore: claim ownership: %w", err)
	}
	for _, c := range claims {
		if err := c.Validate(); err != nil {
			return nil, err
		}
	}
	var won []checkpoint.Ownership
	for _, c := range claims {
		if err := ctx.Err(); err != nil {
			return won, fmt.Errorf("blobstore: claim ownership: %w", err)
		}
		o, ok, err := s.claim(ctx, c)
		if err != nil {
			return won, err
		}
		if ok {
			won = append(won, o)
		}
	}
	return won, nil
}

func (s *Store) claim(ctx context.Context, c checkpoint.Ownership) (checkpoint.Ownership, bool, error) {
	name := OwnershipBlobName(c)
	owner := c.OwnerID
	md := map[string]*string{MetaOwnerID: &owner}
	bc := s.cc.NewBlockBlobClient(name)
	var (
		etag *azcore.ETag
		last = c.LastModified
		err  error
	)
	if c.ETag == "" {
		var resp blockblob.UploadResponse
		ifNoneMatch := azcore.ETagAny
		resp, err = bc.Upload(ctx, streaming.NopCloser(bytes.NewReader(nil)), &blockblob.UploadOptions{
			Metadata: md,
			AccessConditions: &blob.AccessConditions{
				ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: &ifNoneMatch},
			},
		})
		if err == nil {
			etag = resp.ETag
			if resp.LastModified != nil {
				last = *resp.LastModified
			}
		}
	} else {
		var resp blob.SetMetadataResponse
		ifMatch := azcore.ETag(c.ETag)
		resp, err = bc.SetMetadata(ctx, md, &blob.SetMetadataOptions{
			AccessConditions: &blob.AccessConditions{
				ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &ifMatch},
			},
		})
		if err == nil {
			etag = resp.ETag
			if resp.LastModified != nil {
				last = *resp.LastModified
			}
		}
	}
	if err != nil {
		if lostRace(err) {
			s.log.DebugContext(ctx, "checkpoint: ownership claim lost", "blob", name, "owner", c.OwnerID, "etag", c.ETag, "reason", errorCode(err))
			return checkpoint.Ownership{}, false, nil
		}
		return checkpoint.Ownership{}, false, classify(ctx, "claim ownership", name, err)
	}
	if etag == nil || *etag == "" {
		return checkpoint.Ownership{}, false, fmt.Errorf("%w: blobstore: claim ownership %s: the service returned no ETag", checkpoint.ErrCorrupt, name)
	}
	c.ETag = normalizeETag(*etag)
	c.LastModified = last
	s.log.DebugContext(ctx, "checkpoint: ownership claimed", "blob", name, "owner", c.OwnerID, "etag", c.ETag)
	return c, true, nil
}

// normalizeETag returns etag in the quoted form of the HTTP ETag header.
// The service sends that form in response headers but lists blobs with the
// bare value; one form makes ETags from claims and from listings compare
// equal. The service accepts either in If-Match.
func normalizeETag(etag azcore.ETag) string {
	s := string(etag)
	if s == "" || strings.HasPrefix(s, `"`) || strings.HasPrefix(s, `W/"`) {
		return s
	}
	return `"` + s + `"`
}

// lostRace reports whether err is a refused precondition of a claim.
func lostRace(err error) bool {
	if bloberror.HasCode(err, bloberror.ConditionNotMet, bloberror.BlobAlreadyExists, bloberror.BlobNotFound) {
		return true
	}
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusPreconditionFailed
}

// ListOwnership implements checkpoint.Store.ListOwnership. A record whose
// ownerid metadata is missing or empty is listed as relinquished (OwnerID
// ""), as the SDK does for blobs without metadata.
func (s *Store) ListOwnership(ctx context.Context, namespace, eventHub, consumerGroup string) ([]checkpoint.Ownership, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("blobstore: list ownership: %w", err)
	}
	if err := checkpoint.ValidateGroup(namespace, eventHub, consumerGroup); err != nil {
		return nil, err
	}
	prefix := groupPrefix(namespace, eventHub, consumerGroup, "ownership")
	var out []checkpoint.Ownership
	err := s.list(ctx, "list ownership", prefix, func(pid string, item *container.BlobItem) error {
		o := checkpoint.Ownership{Namespace: namespace, EventHub: eventHub, ConsumerGroup: consumerGroup, PartitionID: pid}
		if item.Properties == nil || item.Properties.ETag == nil || item.Properties.LastModified == nil {
			return fmt.Errorf("%w: blobstore: ownership blob %s lists no ETag or Last-Modified", checkpoint.ErrCorrupt, prefix+pid)
		}
		o.ETag = normalizeETag(*item.Properties.ETag)
		o.LastModified = *item.Properties.LastModified
		if v := metadata(item.Metadata, MetaOwnerID); v != nil {
			o.OwnerID = *v
		}
		out = append(out, o)
		return nil
	})
	return out, err
}

// ListCheckpoints implements checkpoint.Store.ListCheckpoints. A checkpoint
// blob without both sequencenumber and offset metadata, or with a sequence
// number that is not a non-negative integer, fails the call with an error
// wrapping checkpoint.ErrCorrupt (the SDK refuses such blobs too).
func (s *Store) ListCheckpoints(ctx context.Context, namespace, eventHub, consumerGroup string) ([]checkpoint.Checkpoint, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("blobstore: list checkpoints: %w", err)
	}
	if err := checkpoint.ValidateGroup(namespace, eventHub, consumerGroup); err != nil {
		return nil, err
	}
	prefix := groupPrefix(namespace, eventHub, consumerGroup, "checkpoint")
	var out []checkpoint.Checkpoint
	err := s.list(ctx, "list checkpoints", prefix, func(pid string, item *container.BlobItem) error {
		seq := metadata(item.Metadata, MetaSequenceNumber)
		off := metadata(item.Metadata, MetaOffset)
		if seq == nil || off == nil {
			return fmt.Errorf("%w: blobstore: checkpoint blob %s lacks %s or %s metadata", checkpoint.ErrCorrupt, prefix+pid, MetaSequenceNumber, MetaOffset)
		}
		n, err := strconv.ParseInt(*seq, 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("%w: blobstore: checkpoint blob %s has sequence number %q", checkpoint.ErrCorrupt, prefix+pid, *seq)
		}
		out = append(out, checkpoint.Checkpoint{
			Namespace: namespace, EventHub: eventHub, ConsumerGroup: consumerGroup, PartitionID: pid,
			Offset: *off, SequenceNumber: n,
		})
		return nil
	})
	return out, err
}

// list pages through the blobs named prefix+<partition id> and calls fn for
// each, in name order. Blobs deeper below the prefix are not records and
// are ignored.
func (s *Store) list(ctx context.Context, op, prefix string, fn func(pid string, item *container.BlobItem) error) error {
	pager := s.cc.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{
		Prefix:  &prefix,
		Include: container.ListBlobsInclude{Metadata: true},
	})
	for pager.More() {
		resp, err := pager.NextPage(ctx)
		if err != nil {
			return classify(ctx, op, prefix, err)
		}
		if resp.Segment == nil {
			continue
		}
		for _, item := range resp.Segment.BlobItems {
			if item == nil || item.Name == nil || !strings.HasPrefix(*item.Name, prefix) {
				continue
			}
			pid := (*item.Name)[len(prefix):]
			if pid == "" || strings.Contains(pid, "/") {
				s.log.DebugContext(ctx, "checkpoint: ignoring blob that is not a record", "blob", *item.Name)
				continue
			}
			if err := fn(pid, item); err != nil {
				return err
			}
		}
	}
	return nil
}

// metadata looks key up case-insensitively (HTTP headers carry metadata
// names, and some stacks change their case).
func metadata(md map[string]*string, key string) *string {
	if v, ok := md[key]; ok {
		return v
	}
	for k, v := range md {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return nil
}

// SetCheckpoint implements checkpoint.Store.SetCheckpoint.
func (s *Store) SetCheckpoint(ctx context.Context, cp checkpoint.Checkpoint) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("blobstore: set checkpoint: %w", err)
	}
	if err := cp.Validate(); err != nil {
		return err
	}
	name := CheckpointBlobName(cp)
	seq := strconv.FormatInt(cp.SequenceNumber, 10)
	off := cp.Offset
	md := map[string]*string{MetaSequenceNumber: &seq, MetaOffset: &off}
	bc := s.cc.NewBlockBlobClient(name)
	_, err := bc.SetMetadata(ctx, md, nil)
	if err != nil && bloberror.HasCode(err, bloberror.BlobNotFound) {
		_, err = bc.Upload(ctx, streaming.NopCloser(bytes.NewReader(nil)), &blockblob.UploadOptions{Metadata: md})
	}
	if err != nil {
		return classify(ctx, "set checkpoint", name, err)
	}
	s.log.DebugContext(ctx, "checkpoint: checkpoint written", "blob", name, "offset", cp.Offset, "sequence_number", cp.SequenceNumber)
	return nil
}

// Error is the error type of failed store calls (other than bad input and
// ended contexts). It unwraps to a broker sentinel and to the cause (an
// *azcore.ResponseError for HTTP failures).
type Error struct {
	// Op is the store operation, e.g. "claim ownership".
	Op string
	// Blob is the blob name or listing prefix concerned.
	Blob string
	// StatusCode and Code are the HTTP status and storage error code, when
	// the service answered (0 and "" otherwise).
	StatusCode int
	Code       string

	sentinel error
	cause    error
}

// Error describes the failure without the request URL.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "blobstore: %s %s: %v", e.Op, e.Blob, e.sentinel)
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.StatusCode)
		if e.Code != "" {
			fmt.Fprintf(&b, " %s", e.Code)
		}
	} else if e.cause != nil {
		fmt.Fprintf(&b, ": %v", e.cause)
	}
	return b.String()
}

// Unwrap returns the broker sentinel and the cause.
func (e *Error) Unwrap() []error { return []error{e.sentinel, e.cause} }

func errorCode(err error) string {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return fmt.Sprintf("%d %s", re.StatusCode, re.ErrorCode)
	}
	return err.Error()
}

// classify wraps a failed call's err: ended contexts pass through (wrapped),
// everything else becomes an *Error marked retryable or fatal.
func classify(ctx context.Context, op, blobName string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return fmt.Errorf("blobstore: %s %s: %w", op, blobName, ctxErr)
	}
	e := &Error{Op: op, Blob: blobName, cause: err}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		e.StatusCode, e.Code = re.StatusCode, re.ErrorCode
		switch {
		case re.StatusCode == http.StatusUnauthorized || re.StatusCode == http.StatusForbidden:
			e.sentinel = broker.ErrUnauthorized
			return driver.MarkFatal(e)
		case re.ErrorCode == string(bloberror.ContainerNotFound):
			e.sentinel = broker.ErrNotFound
			return driver.MarkFatal(e)
		case re.StatusCode == http.StatusTooManyRequests || re.StatusCode == http.StatusServiceUnavailable:
			e.sentinel = broker.ErrBusy
			return driver.MarkRetryable(e)
		case re.StatusCode == http.StatusRequestTimeout || re.StatusCode >= 500:
			e.sentinel = broker.ErrUnavailable
			return driver.MarkRetryable(e)
		default:
			e.sentinel = ErrRefused
			return driver.MarkFatal(e)
		}
	}
	// No answer from the service: a transport failure (refused, reset,
	// timed out). The *url.Error's text holds the URL, which may hold a SAS
	// token: keep only what it wraps.
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		e.cause = ue.Err
	}
	e.sentinel = broker.ErrUnavailable
	return driver.MarkRetryable(e)
}
