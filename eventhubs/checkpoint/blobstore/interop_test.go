package blobstore_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2/checkpoints"

	"github.com/isobroker/broker/eventhubs/checkpoint"
	"github.com/isobroker/broker/eventhubs/checkpoint/blobstore"
	"github.com/isobroker/broker/internal/azurite"
)

// Interop: our Store and the official SDK's checkpoints.BlobStore on the
// same container see each other's records and contend correctly.

const (
	ioNS  = "interop.servicebus.windows.net"
	ioHub = "orders"
	ioCG  = "$Default"
)

type interop struct {
	ours *blobstore.Store
	sdk  *checkpoints.BlobStore
}

func newInterop(t *testing.T) interop {
	t.Helper()
	cs := blobs.ConnectionString(t)
	name, cc := azurite.NewContainer(t, cs)
	sdk, err := checkpoints.NewBlobStore(azurite.ContainerClient(t, cs, name), nil)
	if err != nil {
		t.Fatal(err)
	}
	return interop{ours: newStore(t, cc), sdk: sdk}
}

func ourOwn(pid, owner, etag string) checkpoint.Ownership {
	return checkpoint.Ownership{Namespace: ioNS, EventHub: ioHub, ConsumerGroup: ioCG, PartitionID: pid, OwnerID: owner, ETag: etag}
}

func sdkOwn(pid, owner string, etag *azcore.ETag) azeventhubs.Ownership {
	return azeventhubs.Ownership{FullyQualifiedNamespace: ioNS, EventHubName: ioHub, ConsumerGroup: ioCG, PartitionID: pid, OwnerID: owner, ETag: etag}
}

// sameETag compares ETags ignoring the quotes the listing omits.
func sameETag(ours string, sdk *azcore.ETag) bool {
	return sdk != nil && strings.Trim(ours, `"`) == strings.Trim(string(*sdk), `"`)
}

func sdkList(t *testing.T, s *checkpoints.BlobStore) map[string]azeventhubs.Ownership {
	t.Helper()
	list, err := s.ListOwnership(ctx30(t), ioNS, ioHub, ioCG, nil)
	if err != nil {
		t.Fatalf("SDK ListOwnership: %v", err)
	}
	m := map[string]azeventhubs.Ownership{}
	for _, o := range list {
		m[o.PartitionID] = o
	}
	return m
}

func ourList(t *testing.T, s *blobstore.Store) map[string]checkpoint.Ownership {
	t.Helper()
	list, err := s.ListOwnership(ctx30(t), ioNS, ioHub, ioCG)
	if err != nil {
		t.Fatalf("our ListOwnership: %v", err)
	}
	m := map[string]checkpoint.Ownership{}
	for _, o := range list {
		m[o.PartitionID] = o
	}
	return m
}

func TestInteropCheckpoints(t *testing.T) {
	io := newInterop(t)
	ctx := ctx30(t)

	// Ours → SDK.
	if err := io.ours.SetCheckpoint(ctx, checkpoint.Checkpoint{Namespace: ioNS, EventHub: ioHub, ConsumerGroup: ioCG, PartitionID: "0", Offset: "4096", SequenceNumber: 41}); err != nil {
		t.Fatal(err)
	}
	// SDK → ours.
	off, seq := "8192", int64(99)
	if err := io.sdk.SetCheckpoint(ctx, azeventhubs.Checkpoint{FullyQualifiedNamespace: ioNS, EventHubName: ioHub, ConsumerGroup: ioCG, PartitionID: "1", Offset: &off, SequenceNumber: &seq}, nil); err != nil {
		t.Fatal(err)
	}

	sdkCps, err := io.sdk.ListCheckpoints(ctx, ioNS, ioHub, ioCG, nil)
	if err != nil {
		t.Fatalf("SDK ListCheckpoints: %v", err)
	}
	if len(sdkCps) != 2 {
		t.Fatalf("SDK lists %d checkpoints, want 2: %+v", len(sdkCps), sdkCps)
	}
	c0 := sdkCps[0]
	if c0.PartitionID != "0" || c0.Offset == nil || *c0.Offset != "4096" || c0.SequenceNumber == nil || *c0.SequenceNumber != 41 ||
		c0.FullyQualifiedNamespace != ioNS || c0.EventHubName != ioHub || c0.ConsumerGroup != ioCG {
		t.Fatalf("SDK reads our checkpoint as %+v", c0)
	}

	ours, err := io.ours.ListCheckpoints(ctx, ioNS, ioHub, ioCG)
	if err != nil {
		t.Fatal(err)
	}
	want := []checkpoint.Checkpoint{
		{Namespace: ioNS, EventHub: ioHub, ConsumerGroup: ioCG, PartitionID: "0", Offset: "4096", SequenceNumber: 41},
		{Namespace: ioNS, EventHub: ioHub, ConsumerGroup: ioCG, PartitionID: "1", Offset: "8192", SequenceNumber: 99},
	}
	if len(ours) != 2 || ours[0] != want[0] || ours[1] != want[1] {
		t.Fatalf("we list %+v, want %+v", ours, want)
	}

	// Overwrites in both directions.
	if err := io.ours.SetCheckpoint(ctx, checkpoint.Checkpoint{Namespace: ioNS, EventHub: ioHub, ConsumerGroup: ioCG, PartitionID: "1", Offset: "9000", SequenceNumber: 120}); err != nil {
		t.Fatal(err)
	}
	off, seq = "5000", 50
	if err := io.sdk.SetCheckpoint(ctx, azeventhubs.Checkpoint{FullyQualifiedNamespace: ioNS, EventHubName: ioHub, ConsumerGroup: ioCG, PartitionID: "0", Offset: &off, SequenceNumber: &seq}, nil); err != nil {
		t.Fatal(err)
	}
	sdkCps, err = io.sdk.ListCheckpoints(ctx, ioNS, ioHub, ioCG, nil)
	if err != nil || len(sdkCps) != 2 || *sdkCps[1].Offset != "9000" || *sdkCps[1].SequenceNumber != 120 {
		t.Fatalf("SDK after our overwrite: %+v %v", sdkCps, err)
	}
	ours, err = io.ours.ListCheckpoints(ctx, ioNS, ioHub, ioCG)
	if err != nil || len(ours) != 2 || ours[0].Offset != "5000" || ours[0].SequenceNumber != 50 {
		t.Fatalf("we after the SDK's overwrite: %+v %v", ours, err)
	}
}

func TestInteropOwnership(t *testing.T) {
	io := newInterop(t)
	ctx := ctx30(t)

	// Ours claims 0, the SDK claims 1; each sees the other's.
	a, err := io.ours.ClaimOwnership(ctx, []checkpoint.Ownership{ourOwn("0", "ours-1", "")})
	if err != nil || len(a) != 1 {
		t.Fatalf("our claim: %+v %v", a, err)
	}
	b, err := io.sdk.ClaimOwnership(ctx, []azeventhubs.Ownership{sdkOwn("1", "sdk-1", nil)}, nil)
	if err != nil || len(b) != 1 {
		t.Fatalf("SDK claim: %+v %v", b, err)
	}
	sl := sdkList(t, io.sdk)
	if o := sl["0"]; o.OwnerID != "ours-1" || !sameETag(a[0].ETag, o.ETag) || o.LastModifiedTime.Sub(a[0].LastModified).Abs() > time.Second {
		t.Fatalf("SDK sees our claim as %+v (ours: %+v)", o, a[0])
	}
	ol := ourList(t, io.ours)
	if o := ol["1"]; o.OwnerID != "sdk-1" || !sameETag(o.ETag, b[0].ETag) || o.LastModified.Sub(b[0].LastModifiedTime).Abs() > time.Second {
		t.Fatalf("we see the SDK's claim as %+v (SDK: %+v)", o, b[0])
	}

	// Creating a record the other created loses, without error, both ways.
	if got, err := io.sdk.ClaimOwnership(ctx, []azeventhubs.Ownership{sdkOwn("0", "sdk-1", nil)}, nil); err != nil || len(got) != 0 {
		t.Fatalf("SDK create-claim of our record: %+v %v; want skipped", got, err)
	}
	if got, err := io.ours.ClaimOwnership(ctx, []checkpoint.Ownership{ourOwn("1", "ours-1", "")}); err != nil || len(got) != 0 {
		t.Fatalf("our create-claim of the SDK's record: %+v %v; want skipped", got, err)
	}

	// The SDK steals 0 with the ETag it listed (the bare form); our renewal
	// with our now stale ETag loses.
	stolen, err := io.sdk.ClaimOwnership(ctx, []azeventhubs.Ownership{sdkOwn("0", "sdk-1", sl["0"].ETag)}, nil)
	if err != nil || len(stolen) != 1 {
		t.Fatalf("SDK steal with listed ETag: %+v %v", stolen, err)
	}
	if got, err := io.ours.ClaimOwnership(ctx, a); err != nil || len(got) != 0 {
		t.Fatalf("our renewal after the SDK's steal: %+v %v; want skipped", got, err)
	}
	// We steal 1 with the ETag we listed; the SDK's renewal with its stale
	// ETag loses.
	mine, err := io.ours.ClaimOwnership(ctx, []checkpoint.Ownership{ourOwn("1", "ours-1", ol["1"].ETag)})
	if err != nil || len(mine) != 1 {
		t.Fatalf("our steal with listed ETag: %+v %v", mine, err)
	}
	if got, err := io.sdk.ClaimOwnership(ctx, b, nil); err != nil || len(got) != 0 {
		t.Fatalf("SDK renewal after our steal: %+v %v; want skipped", got, err)
	}
	// Renewals with the ETag the claim itself returned (header form) work
	// for both.
	if got, err := io.sdk.ClaimOwnership(ctx, stolen, nil); err != nil || len(got) != 1 {
		t.Fatalf("SDK renewal: %+v %v", got, err)
	}
	if got, err := io.ours.ClaimOwnership(ctx, mine); err != nil || len(got) != 1 {
		t.Fatalf("our renewal: %+v %v", got, err)
	}
	ol = ourList(t, io.ours)
	sl = sdkList(t, io.sdk)
	if ol["0"].OwnerID != "sdk-1" || ol["1"].OwnerID != "ours-1" || sl["0"].OwnerID != "sdk-1" || sl["1"].OwnerID != "ours-1" {
		t.Fatalf("final owners: ours %+v, SDK %+v", ol, sl)
	}
}

func TestInteropRelinquish(t *testing.T) {
	io := newInterop(t)
	ctx := ctx30(t)

	// We relinquish; the SDK sees no owner and takes it at once.
	a, err := io.ours.ClaimOwnership(ctx, []checkpoint.Ownership{ourOwn("0", "ours-1", "")})
	if err != nil || len(a) != 1 {
		t.Fatalf("claim: %+v %v", a, err)
	}
	rel := a[0]
	rel.OwnerID = ""
	if got, err := io.ours.ClaimOwnership(ctx, []checkpoint.Ownership{rel}); err != nil || len(got) != 1 {
		t.Fatalf("relinquish: %+v %v", got, err)
	}
	sl := sdkList(t, io.sdk)
	if o, ok := sl["0"]; !ok || o.OwnerID != "" {
		t.Fatalf("SDK sees our relinquished record as %+v (present %v)", o, ok)
	}
	took, err := io.sdk.ClaimOwnership(ctx, []azeventhubs.Ownership{sdkOwn("0", "sdk-1", sl["0"].ETag)}, nil)
	if err != nil || len(took) != 1 {
		t.Fatalf("SDK claim of relinquished: %+v %v", took, err)
	}

	// The SDK relinquishes (as its Processor does on Close); we see no owner.
	rs := took[0]
	rs.OwnerID = ""
	if got, err := io.sdk.ClaimOwnership(ctx, []azeventhubs.Ownership{rs}, nil); err != nil || len(got) != 1 {
		t.Fatalf("SDK relinquish: %+v %v", got, err)
	}
	ol := ourList(t, io.ours)
	if o, ok := ol["0"]; !ok || o.OwnerID != "" {
		t.Fatalf("we see the SDK's relinquished record as %+v (present %v)", o, ok)
	}
	if got, err := io.ours.ClaimOwnership(ctx, []checkpoint.Ownership{ourOwn("0", "ours-2", ol["0"].ETag)}); err != nil || len(got) != 1 {
		t.Fatalf("our claim of relinquished: %+v %v", got, err)
	}
}

// Claimers of both kinds race for one partition: exactly one wins, each round.
func TestInteropConcurrentClaimers(t *testing.T) {
	io := newInterop(t)
	const perSide = 4
	var etag string // "" first: the race to create
	for round := range 3 {
		var (
			mu      sync.Mutex
			winners []string
			errs    []error
			wg      sync.WaitGroup
		)
		start := make(chan struct{})
		for range perSide {
			wg.Add(2)
			go func() {
				defer wg.Done()
				<-start
				got, err := io.ours.ClaimOwnership(ctx30(t), []checkpoint.Ownership{ourOwn("0", "ours", etag)})
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
				}
				for range got {
					winners = append(winners, "ours")
				}
			}()
			go func() {
				defer wg.Done()
				<-start
				var et *azcore.ETag
				if etag != "" {
					e := azcore.ETag(strings.Trim(etag, `"`)) // the SDK's Processor uses the listed, bare form
					et = &e
				}
				got, err := io.sdk.ClaimOwnership(ctx30(t), []azeventhubs.Ownership{sdkOwn("0", "sdk", et)}, nil)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
				}
				for range got {
					winners = append(winners, "sdk")
				}
			}()
		}
		close(start)
		wg.Wait()
		if len(errs) != 0 {
			t.Fatalf("round %d: errors: %v", round, errs)
		}
		if len(winners) != 1 {
			t.Fatalf("round %d: winners %v, want exactly one", round, winners)
		}
		ol := ourList(t, io.ours)
		if ol["0"].OwnerID != winners[0] {
			t.Fatalf("round %d: %s won but the record says %q", round, winners[0], ol["0"].OwnerID)
		}
		etag = ol["0"].ETag
	}
}
