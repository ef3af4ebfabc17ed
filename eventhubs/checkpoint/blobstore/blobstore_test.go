package blobstore_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"go.uber.org/goleak"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs/checkpoint"
	"github.com/isobroker/broker/eventhubs/checkpoint/blobstore"
	"github.com/isobroker/broker/eventhubs/checkpoint/storetest"
	"github.com/isobroker/broker/internal/azurite"
)

var blobs = azurite.NewShared(azurite.Options{})

func TestMain(m *testing.M) {
	code := m.Run()
	blobs.Close()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			_, _ = os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

func newStore(t *testing.T, cc *container.Client) *blobstore.Store {
	t.Helper()
	s, err := blobstore.New(cc, blobstore.Options{Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestConformance(t *testing.T) {
	cs := blobs.ConnectionString(t)
	_, cc := azurite.NewContainer(t, cs)
	storetest.Run(t, func(t *testing.T) checkpoint.Store { return newStore(t, cc) })
}

func ctx30(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNewNilClient(t *testing.T) {
	if _, err := blobstore.New(nil, blobstore.Options{}); !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatalf("New(nil): %v", err)
	}
}

// The blob names and metadata are exactly the SDK's.
func TestLayout(t *testing.T) {
	cs := blobs.ConnectionString(t)
	_, cc := azurite.NewContainer(t, cs)
	s := newStore(t, cc)
	ctx := ctx30(t)
	o := checkpoint.Ownership{Namespace: "MyNs.servicebus.windows.net", EventHub: "Hub", ConsumerGroup: "$Default", PartitionID: "3", OwnerID: "owner-1"}
	if got, err := s.ClaimOwnership(ctx, []checkpoint.Ownership{o}); err != nil || len(got) != 1 {
		t.Fatalf("claim: %v %v", got, err)
	}
	cp := checkpoint.Checkpoint{Namespace: o.Namespace, EventHub: o.EventHub, ConsumerGroup: o.ConsumerGroup, PartitionID: "3", Offset: "1024", SequenceNumber: 77}
	if err := s.SetCheckpoint(ctx, cp); err != nil {
		t.Fatal(err)
	}
	pager := cc.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Include: container.ListBlobsInclude{Metadata: true}})
	got := map[string]map[string]string{}
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page.Segment.BlobItems {
			md := map[string]string{}
			for k, v := range b.Metadata {
				if v != nil {
					md[k] = *v
				}
			}
			got[*b.Name] = md
			if *b.Properties.ContentLength != 0 {
				t.Errorf("blob %s has %d bytes, want empty", *b.Name, *b.Properties.ContentLength)
			}
		}
	}
	want := map[string]map[string]string{
		"MyNs.servicebus.windows.net/Hub/$Default/ownership/3":  {"ownerid": "owner-1"},
		"MyNs.servicebus.windows.net/Hub/$Default/checkpoint/3": {"sequencenumber": "77", "offset": "1024"},
	}
	if len(got) != len(want) {
		t.Fatalf("blobs %v, want %v", got, want)
	}
	for name, md := range want {
		if len(got[name]) != len(md) {
			t.Fatalf("blob %s metadata %v, want %v", name, got[name], md)
		}
		for k, v := range md {
			if got[name][k] != v {
				t.Fatalf("blob %s metadata %v, want %v", name, got[name], md)
			}
		}
	}
}

func TestCorruptCheckpoint(t *testing.T) {
	cs := blobs.ConnectionString(t)
	_, cc := azurite.NewContainer(t, cs)
	s := newStore(t, cc)
	ctx := ctx30(t)
	for name, md := range map[string]map[string]*string{
		"ns/hub/cg/checkpoint/0": {"offset": ptr("1")},                              // no sequence number
		"ns/hub/cg/checkpoint/1": {"sequencenumber": ptr("x"), "offset": ptr("1")},  // not a number
		"ns/hub/cg/checkpoint/2": {"sequencenumber": ptr("5")},                      // no offset
		"ns/hub/cg/checkpoint/3": {"sequencenumber": ptr("-5"), "offset": ptr("1")}, // negative
	} {
		if _, err := cc.NewBlockBlobClient(name).Upload(ctx, streaming.NopCloser(bytes.NewReader(nil)), &blockblob.UploadOptions{Metadata: md}); err != nil {
			t.Fatal(err)
		}
		_, err := s.ListCheckpoints(ctx, "ns", "hub", "cg")
		if !errors.Is(err, checkpoint.ErrCorrupt) || broker.IsRetryable(err) {
			t.Fatalf("with %s = %v: err = %v, want fatal ErrCorrupt", name, md, err)
		}
		if _, err := cc.NewBlobClient(name).Delete(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Blobs deeper below the prefix are not records; metadata names in
	// another case are read.
	if _, err := cc.NewBlockBlobClient("ns/hub/cg/checkpoint/0/extra").Upload(ctx, streaming.NopCloser(bytes.NewReader(nil)), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := cc.NewBlockBlobClient("ns/hub/cg/checkpoint/1").Upload(ctx, streaming.NopCloser(bytes.NewReader(nil)),
		&blockblob.UploadOptions{Metadata: map[string]*string{"SequenceNumber": ptr("9"), "Offset": ptr("99")}}); err != nil {
		t.Fatal(err)
	}
	cps, err := s.ListCheckpoints(ctx, "ns", "hub", "cg")
	if err != nil || len(cps) != 1 || cps[0].PartitionID != "1" || cps[0].SequenceNumber != 9 || cps[0].Offset != "99" {
		t.Fatalf("ListCheckpoints = %+v, %v", cps, err)
	}
}

func ptr(s string) *string { return &s }

func TestMissingContainer(t *testing.T) {
	cs := blobs.ConnectionString(t)
	s := newStore(t, azurite.ContainerClient(t, cs, "no-such-container"))
	ctx := ctx30(t)
	_, err := s.ListOwnership(ctx, "ns", "hub", "cg")
	checkErr(t, err, broker.ErrNotFound, false)
	_, err = s.ClaimOwnership(ctx, []checkpoint.Ownership{{Namespace: "ns", EventHub: "hub", ConsumerGroup: "cg", PartitionID: "0", OwnerID: "a"}})
	checkErr(t, err, broker.ErrNotFound, false)
	err = s.SetCheckpoint(ctx, checkpoint.Checkpoint{Namespace: "ns", EventHub: "hub", ConsumerGroup: "cg", PartitionID: "0", Offset: "1"})
	checkErr(t, err, broker.ErrNotFound, false)
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 404 {
		t.Fatalf("the azcore.ResponseError is not reachable: %v", err)
	}
}

func TestWrongKey(t *testing.T) {
	cs := blobs.ConnectionString(t)
	name, _ := azurite.NewContainer(t, cs)
	const wrongKey = "d3JvbmcgYnV0IHZhbGlkIGJhc2U2NCBrZXkgZm9yIHRlc3Rpbmch"
	bad := strings.Replace(cs, azurite.AccountKey, wrongKey, 1)
	s := newStore(t, azurite.ContainerClient(t, bad, name))
	_, err := s.ListCheckpoints(ctx30(t), "ns", "hub", "cg")
	checkErr(t, err, broker.ErrUnauthorized, false)
	if strings.Contains(err.Error(), wrongKey) || strings.Contains(err.Error(), azurite.AccountKey) {
		t.Fatalf("error shows the key: %v", err)
	}
}

// A SAS token in the container URL never shows in errors.
func TestTransportErrorHidesQuery(t *testing.T) {
	srv := azurite.StartTest(t, azurite.Options{})
	cs := srv.ConnectionString()
	name, _ := azurite.NewContainer(t, cs)
	stopCtx := ctx30(t)
	if err := srv.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	const sig = "SECRETSIGNATURE"
	sasCS := "BlobEndpoint=" + srv.BlobEndpoint() + ";SharedAccessSignature=sv=2020-08-04&sig=" + sig
	s := newStore(t, azurite.ContainerClient(t, sasCS, name))
	ctx := ctx30(t)

	began := time.Now()
	_, err := s.ListOwnership(ctx, "ns", "hub", "cg")
	t.Logf("ListOwnership against a stopped Azurite failed after %v: %v", time.Since(began).Round(time.Millisecond), err)
	checkErr(t, err, broker.ErrUnavailable, true)
	if strings.Contains(err.Error(), sig) {
		t.Fatalf("error shows the SAS signature: %v", err)
	}
	_, err = s.ClaimOwnership(ctx, []checkpoint.Ownership{{Namespace: "ns", EventHub: "hub", ConsumerGroup: "cg", PartitionID: "0", OwnerID: "a"}})
	checkErr(t, err, broker.ErrUnavailable, true)
	err = s.SetCheckpoint(ctx, checkpoint.Checkpoint{Namespace: "ns", EventHub: "hub", ConsumerGroup: "cg", PartitionID: "0", Offset: "1"})
	checkErr(t, err, broker.ErrUnavailable, true)
	if strings.Contains(err.Error(), sig) {
		t.Fatalf("error shows the SAS signature: %v", err)
	}
}

// A call against a store that never answers returns by its deadline.
func TestDeadlineObeyed(t *testing.T) {
	cs := blobs.ConnectionString(t)
	name, _ := azurite.NewContainer(t, cs)
	stall := stallingListener(t)
	stalled := strings.Replace(cs, blobs.Server(t).BlobEndpoint(), "http://"+stall+"/"+azurite.AccountName, 1)
	s := newStore(t, azurite.ContainerClient(t, stalled, name))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := s.ClaimOwnership(ctx, []checkpoint.Ownership{{Namespace: "ns", EventHub: "hub", ConsumerGroup: "cg", PartitionID: "0", OwnerID: "a"}})
	elapsed := time.Since(began)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if elapsed > 5*time.Second {
		t.Fatalf("returned %v after a 300ms deadline", elapsed)
	}
}

func checkErr(t *testing.T, err, sentinel error, retryable bool) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("err = %v, want %v", err, sentinel)
	}
	if broker.IsRetryable(err) != retryable {
		t.Fatalf("IsRetryable(%v) = %v, want %v", err, !retryable, retryable)
	}
	var be *blobstore.Error
	if !errors.As(err, &be) || be.Op == "" || be.Blob == "" {
		t.Fatalf("err %v is not a *blobstore.Error with op and blob", err)
	}
}
