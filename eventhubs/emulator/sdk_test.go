package emulator_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"

	"github.com/isobroker/broker/eventhubs/emulator"
)

var fastRetry = azeventhubs.RetryOptions{MaxRetries: 2, RetryDelay: 10 * time.Millisecond, MaxRetryDelay: 50 * time.Millisecond}

func sdkEmulator(t *testing.T) *emulator.Emulator {
	e, _ := startEmulator(t, emulator.Config{Hubs: []emulator.HubConfig{{Name: "sdkhub", Partitions: 3}}})
	return e
}

func producer(t *testing.T, e *emulator.Emulator, hub string) *azeventhubs.ProducerClient {
	t.Helper()
	p, err := azeventhubs.NewProducerClientFromConnectionString(e.ConnectionString(hub), "", &azeventhubs.ProducerClientOptions{RetryOptions: fastRetry})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

func consumer(t *testing.T, e *emulator.Emulator, hub string) *azeventhubs.ConsumerClient {
	t.Helper()
	c, err := azeventhubs.NewConsumerClientFromConnectionString(e.ConnectionString(hub), "", azeventhubs.DefaultConsumerGroup, &azeventhubs.ConsumerClientOptions{RetryOptions: fastRetry})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func sendBatch(t *testing.T, p *azeventhubs.ProducerClient, opts *azeventhubs.EventDataBatchOptions, bodies ...string) {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	b, err := p.NewEventDataBatch(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range bodies {
		if err := b.AddEventData(&azeventhubs.EventData{Body: []byte(body), Properties: map[string]any{"body": body}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.SendEventDataBatch(ctx, b, nil); err != nil {
		t.Fatal(err)
	}
}

func receive(t *testing.T, c *azeventhubs.ConsumerClient, pid string, opts *azeventhubs.PartitionClientOptions, n int) []*azeventhubs.ReceivedEventData {
	t.Helper()
	pc, err := c.NewPartitionClient(pid, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pc.Close(context.Background()) }()
	var out []*azeventhubs.ReceivedEventData
	ctx := ctxT(t, 10*time.Second)
	for len(out) < n {
		evs, err := pc.ReceiveEvents(ctx, n-len(out), nil)
		if err != nil {
			t.Fatalf("receive from partition %s after %d events: %v", pid, len(out), err)
		}
		out = append(out, evs...)
	}
	return out
}

func bodies(evs []*azeventhubs.ReceivedEventData) string {
	var s []string
	for _, e := range evs {
		s = append(s, string(e.Body))
	}
	return strings.Join(s, ",")
}

func TestSDKProduceConsume(t *testing.T) {
	e := sdkEmulator(t)
	p := producer(t, e, "sdkhub")
	c := consumer(t, e, "sdkhub")
	ctx := ctxT(t, 20*time.Second)

	props, err := p.GetEventHubProperties(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if props.Name != "sdkhub" || strings.Join(props.PartitionIDs, ",") != "0,1,2" || props.CreatedOn.IsZero() || props.GeoReplicationEnabled {
		t.Fatalf("hub properties %+v", props)
	}
	pp, err := c.GetPartitionProperties(ctx, "1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !pp.IsEmpty || pp.LastEnqueuedSequenceNumber != -1 || pp.PartitionID != "1" || pp.EventHubName != "sdkhub" {
		t.Fatalf("empty partition properties %+v", pp)
	}

	// To a partition, by partition key (twice the same key: same partition),
	// and round-robin.
	pid := "1"
	sendBatch(t, p, &azeventhubs.EventDataBatchOptions{PartitionID: &pid}, "a", "b", "c")
	key, key2 := "customer-7", "customer-9"
	sendBatch(t, p, &azeventhubs.EventDataBatchOptions{PartitionKey: &key}, "k1", "k2")
	sendBatch(t, p, &azeventhubs.EventDataBatchOptions{PartitionKey: &key2}, "m1")
	sendBatch(t, p, &azeventhubs.EventDataBatchOptions{PartitionKey: &key}, "k3")
	sendBatch(t, p, &azeventhubs.EventDataBatchOptions{PartitionKey: &key2}, "m2", "m3")
	sendBatch(t, p, nil, "r1")
	sendBatch(t, p, nil, "r2")
	sendBatch(t, p, nil, "r3")

	earliest := true
	evs := receive(t, c, "1", &azeventhubs.PartitionClientOptions{StartPosition: azeventhubs.StartPosition{Earliest: &earliest}}, 3)
	if bodies(evs) != "a,b,c" {
		t.Fatalf("partition 1 starts with %s", bodies(evs))
	}
	for i, ev := range evs {
		if ev.SequenceNumber != int64(i) || ev.EnqueuedTime == nil || ev.Offset == "" || ev.Properties["body"] != string(ev.Body) || ev.PartitionKey != nil {
			t.Fatalf("event %d: %+v", i, ev)
		}
	}
	// From an offset (exclusive) and a sequence number (inclusive).
	off := evs[0].Offset
	got := receive(t, c, "1", &azeventhubs.PartitionClientOptions{StartPosition: azeventhubs.StartPosition{Offset: &off}}, 2)
	if bodies(got) != "b,c" {
		t.Fatalf("from offset %s: %s", off, bodies(got))
	}
	seq := int64(2)
	got = receive(t, c, "1", &azeventhubs.PartitionClientOptions{StartPosition: azeventhubs.StartPosition{SequenceNumber: &seq, Inclusive: true}}, 1)
	if bodies(got) != "c" {
		t.Fatalf("from sequence number 2: %s", bodies(got))
	}

	// Find the keyed events: every event sent with a key comes back with
	// exactly that key, all events of one key are on one partition, in
	// order, and events sent without a key carry none.
	wantKey := map[string]string{"k1": key, "k2": key, "k3": key, "m1": key2, "m2": key2, "m3": key2}
	keyed := map[string][]string{}      // key -> bodies in partition order
	keyPartition := map[string]string{} // key -> partition id
	total := 0
	for _, id := range props.PartitionIDs {
		pp, err := c.GetPartitionProperties(ctx, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		n := int(pp.LastEnqueuedSequenceNumber + 1)
		total += n
		if n == 0 {
			continue
		}
		if pp.IsEmpty || pp.BeginningSequenceNumber != 0 || pp.LastEnqueuedOn.IsZero() || pp.LastEnqueuedOffset == "-1" {
			t.Fatalf("partition %s properties %+v", id, pp)
		}
		evs := receive(t, c, id, &azeventhubs.PartitionClientOptions{StartPosition: azeventhubs.StartPosition{Earliest: &earliest}}, n)
		for _, ev := range evs {
			body := string(ev.Body)
			want, sentWithKey := wantKey[body]
			if !sentWithKey {
				if ev.PartitionKey != nil {
					t.Fatalf("event %q sent without a key received with partition key %q", body, *ev.PartitionKey)
				}
				continue
			}
			if ev.PartitionKey == nil {
				t.Fatalf("event %q sent with partition key %q received without one", body, want)
			}
			if *ev.PartitionKey != want {
				t.Fatalf("event %q sent with partition key %q received with %q", body, want, *ev.PartitionKey)
			}
			if prev, seen := keyPartition[want]; seen && prev != id {
				t.Fatalf("events of key %q on partitions %s and %s", want, prev, id)
			}
			keyPartition[want] = id
			keyed[want] = append(keyed[want], body)
		}
	}
	if got := strings.Join(keyed[key], ","); got != "k1,k2,k3" {
		t.Fatalf("events with key %q: %s, want k1,k2,k3 on one partition", key, got)
	}
	if got := strings.Join(keyed[key2], ","); got != "m1,m2,m3" {
		t.Fatalf("events with key %q: %s, want m1,m2,m3 on one partition", key2, got)
	}
	if total != 12 {
		t.Fatalf("%d events stored, want 12", total)
	}
}

func TestSDKOwnershipLost(t *testing.T) {
	e := sdkEmulator(t)
	p := producer(t, e, "sdkhub")
	c := consumer(t, e, "sdkhub")
	pid := "0"
	sendBatch(t, p, &azeventhubs.EventDataBatchOptions{PartitionID: &pid}, "x")

	earliest := true
	low, high := int64(1), int64(2)
	first, err := c.NewPartitionClient("0", &azeventhubs.PartitionClientOptions{OwnerLevel: &low, StartPosition: azeventhubs.StartPosition{Earliest: &earliest}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = first.Close(context.Background()) }()
	evs, err := first.ReceiveEvents(ctxT(t, 10*time.Second), 1, nil)
	if err != nil || len(evs) != 1 {
		t.Fatalf("first receiver: %v %v", evs, err)
	}
	second, err := c.NewPartitionClient("0", &azeventhubs.PartitionClientOptions{OwnerLevel: &high, StartPosition: azeventhubs.StartPosition{Earliest: &earliest}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = second.Close(context.Background()) }()
	if evs, err := second.ReceiveEvents(ctxT(t, 10*time.Second), 1, nil); err != nil || len(evs) != 1 {
		t.Fatalf("second receiver: %v %v", evs, err)
	}
	_, err = first.ReceiveEvents(ctxT(t, 10*time.Second), 1, nil)
	var ehErr *azeventhubs.Error
	if !errors.As(err, &ehErr) || ehErr.Code != azeventhubs.ErrorCodeOwnershipLost {
		t.Fatalf("first receiver after steal: %v", err)
	}
}

func TestSDKWrongKey(t *testing.T) {
	e := sdkEmulator(t)
	cs := strings.Replace(e.ConnectionString("sdkhub"), "SharedAccessKey="+e.Key(), "SharedAccessKey=d3JvbmcK", 1)
	p, err := azeventhubs.NewProducerClientFromConnectionString(cs, "", &azeventhubs.ProducerClientOptions{RetryOptions: fastRetry})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Close(context.Background()) }()
	_, err = p.NewEventDataBatch(ctxT(t, 10*time.Second), nil)
	var ehErr *azeventhubs.Error
	if !errors.As(err, &ehErr) || ehErr.Code != azeventhubs.ErrorCodeUnauthorizedAccess {
		t.Fatalf("wrong key: %v", err)
	}
	if strings.Contains(err.Error(), e.Key()) {
		t.Fatal("error leaks the key")
	}
	// The right key still works.
	sendBatch(t, producer(t, e, "sdkhub"), nil, "ok")
}

func TestSDKManyEvents(t *testing.T) {
	e := sdkEmulator(t)
	p := producer(t, e, "sdkhub")
	c := consumer(t, e, "sdkhub")
	pid := "2"
	const n = 1000
	var all []string
	for i := range n {
		all = append(all, fmt.Sprintf("event-%04d-%s", i, strings.Repeat("x", 200)))
	}
	// Several batches, each spanning multiple frames.
	for i := 0; i < n; i += 250 {
		sendBatch(t, p, &azeventhubs.EventDataBatchOptions{PartitionID: &pid}, all[i:i+250]...)
	}
	earliest := true
	evs := receive(t, c, pid, &azeventhubs.PartitionClientOptions{StartPosition: azeventhubs.StartPosition{Earliest: &earliest}, Prefetch: 100}, n)
	for i, ev := range evs {
		if string(ev.Body) != all[i] || ev.SequenceNumber != int64(i) {
			t.Fatalf("event %d: %q seq %d", i, ev.Body[:12], ev.SequenceNumber)
		}
	}
}

// TestSDKRecoversFromFaults checks that the faults the emulator injects are
// the recoverable kind for the SDK: forced connection close, forced link
// detach and a busy server.
func TestSDKRecoversFromFaults(t *testing.T) {
	e := sdkEmulator(t)
	p := producer(t, e, "sdkhub")
	pid := "0"
	sendBatch(t, p, &azeventhubs.EventDataBatchOptions{PartitionID: &pid}, "before")
	e.Faults().CloseConnections("")
	sendBatch(t, p, &azeventhubs.EventDataBatchOptions{PartitionID: &pid}, "after-close")
	e.Faults().DetachLinks("sdkhub", emulator.CondLinkDetachForced, "")
	sendBatch(t, p, &azeventhubs.EventDataBatchOptions{PartitionID: &pid}, "after-detach")
	e.Faults().CloseConnections("")
	e.Faults().RefuseNextAttach(emulator.CondServerBusy, "")
	sendBatch(t, p, &azeventhubs.EventDataBatchOptions{PartitionID: &pid}, "after-busy")
	earliest := true
	got := receive(t, consumer(t, e, "sdkhub"), pid, &azeventhubs.PartitionClientOptions{StartPosition: azeventhubs.StartPosition{Earliest: &earliest}}, 4)
	if bodies(got) != "before,after-close,after-detach,after-busy" {
		t.Fatalf("events %s", bodies(got))
	}
}
