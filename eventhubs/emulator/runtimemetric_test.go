package emulator_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/Azure/go-amqp"
)

// TestReceiverRuntimeMetric: a receiver that desires
// com.microsoft:enable-receiver-runtime-metric (the JavaScript SDK's
// trackLastEnqueuedEventProperties) gets, on every event, delivery
// annotations with the partition's last enqueued sequence number, offset
// and time and the retrieval time — the values of the partition's newest
// event; a receiver that does not desire it gets none. Events with a
// header keep it.
func TestReceiverRuntimeMetric(t *testing.T) {
	e, _ := startEmulator(t, anonCfg())
	c := dial(t, e, nil)
	s := session(t, c)
	ctx := ctxT(t, 10*time.Second)
	snd, err := s.NewSender(ctx, "hub/Partitions/0", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		m := amqp.NewMessage([]byte("event-" + strconv.Itoa(i)))
		if i == 1 {
			m.Header = &amqp.MessageHeader{Durable: true, Priority: 7}
		}
		if err := snd.Send(ctx, m, nil); err != nil {
			t.Fatal(err)
		}
	}
	before := time.Now().Add(-time.Second)
	earliest := []amqp.LinkFilter{amqp.NewSelectorFilter("amqp.annotation.x-opt-offset > '-1'")}
	plain, err := s.NewReceiver(ctx, partitionSource("hub", "$Default", "0"), &amqp.ReceiverOptions{Credit: 10, Filters: earliest})
	if err != nil {
		t.Fatal(err)
	}
	metric, err := s.NewReceiver(ctx, partitionSource("hub", "cg", "0"), &amqp.ReceiverOptions{Credit: 10, Filters: earliest,
		DesiredCapabilities: []string{"com.microsoft:enable-receiver-runtime-metric"}})
	if err != nil {
		t.Fatal(err)
	}
	var newest *amqp.Message
	for i := range 3 {
		m, err := plain.Receive(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.DeliveryAnnotations) != 0 {
			t.Errorf("event %d without the capability: delivery annotations %v", i, m.DeliveryAnnotations)
		}
		newest = m
	}
	for i := range 3 {
		m, err := metric.Receive(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(m.GetData()); got != "event-"+strconv.Itoa(i) {
			t.Fatalf("event %d: body %q", i, got)
		}
		if i == 1 && (m.Header == nil || !m.Header.Durable || m.Header.Priority != 7) {
			t.Errorf("event 1: header %+v, want durable, priority 7", m.Header)
		}
		da := m.DeliveryAnnotations
		if da["last_enqueued_sequence_number"] != newest.Annotations["x-opt-sequence-number"] ||
			da["last_enqueued_offset"] != newest.Annotations["x-opt-offset"] ||
			da["last_enqueued_time_utc"] != newest.Annotations["x-opt-enqueued-time"] {
			t.Errorf("event %d: delivery annotations %v, want the newest event's sequence number, offset and time %v", i, da, newest.Annotations)
		}
		if at, ok := da["runtime_info_retrieval_time_utc"].(time.Time); !ok || at.Before(before) || at.After(time.Now().Add(time.Second)) {
			t.Errorf("event %d: retrieval time %v, want about now", i, da["runtime_info_retrieval_time_utc"])
		}
		if m.Annotations["x-opt-sequence-number"] != int64(i) {
			t.Errorf("event %d: sequence number %v", i, m.Annotations["x-opt-sequence-number"])
		}
	}
}
