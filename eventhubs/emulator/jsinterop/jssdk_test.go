package jsinterop_test

import (
	"bytes"
	"context"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
)

// TestJSHubAndPartitionProperties: the SDK's getEventHubProperties and
// getPartitionProperties read the hub the binary was started with, and a
// partition's last-enqueued values are those of the last event the SDK
// receives from it.
func TestJSHubAndPartitionProperties(t *testing.T) {
	js := requireSDK(t)
	started := time.Now()
	e := startEmulator(t, "-hubs", "props:3")
	cs := e.hub(t, "props")

	var sent struct{ Sent int }
	js.run(t, e, "send", map[string]any{"connectionString": cs, "sends": []jsBatch{
		{PartitionID: ptr("1"), Events: []jsEventIn{{Body: []byte("one")}, {Body: []byte("two")}}},
	}}, &sent)
	var got jsReceived
	js.run(t, e, "receive", jsReceive{ConnectionString: cs, PartitionID: ptr("1"), Position: "earliest", Count: 2}, &got)
	if len(got.Events) != 2 {
		t.Fatalf("received %d events from partition 1, want 2: %+v", len(got.Events), got)
	}
	last := got.Events[1]

	var props struct {
		Hub        jsHubProperties         `json:"hub"`
		Partitions []jsPartitionProperties `json:"partitions"`
	}
	js.run(t, e, "properties", map[string]any{"connectionString": cs}, &props)
	h := props.Hub
	if h.Name != "props" || !slices.Equal(h.PartitionIDs, []string{"0", "1", "2"}) || h.IsGeoDrEnabled {
		t.Errorf("hub properties %+v, want name props, partitions 0 1 2, no geo-DR", h)
	}
	if h.CreatedOn.Before(started.Add(-time.Minute)) || h.CreatedOn.After(time.Now().Add(time.Minute)) {
		t.Errorf("hub created on %v, want about now (test started %v)", h.CreatedOn, started)
	}
	if len(props.Partitions) != 3 {
		t.Fatalf("%d partition properties, want 3", len(props.Partitions))
	}
	for i, p := range props.Partitions {
		id := []string{"0", "1", "2"}[i]
		if p.EventHubName != "props" || p.PartitionID != id || p.BeginningSequenceNumber != 0 {
			t.Errorf("partition %s: %+v", id, p)
		}
		if id != "1" {
			if !p.IsEmpty || p.LastEnqueuedSequenceNumber != -1 || p.LastEnqueuedOffset != "-1" {
				t.Errorf("empty partition %s: %+v, want isEmpty, last sequence number -1, last offset -1", id, p)
			}
			continue
		}
		if p.IsEmpty || p.LastEnqueuedSequenceNumber != last.SequenceNumber || p.LastEnqueuedOffset != last.Offset ||
			!p.LastEnqueuedOnUtc.Equal(last.EnqueuedTimeUtc) {
			t.Errorf("partition 1: %+v, want the last event's sequence number %d, offset %s, enqueued time %v",
				p, last.SequenceNumber, last.Offset, last.EnqueuedTimeUtc)
		}
	}
}

// TestJSSendByPartitionKeyAndID: batches sent with a partition key land
// together in one partition, carrying the key, in order, and a later batch
// with the same key lands there too; batches sent to a partition id land
// in that partition without a key; a batch sent to the hub lands once.
func TestJSSendByPartitionKeyAndID(t *testing.T) {
	js := requireSDK(t)
	e := startEmulator(t, "-hubs", "send:4")
	cs := e.hub(t, "send")
	ev := func(id string) jsEventIn { return jsEventIn{Body: []byte("body of " + id), MessageID: id} }
	batches := []jsBatch{
		{PartitionKey: ptr("tenant-a"), Events: []jsEventIn{ev("a0"), ev("a1")}},
		{PartitionKey: ptr("tenant-b"), Events: []jsEventIn{ev("b0")}},
		{PartitionID: ptr("2"), Events: []jsEventIn{ev("p0"), ev("p1")}},
		{PartitionKey: ptr("tenant-a"), Events: []jsEventIn{ev("a2")}},
		{Events: []jsEventIn{ev("h0")}},
	}
	var sent struct{ Sent int }
	js.run(t, e, "send", map[string]any{"connectionString": cs, "sends": batches}, &sent)
	if sent.Sent != 7 {
		t.Fatalf("sent %d, want 7", sent.Sent)
	}
	var got jsReceived
	js.run(t, e, "receive", jsReceive{ConnectionString: cs, Position: "earliest", Count: 7}, &got)
	evs, dups := byMessageID(got.Events)
	if len(got.Events) != 7 || len(dups) > 0 || len(got.Errors) > 0 {
		t.Fatalf("received %d events (duplicates %v, errors %+v), want the 7 sent once each", len(got.Events), dups, got.Errors)
	}
	for _, group := range []struct {
		key, partition string // partition "" = any, but one for all
		ids            []string
	}{
		{"tenant-a", "", []string{"a0", "a1", "a2"}},
		{"tenant-b", "", []string{"b0"}},
		{"", "2", []string{"p0", "p1"}},
	} {
		first, ok := evs[group.ids[0]]
		if !ok {
			t.Errorf("%s not received", group.ids[0])
			continue
		}
		prevSeq := int64(-1)
		for _, id := range group.ids {
			ev, ok := evs[id]
			if !ok {
				t.Errorf("%s not received", id)
				continue
			}
			if ev.PartitionID != first.PartitionID || (group.partition != "" && ev.PartitionID != group.partition) {
				t.Errorf("%s in partition %s, want %s with %s", id, ev.PartitionID, first.PartitionID, group.ids[0])
			}
			if group.key != "" && deref(ev.PartitionKey) != group.key || group.key == "" && ev.PartitionKey != nil {
				t.Errorf("%s: partition key %s, want %q", id, deref(ev.PartitionKey), group.key)
			}
			if ev.SequenceNumber <= prevSeq {
				t.Errorf("%s: sequence number %d after %d: out of send order", id, ev.SequenceNumber, prevSeq)
			}
			prevSeq = ev.SequenceNumber
			if want := "body of " + id; string(ev.Body) != want {
				t.Errorf("%s: body %q, want %q", id, ev.Body, want)
			}
		}
	}
	if h, ok := evs["h0"]; !ok || h.PartitionKey != nil {
		t.Errorf("h0 (sent to the hub): %+v", h)
	}
}

// TestJSFullBatchAcrossFrames: a batch the SDK fills up to the maximum
// message size the emulator advertises (1 MiB), and a single event of
// nearly that size, reach the emulator in many transfer frames (its
// max-frame-size is 64 KiB), are unpacked, and arrive at the SDK whole.
func TestJSFullBatchAcrossFrames(t *testing.T) {
	js := requireSDK(t)
	e := startEmulator(t, "-hubs", "big:2")
	cs := e.hub(t, "big")
	const size = 100_000
	huge := bytes.Repeat([]byte{0xa5}, 1_000_000)
	var sent struct{ Sent int }
	js.run(t, e, "send", map[string]any{"connectionString": cs, "sends": []jsBatch{
		{PartitionID: ptr("0"), FillSize: size},
		{PartitionID: ptr("1"), Events: []jsEventIn{{Body: huge, MessageID: "huge"}}},
	}}, &sent)
	filled := sent.Sent - 1
	if filled < 9 { // 1 MiB holds ten 100 kB events with their framing
		t.Fatalf("the SDK put %d events of %d bytes into a batch, want about ten", filled, size)
	}
	var got jsReceived
	js.run(t, e, "receive", jsReceive{ConnectionString: cs, Position: "earliest", Count: sent.Sent}, &got)
	evs, dups := byMessageID(got.Events)
	if len(got.Events) != sent.Sent || len(dups) > 0 {
		t.Fatalf("received %d events (duplicates %v), want %d", len(got.Events), dups, sent.Sent)
	}
	for i := range filled {
		id := "fill-" + strconv.Itoa(i)
		if ev := evs[id]; ev.PartitionID != "0" || ev.SequenceNumber != int64(i) || !bytes.Equal(ev.Body, bytes.Repeat([]byte{byte(i)}, size)) {
			t.Errorf("%s: partition %s, sequence number %d, %d body bytes; want partition 0, %d, %d bytes of %d",
				id, ev.PartitionID, ev.SequenceNumber, len(ev.Body), i, size, i)
		}
	}
	if ev := evs["huge"]; ev.PartitionID != "1" || !bytes.Equal(ev.Body, huge) {
		t.Errorf("huge: partition %s, %d body bytes; want partition 1, the %d bytes sent", ev.PartitionID, len(ev.Body), len(huge))
	}
}

// TestJSReceiveFromEveryStartPosition: the SDK's start positions —
// earliest, latest, offset and sequence number each exclusive and
// inclusive, enqueued time — select the events they name.
func TestJSReceiveFromEveryStartPosition(t *testing.T) {
	js := requireSDK(t)
	e := startEmulator(t, "-hubs", "positions:2")
	cs := e.hub(t, "positions")

	// Five events in partition 0, published by our adapter, each enqueued
	// in a later millisecond than the one before: the emulator stamps
	// events with the machine's clock in milliseconds when it stores them,
	// before Publish returns, so once the clock has moved past the
	// millisecond Publish returned in, the next event's stamp is later.
	b := openAdapter(t, e)
	ctx := ctxT(t, 30*time.Second)
	for i := range 5 {
		msg := &broker.Message{ID: "pos-" + string(rune('0'+i)), Body: []byte{byte(i)},
			Headers: map[string]string{eventhubs.PartitionIDHeader: "0"}}
		if err := b.Publish(ctx, "positions", msg); err != nil {
			t.Fatal(err)
		}
		for ms := time.Now().UnixMilli(); time.Now().UnixMilli() <= ms; {
			runtime.Gosched()
		}
	}
	var all jsReceived
	js.run(t, e, "receive", jsReceive{ConnectionString: cs, PartitionID: ptr("0"), Position: "earliest", Count: 5}, &all)
	if got := seqs(all.Events); !slices.Equal(got, []int64{0, 1, 2, 3, 4}) {
		t.Fatalf("earliest: sequence numbers %v, want 0..4", got)
	}
	for i := 1; i < 5; i++ {
		if !all.Events[i].EnqueuedTimeUtc.After(all.Events[i-1].EnqueuedTimeUtc) {
			t.Fatalf("event %d enqueued at %v, not after event %d at %v", i, all.Events[i].EnqueuedTimeUtc, i-1, all.Events[i-1].EnqueuedTimeUtc)
		}
	}
	third := all.Events[2]

	cases := []struct {
		name string
		pos  jsPosition
		want []int64
	}{
		{"sequence number 2 inclusive", seqPos{SequenceNumber: 2, IsInclusive: true}, []int64{2, 3, 4}},
		{"sequence number 2 exclusive", seqPos{SequenceNumber: 2}, []int64{3, 4}},
		{"offset of event 2 inclusive", offsetPos{Offset: third.Offset, IsInclusive: true}, []int64{2, 3, 4}},
		{"offset of event 2 exclusive", offsetPos{Offset: third.Offset}, []int64{3, 4}},
		{"enqueued time of event 2", timePos{EnqueuedOn: third.EnqueuedTimeUtc.UnixMilli()}, []int64{3, 4}}, // the SDK's enqueuedOn is exclusive
		{"enqueued time before event 0", timePos{EnqueuedOn: all.Events[0].EnqueuedTimeUtc.UnixMilli() - 1}, []int64{0, 1, 2, 3, 4}},
	}
	receives := make([]jsReceive, len(cases))
	for i, c := range cases {
		receives[i] = jsReceive{PartitionID: ptr("0"), Position: c.pos, Count: len(c.want)}
	}
	var results []jsReceived
	js.run(t, e, "receiveEach", map[string]any{"connectionString": cs, "receives": receives}, &results)
	if len(results) != len(cases) {
		t.Fatalf("%d results for %d receives", len(results), len(cases))
	}
	for i, c := range cases {
		if got := seqs(results[i].Events); !slices.Equal(got, c.want) || len(results[i].Errors) > 0 {
			t.Errorf("%s: sequence numbers %v (errors %+v), want %v", c.name, got, results[i].Errors, c.want)
		}
	}

	// Latest: only what is sent after the receiver is attached.
	var latest jsReceived
	js.run(t, e, "receive", jsReceive{ConnectionString: cs, PartitionID: ptr("0"), Position: "latest", Count: 1,
		ThenSend: []jsBatch{{PartitionID: ptr("0"), Events: []jsEventIn{{Body: []byte("new"), MessageID: "after-latest"}}}}}, &latest)
	if len(latest.Events) != 1 || deref(latest.Events[0].MessageID) != "after-latest" || latest.Events[0].SequenceNumber != 5 {
		t.Errorf("latest: %+v, want only the event sent after attaching (sequence number 5)", latest.Events)
	}
}

// TestJSTrackLastEnqueuedEventProperties: with the SDK's
// trackLastEnqueuedEventProperties, each batch reports the partition's
// newest event (sequence number, offset, enqueued time) and when that was
// read.
func TestJSTrackLastEnqueuedEventProperties(t *testing.T) {
	js := requireSDK(t)
	e := startEmulator(t, "-hubs", "runtime:2")
	cs := e.hub(t, "runtime")
	var sent struct{ Sent int }
	js.run(t, e, "send", map[string]any{"connectionString": cs, "sends": []jsBatch{
		{PartitionID: ptr("1"), Events: []jsEventIn{{Body: []byte("a")}, {Body: []byte("b")}, {Body: []byte("c")}}},
	}}, &sent)
	before := time.Now()
	var got jsReceived
	js.run(t, e, "receive", jsReceive{ConnectionString: cs, PartitionID: ptr("1"), Position: "earliest", Count: 3, TrackLastEnqueued: true}, &got)
	if len(got.Events) != 3 || len(got.LastEnqueued) == 0 {
		t.Fatalf("received %d events, %d last-enqueued reports; want 3 and at least one", len(got.Events), len(got.LastEnqueued))
	}
	newest := got.Events[2]
	for i, le := range got.LastEnqueued {
		if le.PartitionID != "1" || le.SequenceNumber == nil || *le.SequenceNumber != newest.SequenceNumber ||
			deref(le.Offset) != newest.Offset || !le.EnqueuedOn.Equal(newest.EnqueuedTimeUtc) {
			t.Errorf("report %d: %+v, want partition 1's newest event: sequence number %d, offset %s, enqueued %v",
				i, le, newest.SequenceNumber, newest.Offset, newest.EnqueuedTimeUtc)
		}
		if le.RetrievedOn.Before(before.Add(-time.Minute)) || le.RetrievedOn.After(time.Now().Add(time.Minute)) {
			t.Errorf("report %d: retrieved on %v, want about now", i, le.RetrievedOn)
		}
	}
}

// TestJSEpochSteal: a receiver with a higher owner level takes the
// partition; the old receiver is told with the SDK's
// ReceiverDisconnectedError (not retryable) and its processor closes with
// reason OwnershipLost; the new one receives.
func TestJSEpochSteal(t *testing.T) {
	js := requireSDK(t)
	e := startEmulator(t, "-hubs", "steal:2")
	type side struct {
		Errors       []jsError `json:"errors"`
		CloseReasons []string  `json:"closeReasons"`
		Events       []jsEvent `json:"events"`
	}
	var got struct{ First, Second side }
	js.run(t, e, "steal", map[string]any{"connectionString": e.hub(t, "steal"), "partitionId": "1",
		"events": []jsEventIn{{Body: []byte("for the new owner"), MessageID: "after-steal"}}}, &got)

	if len(got.First.Errors) != 1 {
		t.Fatalf("old receiver errors %+v, want one", got.First.Errors)
	}
	stolen := got.First.Errors[0]
	if stolen.Code != "ReceiverDisconnectedError" || stolen.Retryable == nil || *stolen.Retryable {
		t.Errorf("old receiver told %+v, want ReceiverDisconnectedError, not retryable", stolen)
	}
	if !strings.Contains(stolen.Message, "higher epoch of '2'") || !strings.Contains(stolen.Message, "epoch '1'") {
		t.Errorf("old receiver told %q, want the service's higher-epoch description", stolen.Message)
	}
	if !slices.Equal(got.First.CloseReasons, []string{"OwnershipLost"}) {
		t.Errorf("old receiver closed with %v, want [OwnershipLost]", got.First.CloseReasons)
	}
	if len(got.First.Events) != 0 {
		t.Errorf("old receiver got %d events after the steal", len(got.First.Events))
	}
	if len(got.Second.Errors) != 0 {
		t.Errorf("new receiver errors %+v", got.Second.Errors)
	}
	if len(got.Second.Events) != 1 || deref(got.Second.Events[0].MessageID) != "after-steal" || got.Second.Events[0].PartitionID != "1" {
		t.Errorf("new receiver got %+v, want the event sent after the steal", got.Second.Events)
	}
}

// TestJSLoadBalancingSteal: two SDK consumers with a checkpoint store (so
// owner level 0 on every partition) share a hub: the second takes its half
// from the first by equal-epoch steals, which the first sees as
// ReceiverDisconnectedError and OwnershipLost for exactly the partitions it
// lost; afterwards each partition's event reaches its owner once.
func TestJSLoadBalancingSteal(t *testing.T) {
	js := requireSDK(t)
	e := startEmulator(t, "-hubs", "balanced:4")
	type consumer struct {
		Owned    []string  `json:"owned"`
		Lost     []string  `json:"lost"`
		Errors   []jsError `json:"errors"`
		Received []jsEvent `json:"received"`
	}
	var got struct{ A, B consumer }
	js.run(t, e, "balance", map[string]any{"connectionString": e.hub(t, "balanced"), "partitionCount": 4}, &got)

	owner := map[string]string{}
	for name, c := range map[string]consumer{"A": got.A, "B": got.B} {
		for _, p := range c.Owned {
			if prev, ok := owner[p]; ok {
				t.Errorf("partition %s owned by %s and %s", p, prev, name)
			}
			owner[p] = name
		}
	}
	if len(owner) != 4 || len(got.A.Owned) != 2 || len(got.B.Owned) != 2 {
		t.Fatalf("owners %v: want all four partitions, two each for A and B", owner)
	}
	lost := slices.Clone(got.A.Lost)
	slices.Sort(lost)
	if !slices.Equal(lost, got.B.Owned) {
		t.Errorf("A lost %v, want exactly what B took, %v", got.A.Lost, got.B.Owned)
	}
	if len(got.A.Errors) != len(got.A.Lost) {
		t.Errorf("A's errors %+v, want one per lost partition (%d)", got.A.Errors, len(got.A.Lost))
	}
	for _, err := range got.A.Errors {
		if err.Code != "ReceiverDisconnectedError" {
			t.Errorf("A told %s %q, want ReceiverDisconnectedError", err.Code, err.Message)
		}
	}
	if len(got.B.Errors) != 0 || len(got.B.Lost) != 0 {
		t.Errorf("B errors %+v, lost %v", got.B.Errors, got.B.Lost)
	}
	seen := map[string]bool{}
	for name, c := range map[string]consumer{"A": got.A, "B": got.B} {
		for _, ev := range c.Received {
			want := "balanced-" + ev.PartitionID
			if deref(ev.MessageID) != want || seen[want] || owner[ev.PartitionID] != name {
				t.Errorf("%s received %s from partition %s (owner %s, seen before %v)", name, deref(ev.MessageID), ev.PartitionID, owner[ev.PartitionID], seen[want])
			}
			seen[want] = true
		}
	}
	if len(seen) != 4 {
		t.Errorf("events received %v, want one from each partition", seen)
	}
}

// TestJSWrongKeyIsUnauthorizedFast: with a wrong key, hub properties, a send
// and a receive each fail with the SDK's UnauthorizedError in seconds (the
// SDK retries UnauthorizedError; the script's retry options are short),
// and no error text holds a key.
func TestJSWrongKeyIsUnauthorizedFast(t *testing.T) {
	js := requireSDK(t)
	e := startEmulator(t, "-hubs", "locked:1")
	type outcome struct {
		OK    bool    `json:"ok"`
		MS    int64   `json:"ms"`
		Error jsError `json:"error"`
	}
	var got map[string]outcome
	bad := wrongKey(e.hub(t, "locked"), e.key)
	js.run(t, e, "unauthorized", map[string]any{"connectionString": bad}, &got)
	const bound = 20 * time.Second // the SDK's default retries take minutes
	for _, op := range []string{"properties", "send", "receive"} {
		o, ok := got[op]
		if !ok {
			t.Errorf("%s: no outcome", op)
			continue
		}
		if o.OK {
			t.Errorf("%s succeeded with a wrong key", op)
			continue
		}
		if d := time.Duration(o.MS) * time.Millisecond; d > bound {
			t.Errorf("%s failed after %v, want within %v", op, d, bound)
		}
		for _, leaf := range o.Error.leaves() {
			if leaf.Code != "UnauthorizedError" {
				t.Errorf("%s: error %s %q, want UnauthorizedError", op, leaf.Code, leaf.Message)
			}
			if strings.Contains(leaf.Message, e.key) || strings.Contains(leaf.Message, "d3Jvbmcta2V5") {
				t.Errorf("%s: error text holds a key: %q", op, leaf.Message)
			}
		}
	}
}

// TestJSConsumerGroupFromFlags: a consumer group given to the binary with
// -consumer-groups is there for the SDK; an unknown one is the SDK's
// MessagingEntityNotFoundError.
func TestJSConsumerGroupFromFlags(t *testing.T) {
	js := requireSDK(t)
	e := startEmulator(t, "-hubs", "groups:1", "-consumer-groups", "billing,audit")
	cs := e.hub(t, "groups")
	var sent struct{ Sent int }
	js.run(t, e, "send", map[string]any{"connectionString": cs, "sends": []jsBatch{{Events: []jsEventIn{{Body: []byte("x"), MessageID: "cg"}}}}}, &sent)
	var got jsReceived
	js.run(t, e, "receive", jsReceive{ConnectionString: cs, ConsumerGroup: "billing", PartitionID: ptr("0"), Position: "earliest", Count: 1}, &got)
	if len(got.Events) != 1 || deref(got.Events[0].MessageID) != "cg" {
		t.Errorf("consumer group billing: %+v", got)
	}
	var missing jsReceived
	js.run(t, e, "receive", jsReceive{ConnectionString: cs, ConsumerGroup: "nope", PartitionID: ptr("0"), Position: "earliest", Count: 1, StopOnError: true}, &missing)
	if len(missing.Errors) == 0 {
		t.Fatalf("unknown consumer group: no error, events %+v", missing.Events)
	}
	for _, leaf := range missing.Errors[0].leaves() {
		if leaf.Code != "MessagingEntityNotFoundError" {
			t.Errorf("unknown consumer group: %s %q, want MessagingEntityNotFoundError", leaf.Code, leaf.Message)
		}
	}
}

// openAdapter opens our Event Hubs adapter on the emulator process; its
// log is shown when the test fails.
func openAdapter(t *testing.T, e *emulatorProc) *eventhubs.Broker {
	t.Helper()
	logs := &syncBuffer{}
	b, err := eventhubs.OpenURL(ctxT(t, 20*time.Second), e.namespace, eventhubs.WithName(t.Name()),
		eventhubs.WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if err != nil {
		t.Fatalf("open adapter: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("close adapter: %v", err)
		}
		if t.Failed() {
			t.Logf("adapter log:\n%s", logs.String())
		}
	})
	return b
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestJSReadsEventsOurAdapterWrote: events our adapter publishes — to a key,
// to a partition, with binary, JSON-looking and empty bodies — are read by
// the SDK with body, application properties, content type, message ID and
// partition key intact.
func TestJSReadsEventsOurAdapterWrote(t *testing.T) {
	js := requireSDK(t)
	e := startEmulator(t, "-hubs", "go2js:2")
	b := openAdapter(t, e)
	ours := []*broker.Message{
		{ID: "go-1", Key: "tenant-a", Body: []byte{0x00, 0x01, 0xfe, 0xff, '\n'}, ContentType: "application/octet-stream",
			Headers: map[string]string{"trace": "t-1", "grüße": "ünïcode", "empty": ""}},
		{ID: "go-2", Key: "tenant-a", Body: []byte(`{"looks":"like JSON"}`), ContentType: "application/json",
			Headers: map[string]string{"n": "2"}},
		{ID: "go-3", Body: []byte("to partition 1"), Headers: map[string]string{eventhubs.PartitionIDHeader: "1", "x": "y"}},
		{ID: "go-4"}, // no body, headers or content type
	}
	if err := b.Publish(ctxT(t, 20*time.Second), "go2js", ours...); err != nil {
		t.Fatal(err)
	}
	var got jsReceived
	js.run(t, e, "receive", jsReceive{ConnectionString: e.hub(t, "go2js"), Position: "earliest", Count: len(ours)}, &got)
	evs, dups := byMessageID(got.Events)
	if len(got.Events) != len(ours) || len(dups) > 0 {
		t.Fatalf("SDK received %d events (duplicates %v), want %d", len(got.Events), dups, len(ours))
	}
	for _, m := range ours {
		ev, ok := evs[m.ID]
		if !ok {
			t.Errorf("%s not received by the SDK", m.ID)
			continue
		}
		if !bytes.Equal(ev.Body, m.Body) {
			t.Errorf("%s: body %q, want %q", m.ID, ev.Body, m.Body)
		}
		want := map[string]any{}
		for k, v := range m.Headers {
			if k != eventhubs.PartitionIDHeader {
				want[k] = v
			}
		}
		if !maps.Equal(ev.Properties, want) {
			t.Errorf("%s: properties %v, want %v", m.ID, ev.Properties, want)
		}
		if m.ContentType == "" && ev.ContentType != nil || m.ContentType != "" && deref(ev.ContentType) != m.ContentType {
			t.Errorf("%s: content type %s, want %q", m.ID, deref(ev.ContentType), m.ContentType)
		}
		if m.Key == "" && ev.PartitionKey != nil || m.Key != "" && deref(ev.PartitionKey) != m.Key {
			t.Errorf("%s: partition key %s, want %q", m.ID, deref(ev.PartitionKey), m.Key)
		}
	}
	if evs["go-3"].PartitionID != "1" {
		t.Errorf("go-3 in partition %s, want 1 (the %s header)", evs["go-3"].PartitionID, eventhubs.PartitionIDHeader)
	}
	if a, b := evs["go-1"], evs["go-2"]; a.PartitionID != b.PartitionID || a.SequenceNumber >= b.SequenceNumber {
		t.Errorf("key tenant-a: go-1 at %s/%d, go-2 at %s/%d, want one partition, in order", a.PartitionID, a.SequenceNumber, b.PartitionID, b.SequenceNumber)
	}
}

// TestOurAdapterReadsEventsJSWrote: events the SDK sends — to a key, to a
// partition — reach our adapter's Subscribe with ID, key, body, headers
// and content type intact.
func TestOurAdapterReadsEventsJSWrote(t *testing.T) {
	js := requireSDK(t)
	e := startEmulator(t, "-hubs", "js2go:2")
	theirs := []struct {
		batch jsBatch
		want  []broker.Message
	}{
		{jsBatch{PartitionKey: ptr("tenant-b"), Events: []jsEventIn{
			{Body: []byte{0x00, 0x10, 0xff, 0x7f}, MessageID: "js-1", ContentType: "application/octet-stream",
				Properties: map[string]string{"trace": "t-2", "ünï": "cödé"}},
			{Body: []byte("second"), MessageID: "js-2", ContentType: "text/plain; charset=utf-8"},
		}}, []broker.Message{
			{ID: "js-1", Key: "tenant-b", Body: []byte{0x00, 0x10, 0xff, 0x7f}, ContentType: "application/octet-stream",
				Headers: map[string]string{"trace": "t-2", "ünï": "cödé"}},
			{ID: "js-2", Key: "tenant-b", Body: []byte("second"), ContentType: "text/plain; charset=utf-8"},
		}},
		{jsBatch{PartitionID: ptr("0"), Events: []jsEventIn{
			{Body: []byte{}, MessageID: "js-3", Properties: map[string]string{"only": "one"}},
		}}, []broker.Message{
			{ID: "js-3", Body: []byte{}, Headers: map[string]string{"only": "one"}},
		}},
	}
	var batches []jsBatch
	var want []broker.Message
	for _, x := range theirs {
		batches = append(batches, x.batch)
		want = append(want, x.want...)
	}
	var sent struct{ Sent int }
	js.run(t, e, "send", map[string]any{"connectionString": e.hub(t, "js2go"), "sends": batches}, &sent)

	b := openAdapter(t, e)
	ctx := ctxT(t, 30*time.Second)
	var mu sync.Mutex
	got := map[string]*broker.Message{}
	var order []string
	all := make(chan struct{})
	sub, err := b.Subscribe(ctx, "js2go", func(_ context.Context, d *broker.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		if _, dup := got[d.ID]; dup {
			t.Errorf("%s delivered twice", d.ID)
		}
		got[d.ID] = d.Message
		order = append(order, d.ID)
		if len(got) == len(want) {
			close(all)
		}
		return nil
	}, broker.StartAt(broker.Earliest()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Close(context.Background()) }()
	select {
	case <-all:
	case <-ctx.Done():
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("adapter received %v of %d events", order, len(want))
	}
	mu.Lock()
	defer mu.Unlock()
	for _, w := range want {
		g := got[w.ID]
		if g.Key != w.Key || !bytes.Equal(g.Body, w.Body) || g.ContentType != w.ContentType || !maps.Equal(g.Headers, w.Headers) {
			t.Errorf("%s: got ID %q key %q body %q content type %q headers %v; want key %q body %q content type %q headers %v",
				w.ID, g.ID, g.Key, g.Body, g.ContentType, g.Headers, w.Key, w.Body, w.ContentType, w.Headers)
		}
	}
	if p := got["js-3"].Metadata.Partition; p != "0" {
		t.Errorf("js-3 in partition %s, want 0", p)
	}
	if a, b := got["js-1"].Metadata, got["js-2"].Metadata; a.Partition != b.Partition || a.SequenceNumber >= b.SequenceNumber {
		t.Errorf("key tenant-b: js-1 at %s/%d, js-2 at %s/%d, want one partition, in order", a.Partition, a.SequenceNumber, b.Partition, b.SequenceNumber)
	}
}
