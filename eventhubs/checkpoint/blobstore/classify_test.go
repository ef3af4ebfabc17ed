package blobstore_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs/checkpoint"
	"github.com/isobroker/broker/eventhubs/checkpoint/blobstore"
)

// fixedStatus answers every request with one HTTP status and storage error
// code, without any network.
type fixedStatus struct {
	status int
	code   string
}

func (f fixedStatus) Do(req *http.Request) (*http.Response, error) {
	h := http.Header{}
	if f.code != "" {
		h.Set("x-ms-error-code", f.code)
	}
	return &http.Response{
		StatusCode: f.status,
		Status:     http.StatusText(f.status),
		Header:     h,
		Body:       io.NopCloser(strings.NewReader("")),
		Request:    req,
	}, nil
}

func TestClassification(t *testing.T) {
	for _, tc := range []struct {
		status    int
		code      string
		sentinel  error
		retryable bool
	}{
		{500, "InternalError", broker.ErrUnavailable, true},
		{502, "", broker.ErrUnavailable, true},
		{503, "ServerBusy", broker.ErrBusy, true},
		{429, "", broker.ErrBusy, true},
		{408, "", broker.ErrUnavailable, true},
		{403, "AuthenticationFailed", broker.ErrUnauthorized, false},
		{401, "", broker.ErrUnauthorized, false},
		{404, "ContainerNotFound", broker.ErrNotFound, false},
		{400, "InvalidMetadata", blobstore.ErrRefused, false},
	} {
		cc, err := container.NewClientWithNoCredential("http://127.0.0.1:1/devstoreaccount1/c?sig=SECRET", &container.ClientOptions{
			ClientOptions: azcore.ClientOptions{
				Transport: fixedStatus{tc.status, tc.code},
				Retry:     policy.RetryOptions{MaxRetries: -1},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		s := newStore(t, cc)
		ctx := ctx30(t)
		o := checkpoint.Ownership{Namespace: "ns", EventHub: "hub", ConsumerGroup: "cg", PartitionID: "0", OwnerID: "a"}
		var errs []error
		_, err = s.ClaimOwnership(ctx, []checkpoint.Ownership{o})
		errs = append(errs, err)
		o.ETag = `"0x1"`
		_, err = s.ClaimOwnership(ctx, []checkpoint.Ownership{o})
		errs = append(errs, err)
		_, err = s.ListOwnership(ctx, "ns", "hub", "cg")
		errs = append(errs, err)
		errs = append(errs, s.SetCheckpoint(ctx, checkpoint.Checkpoint{Namespace: "ns", EventHub: "hub", ConsumerGroup: "cg", PartitionID: "0", Offset: "1"}))
		for i, err := range errs {
			if !errors.Is(err, tc.sentinel) || broker.IsRetryable(err) != tc.retryable {
				t.Errorf("HTTP %d %s, call %d: err = %v (retryable %v); want %v, retryable %v", tc.status, tc.code, i, err, broker.IsRetryable(err), tc.sentinel, tc.retryable)
			}
			var be *blobstore.Error
			if !errors.As(err, &be) || be.StatusCode != tc.status {
				t.Errorf("HTTP %d: no *blobstore.Error with the status in %v", tc.status, err)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("error shows the SAS signature: %v", err)
			}
		}
	}
}
