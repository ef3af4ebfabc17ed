package emulator_test

import (
	"bytes"
	"strconv"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/isobroker/broker/eventhubs/emulator"
)

// readPartitionProperties runs a $management READ of one partition over s
// and returns the reply body.
func readPartitionProperties(t *testing.T, s *amqp.Session, hub, pid string) map[string]any {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	snd, err := s.NewSender(ctx, "$management", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = snd.Close(ctx) }()
	rcv, err := s.NewReceiver(ctx, "$management", &amqp.ReceiverOptions{TargetAddress: "mgmt-reply", Credit: 1,
		RequestedSenderSettleMode: amqp.SenderSettleModeSettled.Ptr()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rcv.Close(ctx) }()
	replyTo := "mgmt-reply"
	req := &amqp.Message{
		Properties: &amqp.MessageProperties{MessageID: "props-" + pid, ReplyTo: &replyTo},
		ApplicationProperties: map[string]any{
			"operation": "READ", "type": "com.microsoft:partition", "name": hub, "partition": pid,
		},
	}
	if err := snd.Send(ctx, req, nil); err != nil {
		t.Fatal(err)
	}
	resp, err := rcv.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if code := resp.ApplicationProperties["status-code"]; code != int32(200) {
		t.Fatalf("partition properties: status %#v %v", code, resp.ApplicationProperties["status-description"])
	}
	props, ok := resp.Value.(map[string]any)
	if !ok {
		t.Fatalf("partition properties body %#v", resp.Value)
	}
	return props
}

// TestRetentionBytes checks Config.RetentionBytes. The unit is the size of
// an event as stored and delivered (its sections plus the service's x-opt-*
// annotations); offsets count the same bytes, so event i occupies
// offset[i+1]-offset[i] bytes and after event k is stored the partition
// holds offset[k+1]-offset[begin] bytes. After every send the test checks,
// through $management, that the oldest events were dropped from the front
// exactly as far as needed to fit the limit, never further, and that the
// newest event stays; at the end a receiver from the earliest position sees
// exactly the retained events.
func TestRetentionBytes(t *testing.T) {
	const limit = 1000
	cfg := emulator.Config{AllowAnonymous: true, RetentionBytes: limit,
		Hubs: []emulator.HubConfig{{Name: "ret", Partitions: 1, ConsumerGroups: []string{"late"}}}}
	e, _ := startEmulator(t, cfg)
	s := session(t, dial(t, e, nil))
	ctx := ctxT(t, 20*time.Second)
	snd, err := s.NewSender(ctx, "ret/Partitions/0", nil)
	if err != nil {
		t.Fatal(err)
	}
	// A receiver that reads each event right after it is sent sees every
	// event (the newest is always retained) and so learns every offset.
	live, err := s.NewReceiver(ctx, partitionSource("ret", "$Default", "0"), &amqp.ReceiverOptions{Credit: 10})
	if err != nil {
		t.Fatal(err)
	}
	// Mostly small events and every sixth a large one: a large event must
	// push several small ones out at once.
	body := func(i int) []byte {
		n := 12 + i%3
		if i%6 == 5 {
			n = 230
		}
		return bytes.Repeat([]byte{byte('a' + i%26)}, n)
	}

	const n = 24 // events checked; one more is sent to learn the size of the last
	var offsets []int64
	var begins []int64
	for k := 0; k <= n; k++ {
		if err := snd.Send(ctx, amqp.NewMessage(body(k)), nil); err != nil {
			t.Fatal(err)
		}
		m, err := live.Receive(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if seq := m.Annotations["x-opt-sequence-number"]; seq != int64(k) || !bytes.Equal(m.GetData(), body(k)) {
			t.Fatalf("live receiver: event %d has sequence number %v and body %q", k, seq, m.GetData())
		}
		off, err := strconv.ParseInt(m.Annotations["x-opt-offset"].(string), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		offsets = append(offsets, off)
		if k == n {
			break
		}
		props := readPartitionProperties(t, s, "ret", "0")
		if props["last_enqueued_sequence_number"] != int64(k) || props["is_partition_empty"] != false {
			t.Fatalf("after event %d: properties %v", k, props)
		}
		b, ok := props["begin_sequence_number"].(int64)
		if !ok {
			t.Fatalf("begin_sequence_number %#v", props["begin_sequence_number"])
		}
		begins = append(begins, b)
	}

	size := func(i int64) int64 { return offsets[i+1] - offsets[i] }
	var want int64
	multiDrop := false
	for k := int64(0); k < n; k++ {
		if size(k) <= 0 || size(k) > limit/3 {
			t.Fatalf("event %d occupies %d bytes; the test needs events of at most a third of the limit", k, size(k))
		}
		// Drop from the front only while the partition is over the limit.
		for offsets[k+1]-offsets[want] > limit {
			want++
		}
		got := begins[k]
		if got != want {
			t.Fatalf("after event %d: begin_sequence_number %d, want %d (offsets %v)", k, got, want, offsets[:k+2])
		}
		if held := offsets[k+1] - offsets[got]; held > limit {
			t.Fatalf("after event %d: %d bytes retained, limit %d", k, held, limit)
		}
		if got > 0 && offsets[k+1]-offsets[got-1] <= limit {
			t.Fatalf("after event %d: event %d was dropped although it fit", k, got-1)
		}
		if k > 0 && got < begins[k-1] {
			t.Fatalf("begin_sequence_number went back from %d to %d", begins[k-1], got)
		}
		if k > 0 && got-begins[k-1] >= 2 {
			multiDrop = true
		}
	}
	if !multiDrop {
		t.Fatalf("no large event pushed out several small ones (begins %v): the sizes do not exercise byte accounting", begins)
	}
	final := begins[n-1]
	if final < int64(n)/2 {
		t.Fatalf("only %d of %d events trimmed: retention by bytes did not act", final, n)
	}

	// A receiver that attaches now starts at the first retained event and
	// sees every retained event once, in order, ending with the newest.
	late, err := s.NewReceiver(ctx, partitionSource("ret", "late", "0"), &amqp.ReceiverOptions{Credit: 100})
	if err != nil {
		t.Fatal(err)
	}
	// The extra event n was stored after the last check and may have
	// trimmed more; read the current begin.
	props := readPartitionProperties(t, s, "ret", "0")
	begin := props["begin_sequence_number"].(int64)
	if begin < final || begin > n {
		t.Fatalf("begin_sequence_number %d after %d", begin, final)
	}
	for k := begin; k <= n; k++ {
		m, err := late.Receive(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if seq := m.Annotations["x-opt-sequence-number"]; seq != k || !bytes.Equal(m.GetData(), body(int(k))) {
			t.Fatalf("late receiver: got sequence number %v, want %d", seq, k)
		}
		if off := m.Annotations["x-opt-offset"]; off != strconv.FormatInt(offsets[k], 10) {
			t.Fatalf("late receiver: event %d has offset %v, want %d", k, off, offsets[k])
		}
	}
	if m, err := late.Receive(ctxT(t, 100*time.Millisecond), nil); err == nil {
		t.Fatalf("late receiver got an extra event %v", m.Annotations)
	}
}
