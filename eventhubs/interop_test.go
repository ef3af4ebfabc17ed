package eventhubs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
)

// TestSDKInterop: events sent by the adapter are read by the official SDK
// with the right body, partition key and properties, and vice versa.
func TestSDKInterop(t *testing.T) {
	e := startEmulator(t, emulator.Config{})
	hub := newHub(t, e, 1) // one partition: every key lands on "0"
	b := open(t, e, nil)
	ctx := ctxT(t, 20*time.Second)

	ours := []*broker.Message{
		{ID: "ours-1", Key: "tenant-a", Body: []byte("hello from isobroker"), ContentType: "text/plain",
			Headers: map[string]string{"trace": "t-1", "grüße": "ünïcode"}},
		{ID: "ours-2", Key: "tenant-a", Body: nil},
	}
	if err := b.Publish(ctx, hub, ours...); err != nil {
		t.Fatal(err)
	}
	consumer, err := azeventhubs.NewConsumerClientFromConnectionString(e.ConnectionString(hub), "", azeventhubs.DefaultConsumerGroup, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close(context.Background())
	earliest := true
	pc, err := consumer.NewPartitionClient("0", &azeventhubs.PartitionClientOptions{StartPosition: azeventhubs.StartPosition{Earliest: &earliest}})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close(context.Background())
	var got []*azeventhubs.ReceivedEventData
	for len(got) < len(ours) {
		evs, err := pc.ReceiveEvents(ctx, len(ours)-len(got), nil)
		if err != nil {
			t.Fatalf("SDK receive: %v", err)
		}
		got = append(got, evs...)
	}
	for i, m := range ours {
		g := got[i]
		if g.MessageID == nil || *g.MessageID != m.ID {
			t.Errorf("event %d: MessageID %v, want %s", i, g.MessageID, m.ID)
		}
		if !bytes.Equal(g.Body, m.Body) {
			t.Errorf("event %d: body %q, want %q", i, g.Body, m.Body)
		}
		if g.PartitionKey == nil || *g.PartitionKey != m.Key {
			t.Errorf("event %d: partition key %v, want %s", i, g.PartitionKey, m.Key)
		}
		for k, v := range m.Headers {
			if g.Properties[k] != v {
				t.Errorf("event %d: property %q = %v, want %q", i, k, g.Properties[k], v)
			}
		}
		if m.ContentType != "" && (g.ContentType == nil || *g.ContentType != m.ContentType) {
			t.Errorf("event %d: content type %v", i, g.ContentType)
		}
	}

	// The SDK sends, the adapter receives.
	rcv := newSeen()
	var delivered []*broker.Delivery
	sub, err := b.Subscribe(ctx, hub, func(ctx context.Context, d *broker.Delivery) error {
		delivered = append(delivered, d) // one partition: handler calls are sequential
		return rcv.handle(ctx, d)
	}, broker.StartAt(broker.AtSequence(got[len(got)-1].SequenceNumber, false)))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	producer, err := azeventhubs.NewProducerClientFromConnectionString(e.ConnectionString(hub), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close(context.Background())
	key := "tenant-b"
	batch, err := producer.NewEventDataBatch(ctx, &azeventhubs.EventDataBatchOptions{PartitionKey: &key})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		id, ct := fmt.Sprintf("sdk-%d", i), "application/json"
		if err := batch.AddEventData(&azeventhubs.EventData{
			Body: []byte(fmt.Sprintf(`{"n":%d}`, i)), MessageID: &id, ContentType: &ct,
			Properties: map[string]any{"origin": "sdk", "n": int64(i)},
		}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := producer.SendEventDataBatch(ctx, batch, nil); err != nil {
		t.Fatal(err)
	}
	rcv.waitFor(t, 10*time.Second, "SDK events", func() bool { return rcv.distinct() == 3 })
	for i, d := range delivered {
		if d.ID != fmt.Sprintf("sdk-%d", i) || string(d.Body) != fmt.Sprintf(`{"n":%d}`, i) || d.Key != key ||
			d.ContentType != "application/json" || d.Headers["origin"] != "sdk" || d.Headers["n"] != fmt.Sprint(i) {
			t.Errorf("delivery %d: %+v", i, d.Message)
		}
		if d.Metadata.Partition != "0" || d.Metadata.Topic != hub || d.Metadata.Offset == "" || d.Metadata.EnqueuedAt.IsZero() ||
			d.Metadata.SequenceNumber != got[len(got)-1].SequenceNumber+1+int64(i) {
			t.Errorf("delivery %d metadata: %+v", i, d.Metadata)
		}
	}
}

// TestManagementAndPositions: hub and partition properties, fixed
// partitions and every start position.
func TestManagementAndPositions(t *testing.T) {
	e := startEmulator(t, emulator.Config{})
	hub := newHub(t, e, 3)
	b := open(t, e, nil)
	ctx := ctxT(t, 20*time.Second)
	hp, err := b.HubProperties(ctx, hub)
	if err != nil {
		t.Fatal(err)
	}
	if len(hp.PartitionIDs) != 3 || hp.Name != hub || hp.CreatedAt.IsZero() {
		t.Errorf("hub properties %+v", hp)
	}
	pp, err := b.PartitionProperties(ctx, hub, "1")
	if err != nil {
		t.Fatal(err)
	}
	if !pp.IsEmpty || pp.LastEnqueuedSequenceNumber != -1 {
		t.Errorf("empty partition properties %+v", pp)
	}
	var ms []*broker.Message
	for i := range 10 {
		ms = append(ms, &broker.Message{ID: fmt.Sprint(i), Headers: map[string]string{eventhubs.PartitionIDHeader: "1"}})
	}
	before := time.Now().Add(-time.Second)
	if err := b.Publish(ctx, hub, ms...); err != nil {
		t.Fatal(err)
	}
	pp, err = b.PartitionProperties(ctx, hub, "1")
	if err != nil {
		t.Fatal(err)
	}
	if pp.IsEmpty || pp.LastEnqueuedSequenceNumber != 9 || pp.BeginSequenceNumber != 0 {
		t.Errorf("partition properties after 10 events %+v", pp)
	}
	if _, err := b.PartitionProperties(ctx, hub, "7"); err == nil {
		t.Errorf("properties of a missing partition: no error")
	}

	collect := func(pos broker.Position, want int) []*broker.Delivery {
		t.Helper()
		ch := make(chan *broker.Delivery, 100)
		sub, err := b.Subscribe(ctx, hub, func(_ context.Context, d *broker.Delivery) error { ch <- d; return nil },
			broker.StartAt(pos), broker.WithDriverOption(eventhubs.Partitions{"1"}))
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close(context.Background())
		var out []*broker.Delivery
		for len(out) < want {
			select {
			case d := <-ch:
				out = append(out, d)
			case <-time.After(5 * time.Second):
				t.Fatalf("start %v: got %d of %d", pos, len(out), want)
			}
		}
		select {
		case d := <-ch:
			t.Errorf("start %v: extra delivery %s", pos, d.ID)
		case <-time.After(100 * time.Millisecond):
		}
		return out
	}
	all := collect(broker.Earliest(), 10)
	for i, d := range all {
		if d.ID != fmt.Sprint(i) || d.Metadata.SequenceNumber != int64(i) || d.Metadata.Partition != "1" {
			t.Errorf("earliest: delivery %d = %s seq %d partition %s", i, d.ID, d.Metadata.SequenceNumber, d.Metadata.Partition)
		}
		if _, ok := d.Headers[eventhubs.PartitionIDHeader]; ok {
			t.Errorf("the partition header was sent along")
		}
	}
	if got := collect(broker.AtSequence(4, false), 5); got[0].ID != "5" {
		t.Errorf("after sequence 4 starts at %s", got[0].ID)
	}
	if got := collect(broker.AtSequence(4, true), 6); got[0].ID != "4" {
		t.Errorf("at sequence 4 starts at %s", got[0].ID)
	}
	if got := collect(broker.AtOffset(all[2].Metadata.Offset, false), 7); got[0].ID != "3" {
		t.Errorf("after offset of 2 starts at %s", got[0].ID)
	}
	if got := collect(broker.AtOffset(all[2].Metadata.Offset, true), 8); got[0].ID != "2" {
		t.Errorf("at offset of 2 starts at %s", got[0].ID)
	}
	if got := collect(broker.AtTime(before), 10); got[0].ID != "0" {
		t.Errorf("at time starts at %s", got[0].ID)
	}
	collect(broker.Latest(), 0)

	_, err = b.Subscribe(ctx, hub, func(context.Context, *broker.Delivery) error { return nil }, broker.WithDriverOption(eventhubs.Partitions{"9"}))
	if err == nil {
		t.Errorf("subscribe to a missing partition: no error")
	}
	err = b.Publish(ctx, hub, &broker.Message{Key: "k", Headers: map[string]string{eventhubs.PartitionIDHeader: "1"}})
	if err == nil {
		t.Errorf("publish with both a key and a partition: no error")
	}
}

// TestHandlerErrorsRetried: a failing handler gets the same event again,
// marked redelivered, and the partition waits for it.
func TestHandlerErrorsRetried(t *testing.T) {
	e := startEmulator(t, emulator.Config{})
	hub := newHub(t, e, 1)
	b := open(t, e, nil)
	ctx := ctxT(t, 20*time.Second)
	type call struct {
		id    string
		redel bool
		count int
	}
	calls := make(chan call, 100)
	failures := 0
	sub, err := b.Subscribe(ctx, hub, func(_ context.Context, d *broker.Delivery) error {
		calls <- call{d.ID, d.Metadata.Redelivered, d.Metadata.DeliveryCount}
		if d.ID == "a" && failures < 2 {
			failures++
			return fmt.Errorf("not yet")
		}
		if d.ID == "b" && failures < 3 {
			failures++
			panic("handler bug")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	if err := b.Publish(ctx, hub, &broker.Message{ID: "a"}, &broker.Message{ID: "b"}, &broker.Message{ID: "c"}); err != nil {
		t.Fatal(err)
	}
	want := []call{{"a", false, 0}, {"a", true, 1}, {"a", true, 2}, {"b", false, 0}, {"b", true, 1}, {"c", false, 0}}
	for i, w := range want {
		select {
		case c := <-calls:
			if c != w {
				t.Errorf("call %d = %+v, want %+v", i, c, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("call %d missing", i)
		}
	}
}

// TestKeepAliveAndEagerReconnect: with KeepAlive the idle close never
// comes; with ReconnectEager a lost connection comes back unused.
func TestKeepAliveAndEagerReconnect(t *testing.T) {
	e := startEmulator(t, emulator.Config{IdleTimeout: time.Second, LinkIdleTimeout: 300 * time.Millisecond})
	hub := newHub(t, e, 1)
	logs := &logBuffer{}
	b := open(t, e, logs, eventhubs.WithKeepAlive(300*time.Millisecond), eventhubs.WithReconnect(eventhubs.ReconnectEager))
	if err := b.Publish(ctxT(t, 5*time.Second), hub, &broker.Message{ID: "x"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if n := logs.count("connection closed by peer"); n != 0 {
		t.Errorf("connection closed %d times despite the keep-alive", n)
	}
	if logs.count("keep-alive") == 0 {
		t.Errorf("no keep-alive logged")
	}
	e.Faults().CloseConnections("")
	deadline := time.Now().Add(5 * time.Second)
	for logs.count("msg=reconnected") == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if logs.count("msg=reconnected") != 1 || b.State() != broker.StateConnected {
		t.Errorf("eager reconnect: %d reconnects logged, state %v", logs.count("msg=reconnected"), b.State())
	}
}

// TestLinkSizeLimit: the link's max-message-size, smaller than the
// configured assumption, refuses an event before anything is sent.
func TestLinkSizeLimit(t *testing.T) {
	e := startEmulator(t, emulator.Config{MaxMessageSize: 64 << 10})
	hub := newHub(t, e, 1)
	logs := &logBuffer{}
	b := open(t, e, logs, eventhubs.WithMaxMessageSize(4<<20))
	if got := b.Capabilities().MaxMessageSize; got < 4<<20-64 {
		t.Errorf("MaxMessageSize before any link = %d, want about the configured 4 MiB", got)
	}
	big := &broker.Message{ID: "big", Body: make([]byte, 100<<10)}
	err := b.Publish(ctxT(t, 5*time.Second), hub, &broker.Message{ID: "small"}, big)
	if !errors.Is(err, broker.ErrMessageTooLarge) || broker.IsRetryable(err) {
		t.Fatalf("oversize publish = %v, want fatal ErrMessageTooLarge", err)
	}
	if n := logs.count("publish retrying"); n != 0 {
		t.Errorf("oversize publish retried %d times", n)
	}
	limit := b.Capabilities().MaxMessageSize
	if limit > 64<<10 || limit < 64<<10-64 {
		t.Errorf("MaxMessageSize after attach = %d, want just under 64 KiB", limit)
	}
	if err := b.Publish(ctxT(t, 5*time.Second), hub, &broker.Message{Body: make([]byte, limit)}); err != nil {
		t.Errorf("a body of exactly MaxMessageSize: %v", err)
	}
	if err := b.Publish(ctxT(t, 5*time.Second), hub, &broker.Message{Body: make([]byte, limit+1)}); !errors.Is(err, broker.ErrMessageTooLarge) {
		t.Errorf("a body of MaxMessageSize+1: %v", err)
	}
	pp, err := b.PartitionProperties(ctxT(t, 5*time.Second), hub, "0")
	if err != nil {
		t.Fatal(err)
	}
	if pp.LastEnqueuedSequenceNumber != 0 {
		t.Errorf("partition holds up to sequence %d; want only the one fitting event (0)", pp.LastEnqueuedSequenceNumber)
	}
	// Many small events are split into batches under the limit.
	ms := make([]*broker.Message, 300)
	for i := range ms {
		ms[i] = &broker.Message{ID: fmt.Sprint(i), Body: make([]byte, 1000)}
	}
	if err := b.Publish(ctxT(t, 5*time.Second), hub, ms...); err != nil {
		t.Fatalf("300 × 1000 bytes over a 64 KiB link: %v", err)
	}
}
