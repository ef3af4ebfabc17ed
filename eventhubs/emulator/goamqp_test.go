package emulator_test

import (
	"bytes"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/isobroker/broker/eventhubs/emulator"
)

func anonCfg() emulator.Config {
	return emulator.Config{AllowAnonymous: true, Hubs: []emulator.HubConfig{{Name: "hub", Partitions: 2, ConsumerGroups: []string{"cg"}}}}
}

func partitionSource(hub, cg, p string) string {
	return fmt.Sprintf("%s/ConsumerGroups/%s/Partitions/%s", hub, cg, p)
}

func TestGoAMQPSendReceive(t *testing.T) {
	e, _ := startEmulator(t, anonCfg())
	c := dial(t, e, nil)
	s := session(t, c)
	ctx := ctxT(t, 10*time.Second)
	snd, err := s.NewSender(ctx, "hub/Partitions/1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if snd.MaxMessageSize() != emulator.DefaultMaxMessageSize {
		t.Fatalf("max message size %d", snd.MaxMessageSize())
	}
	before := time.Now().Add(-time.Second)
	for i := range 10 {
		m := amqp.NewMessage([]byte("event-" + strconv.Itoa(i)))
		m.ApplicationProperties = map[string]any{"i": int64(i)}
		if err := snd.Send(ctx, m, nil); err != nil {
			t.Fatal(err)
		}
	}
	rcv, err := s.NewReceiver(ctx, partitionSource("hub", "$Default", "1"), &amqp.ReceiverOptions{
		Credit: 100, Filters: []amqp.LinkFilter{amqp.NewSelectorFilter("amqp.annotation.x-opt-offset > '-1'")},
	})
	if err != nil {
		t.Fatal(err)
	}
	var lastOffset int64 = -1
	for i := range 10 {
		m, err := rcv.Receive(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(m.GetData()); got != "event-"+strconv.Itoa(i) {
			t.Fatalf("event %d: %q", i, got)
		}
		if m.ApplicationProperties["i"] != int64(i) {
			t.Fatalf("app props %v", m.ApplicationProperties)
		}
		seq, ok := m.Annotations["x-opt-sequence-number"].(int64)
		if !ok || seq != int64(i) {
			t.Fatalf("sequence number %#v", m.Annotations["x-opt-sequence-number"])
		}
		off, ok := m.Annotations["x-opt-offset"].(string)
		if !ok {
			t.Fatalf("offset %#v", m.Annotations["x-opt-offset"])
		}
		o, err := strconv.ParseInt(off, 10, 64)
		if err != nil || o <= lastOffset {
			t.Fatalf("offset %q after %d", off, lastOffset)
		}
		lastOffset = o
		et, ok := m.Annotations["x-opt-enqueued-time"].(time.Time)
		if !ok || et.Before(before) || et.After(time.Now().Add(time.Second)) {
			t.Fatalf("enqueued time %#v", m.Annotations["x-opt-enqueued-time"])
		}
	}
	// Nothing on the other partition.
	rcv0, err := s.NewReceiver(ctx, partitionSource("hub", "cg", "0"), &amqp.ReceiverOptions{Credit: 10})
	if err != nil {
		t.Fatal(err)
	}
	short := ctxT(t, 100*time.Millisecond)
	if m, err := rcv0.Receive(short, nil); err == nil {
		t.Fatalf("unexpected event on partition 0: %v", m)
	}
	if err := rcv.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := snd.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestGoAMQPMultiFrame(t *testing.T) {
	e, _ := startEmulator(t, anonCfg())
	// A small client max-frame-size makes the server split its transfers too.
	c := dial(t, e, &amqp.ConnOptions{MaxFrameSize: 4096})
	s := session(t, c)
	ctx := ctxT(t, 10*time.Second)
	snd, err := s.NewSender(ctx, "hub/Partitions/0", nil)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 300<<10/16) // 300 KiB: many frames of 64 KiB from the client
	if err := snd.Send(ctx, amqp.NewMessage(big), nil); err != nil {
		t.Fatal(err)
	}
	rcv, err := s.NewReceiver(ctx, partitionSource("hub", "$Default", "0"), &amqp.ReceiverOptions{Credit: 5})
	if err != nil {
		t.Fatal(err)
	}
	m, err := rcv.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.GetData(), big) {
		t.Fatalf("received %d bytes, want %d", len(m.GetData()), len(big))
	}
}

func TestGoAMQPCredit(t *testing.T) {
	e, _ := startEmulator(t, anonCfg())
	c := dial(t, e, nil)
	s := session(t, c)
	ctx := ctxT(t, 10*time.Second)
	snd, err := s.NewSender(ctx, "hub/Partitions/0", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := snd.Send(ctx, amqp.NewMessage([]byte{byte(i)}), nil); err != nil {
			t.Fatal(err)
		}
	}
	rcv, err := s.NewReceiver(ctx, partitionSource("hub", "$Default", "0"), &amqp.ReceiverOptions{Credit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := rcv.IssueCredit(2); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		m, err := rcv.Receive(ctx, nil)
		if err != nil || m.GetData()[0] != byte(i) {
			t.Fatalf("receive %d: %v %v", i, m, err)
		}
	}
	if m, err := rcv.Receive(ctxT(t, 150*time.Millisecond), nil); err == nil {
		t.Fatalf("received beyond credit: %v", m.GetData())
	}
	// 3 events are available, credit 10: the server sends 3, and a drain
	// then consumes the rest of the credit.
	if err := rcv.IssueCredit(10); err != nil {
		t.Fatal(err)
	}
	for i := 2; i < 5; i++ {
		m, err := rcv.Receive(ctx, nil)
		if err != nil || m.GetData()[0] != byte(i) {
			t.Fatalf("receive %d: %v %v", i, m, err)
		}
	}
	if err := rcv.DrainCredit(ctx, nil); err != nil {
		t.Fatal(err)
	}
	// Sending more does not arrive: credit was drained.
	if err := snd.Send(ctx, amqp.NewMessage([]byte{9}), nil); err != nil {
		t.Fatal(err)
	}
	if m, err := rcv.Receive(ctxT(t, 150*time.Millisecond), nil); err == nil {
		t.Fatalf("received after drain: %v", m.GetData())
	}
	if err := rcv.IssueCredit(1); err != nil {
		t.Fatal(err)
	}
	if m, err := rcv.Receive(ctx, nil); err != nil || m.GetData()[0] != 9 {
		t.Fatalf("after new credit: %v %v", m, err)
	}
}

func TestGoAMQPManyEventsAcrossWindows(t *testing.T) {
	e, _ := startEmulator(t, anonCfg())
	c := dial(t, e, nil)
	s := session(t, c)
	ctx := ctxT(t, 20*time.Second)
	snd, err := s.NewSender(ctx, "hub", nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000 // more than a session window's worth each way
	for i := range n {
		m := amqp.NewMessage([]byte("x"))
		if err := snd.Send(ctx, m, &amqp.SendOptions{Settled: i%2 == 0}); err != nil {
			t.Fatal(err)
		}
	}
	total := 0
	for p := range 2 {
		rcv, err := s.NewReceiver(ctx, partitionSource("hub", "$Default", strconv.Itoa(p)), &amqp.ReceiverOptions{Credit: 300})
		if err != nil {
			t.Fatal(err)
		}
		for range n / 2 {
			if _, err := rcv.Receive(ctx, nil); err != nil {
				t.Fatal(err)
			}
			total++
		}
	}
	if total != n {
		t.Fatalf("received %d", total)
	}
}

func TestGoAMQPForcedClose(t *testing.T) {
	e, _ := startEmulator(t, anonCfg())
	c := dial(t, e, nil)
	s := session(t, c)
	ctx := ctxT(t, 10*time.Second)
	rcv, err := s.NewReceiver(ctx, partitionSource("hub", "$Default", "0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := e.Faults().CloseConnections(""); n != 1 {
		t.Fatalf("closed %d connections", n)
	}
	_, err = rcv.Receive(ctx, nil)
	if remoteCond(err) != emulator.CondConnectionForced {
		t.Fatalf("receive error %v", err)
	}
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("connection not closed")
	}
	// The emulator keeps serving.
	c2 := dial(t, e, nil)
	if _, err := session(t, c2).NewSender(ctx, "hub", nil); err != nil {
		t.Fatal(err)
	}
}

func TestGoAMQPDetachConditions(t *testing.T) {
	e, _ := startEmulator(t, anonCfg())
	c := dial(t, e, nil)
	s := session(t, c)
	ctx := ctxT(t, 10*time.Second)

	rcv, err := s.NewReceiver(ctx, partitionSource("hub", "$Default", "0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.Faults().DetachLinks("hub", emulator.CondLinkDetachForced, "forced by test")
	if _, err := rcv.Receive(ctx, nil); remoteCond(err) != emulator.CondLinkDetachForced {
		t.Fatalf("receive after detach: %v", err)
	}

	e.Faults().RefuseNextAttach("", "")
	if _, err := s.NewSender(ctx, "hub", nil); remoteCond(err) != emulator.CondServerBusy {
		t.Fatalf("refused attach: %v", err)
	}
	if _, err := s.NewSender(ctx, "hub", nil); err != nil {
		t.Fatalf("attach after refusal: %v", err)
	}

	for _, addr := range []string{"nohub", "hub/Partitions/7", "hub/Partitions/x", "hub/Other/0"} {
		if _, err := s.NewSender(ctx, addr, nil); remoteCond(err) != emulator.CondNotFound {
			t.Fatalf("sender %q: %v", addr, err)
		}
	}
	for _, addr := range []string{partitionSource("nohub", "$Default", "0"), partitionSource("hub", "nogroup", "0"), partitionSource("hub", "$Default", "2"), "hub"} {
		if _, err := s.NewReceiver(ctx, addr, nil); remoteCond(err) != emulator.CondNotFound {
			t.Fatalf("receiver %q: %v", addr, err)
		}
	}
	// The session still works after all the refusals.
	snd, err := s.NewSender(ctx, "HUB/partitions/1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snd.Send(ctx, amqp.NewMessage([]byte("ok")), nil); err != nil {
		t.Fatal(err)
	}
}

func epochReceiver(t *testing.T, s *amqp.Session, name string, epoch *int64) (*amqp.Receiver, error) {
	props := map[string]any{"com.microsoft:receiver-name": name}
	if epoch != nil {
		props["com.microsoft:epoch"] = *epoch
	}
	return s.NewReceiver(ctxT(t, 5*time.Second), partitionSource("hub", "$Default", "0"), &amqp.ReceiverOptions{Properties: props})
}

func TestGoAMQPEpochs(t *testing.T) {
	e, _ := startEmulator(t, anonCfg())
	s1 := session(t, dial(t, e, nil))
	s2 := session(t, dial(t, e, nil))
	ctx := ctxT(t, 10*time.Second)
	one, two, zero := int64(1), int64(2), int64(0)

	// Five non-epoch receivers are fine, a sixth is refused.
	var plain []*amqp.Receiver
	for i := range 5 {
		r, err := epochReceiver(t, s1, fmt.Sprintf("plain-%d", i), nil)
		if err != nil {
			t.Fatal(err)
		}
		plain = append(plain, r)
	}
	if _, err := epochReceiver(t, s1, "plain-6", nil); remoteCond(err) != emulator.CondResourceLimitExceeded {
		t.Fatalf("sixth receiver: %v", err)
	}
	// An epoch receiver steals from all of them.
	r1, err := epochReceiver(t, s2, "epoch-1", &one)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range plain {
		if _, err := r.Receive(ctx, nil); remoteCond(err) != emulator.CondLinkStolen {
			t.Fatalf("plain receiver after steal: %v", err)
		}
	}
	// Lower epoch and non-epoch are refused.
	if _, err := epochReceiver(t, s1, "epoch-0", &zero); remoteCond(err) != emulator.CondLinkStolen {
		t.Fatalf("lower epoch: %v", err)
	}
	if _, err := epochReceiver(t, s1, "plain-late", nil); remoteCond(err) != emulator.CondLinkStolen {
		t.Fatalf("non-epoch after epoch: %v", err)
	}
	// Equal epoch steals, higher steals again.
	r1b, err := epochReceiver(t, s1, "epoch-1b", &one)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r1.Receive(ctx, nil)
	var le *amqp.LinkError
	if remoteCond(err) != emulator.CondLinkStolen {
		t.Fatalf("equal epoch steal: %v", err)
	}
	_ = le
	if _, err := epochReceiver(t, s2, "epoch-2", &two); err != nil {
		t.Fatal(err)
	}
	if _, err := r1b.Receive(ctx, nil); remoteCond(err) != emulator.CondLinkStolen {
		t.Fatalf("higher epoch steal: %v", err)
	}
}

func TestGoAMQPSelectorFilters(t *testing.T) {
	e, _ := startEmulator(t, anonCfg())
	s := session(t, dial(t, e, nil))
	ctx := ctxT(t, 10*time.Second)
	snd, err := s.NewSender(ctx, "hub/Partitions/0", nil)
	if err != nil {
		t.Fatal(err)
	}
	var offsets []string
	var times []time.Time
	for i := range 5 {
		if err := snd.Send(ctx, amqp.NewMessage([]byte{byte(i)}), nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Millisecond) // distinct enqueued times
	}
	all, err := s.NewReceiver(ctx, partitionSource("hub", "$Default", "0"), &amqp.ReceiverOptions{Credit: 10})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		m, err := all.Receive(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		offsets = append(offsets, m.Annotations["x-opt-offset"].(string))
		times = append(times, m.Annotations["x-opt-enqueued-time"].(time.Time))
	}
	first := func(expr string) int {
		t.Helper()
		r, err := s.NewReceiver(ctx, partitionSource("hub", "$Default", "0"), &amqp.ReceiverOptions{
			Credit: 10, Filters: []amqp.LinkFilter{amqp.NewSelectorFilter(expr)}})
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		defer func() { _ = r.Close(ctx) }()
		m, err := r.Receive(ctxT(t, 200*time.Millisecond), nil)
		if err != nil {
			return -1
		}
		return int(m.GetData()[0])
	}
	cases := map[string]int{
		"amqp.annotation.x-opt-offset > '-1'":                                            0,
		"amqp.annotation.x-opt-offset > '" + offsets[1] + "'":                            2,
		"amqp.annotation.x-opt-offset >= '" + offsets[1] + "'":                           1,
		"amqp.annotation.x-opt-sequence-number > '2'":                                    3,
		"amqp.annotation.x-opt-sequence-number >= '2'":                                   2,
		"amqp.annotation.x-opt-sequence-number > '4'":                                    -1,
		"amqp.annotation.x-opt-offset > '@latest'":                                       -1,
		fmt.Sprintf("amqp.annotation.x-opt-enqueued-time > '%d'", times[2].UnixMilli()):  3,
		fmt.Sprintf("amqp.annotation.x-opt-enqueued-time >= '%d'", times[2].UnixMilli()): 2,
	}
	for expr, want := range cases {
		if got := first(expr); got != want {
			t.Errorf("%s: first event %d, want %d", expr, got, want)
		}
	}
	if _, err := s.NewReceiver(ctx, partitionSource("hub", "$Default", "0"), &amqp.ReceiverOptions{
		Filters: []amqp.LinkFilter{amqp.NewSelectorFilter("amqp.annotation.x-opt-offset = 'x'")}}); remoteCond(err) != emulator.CondInvalidField {
		t.Fatalf("bad selector: %v", err)
	}
	// @latest sees only new events.
	latest, err := s.NewReceiver(ctx, partitionSource("hub", "$Default", "0"), &amqp.ReceiverOptions{
		Credit: 10, Filters: []amqp.LinkFilter{amqp.NewSelectorFilter("amqp.annotation.x-opt-offset > '@latest'")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := snd.Send(ctx, amqp.NewMessage([]byte{42}), nil); err != nil {
		t.Fatal(err)
	}
	if m, err := latest.Receive(ctx, nil); err != nil || m.GetData()[0] != 42 {
		t.Fatalf("@latest: %v %v", m, err)
	}
}

func TestGoAMQPUnsettledReceiver(t *testing.T) {
	e, _ := startEmulator(t, anonCfg())
	s := session(t, dial(t, e, nil))
	ctx := ctxT(t, 10*time.Second)
	snd, err := s.NewSender(ctx, "hub/Partitions/0", &amqp.SenderOptions{SettlementMode: amqp.SenderSettleModeSettled.Ptr()})
	if err != nil {
		t.Fatal(err)
	}
	if err := snd.Send(ctx, amqp.NewMessage([]byte("u")), nil); err != nil {
		t.Fatal(err)
	}
	rcv, err := s.NewReceiver(ctx, partitionSource("hub", "$Default", "0"), &amqp.ReceiverOptions{
		RequestedSenderSettleMode: amqp.SenderSettleModeUnsettled.Ptr(), SettlementMode: amqp.ReceiverSettleModeFirst.Ptr()})
	if err != nil {
		t.Fatal(err)
	}
	m, err := rcv.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := rcv.AcceptMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
}
