package amqpfake_test

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/isobroker/broker/internal/amqpfake"
)

// TestAmqp091NotifyPublishAckOverNack documents amqp091-go v1.16.0
// behaviour; it is not a test of this package.
//
// RabbitMQ may nack a message out of order and later send a multiple ack
// whose range covers the nacked tag (the multiple flag means "everything
// outstanding up to here", and the nacked tag is no longer outstanding).
// amqp091-go resolves each DeferredConfirmation from the frame that
// concerns it, so those tell the truth: 1 ack, 2 nack, 3 ack. But its
// NotifyPublish resequencer parks the out-of-order nack for tag 2 and then,
// on the multiple ack, emits an Ack=true confirmation for every tag up to 3,
// overwriting the parked nack: a listener on NotifyPublish is told that the
// nacked message 2 was acked.
//
// The test asserts that observed behaviour, so it fails, saying so, when an
// amqp091-go upgrade fixes NotifyPublish; code that avoids NotifyPublish
// for this reason can then be revisited.
func TestAmqp091NotifyPublishAckOverNack(t *testing.T) {
	s := startServer(t, amqpfake.Options{})
	conn, sc := dial(t, s, amqp.Config{})
	ch, confirms, _ := confirmChannel(t, conn)

	var dcs []*amqp.DeferredConfirmation
	for i := 1; i <= 3; i++ {
		dcs = append(dcs, publish(t, ch, "k", false, amqp.Publishing{Body: []byte{byte('0' + i)}}))
	}
	for i := 1; i <= 3; i++ {
		if p := nextPublish(t, sc); p.Tag != uint64(i) {
			t.Fatalf("publish %d arrived with tag %d", i, p.Tag)
		}
	}

	must(t, sc.Nack(1, 2, false))
	must(t, sc.Ack(1, 3, true))

	var got []amqp.Confirmation
	for range 3 {
		got = append(got, nextConfirmation(t, confirms))
	}
	t.Logf("server sent: basic.nack tag 2 (single), then basic.ack tag 3 multiple")
	t.Logf("NotifyPublish reported: %+v", got)
	acks := make([]bool, len(dcs))
	for i, dc := range dcs {
		acks[i] = waitConfirm(t, dc)
		t.Logf("DeferredConfirmation tag %d: ack=%v", dc.DeliveryTag, acks[i])
	}

	// Per-tag truth from the DeferredConfirmations.
	if !acks[0] || acks[1] || !acks[2] {
		t.Errorf("DeferredConfirmations reported ack=%v, want [true false true]: amqp091-go no longer resolves "+
			"DeferredConfirmation per tag as v1.16.0 did (nack 2 survives the multiple ack); re-examine how confirms are tracked", acks)
	}

	// The NotifyPublish lie.
	for i, c := range got {
		if c.DeliveryTag != uint64(i+1) {
			t.Fatalf("NotifyPublish confirmation %d has tag %d, want %d (in-order delivery, as in v1.16.0): %+v", i, c.DeliveryTag, i+1, got)
		}
	}
	if !got[1].Ack {
		t.Fatalf("amqp091-go NotifyPublish now reports tag 2 as nacked (%+v). In v1.16.0 it reported Ack=true for the "+
			"nacked tag 2 once a multiple ack for tag 3 arrived. The upstream bug looks FIXED in this amqp091-go version: "+
			"update TestAmqp091NotifyPublishAckOverNack and revisit code that avoids NotifyPublish because of it", got)
	}
	if !got[0].Ack || !got[2].Ack {
		t.Errorf("NotifyPublish reported %+v, want tags 1 and 3 acked as in v1.16.0", got)
	}
}

// TestAmqp091UnknownTags documents how amqp091-go v1.16.0 treats confirms
// for delivery tags it never published.
//
// A single ack for an unknown tag is silently parked in the NotifyPublish
// resequencer and never reported. A multiple ack beyond the last published
// tag makes NotifyPublish report phantom confirmations for tags that were
// never published; the resequencer then expects tags past them, so the
// confirmation of a later real publish that reuses such a tag is resolved
// on its DeferredConfirmation but never reported on NotifyPublish.
func TestAmqp091UnknownTags(t *testing.T) {
	s := startServer(t, amqpfake.Options{})
	conn, sc := dial(t, s, amqp.Config{})
	ch, confirms, _ := confirmChannel(t, conn)

	// sync makes the client handle every frame the server sent before it:
	// the qos-ok is written after them and the client reads in order.
	sync := func() { t.Helper(); must(t, ch.Qos(1, 0, false)) }
	pending := func() []amqp.Confirmation {
		var cs []amqp.Confirmation
		for {
			select {
			case c := <-confirms:
				cs = append(cs, c)
			default:
				return cs
			}
		}
	}

	dc1 := publish(t, ch, "k", false, amqp.Publishing{})
	nextPublish(t, sc)
	must(t, sc.Ack(1, 99, false)) // never published
	sync()
	if cs := pending(); len(cs) != 0 {
		t.Errorf("single ack for unknown tag 99: NotifyPublish reported %+v, v1.16.0 reported nothing", cs)
	}
	must(t, sc.Ack(1, 3, true)) // multiple, beyond the one publish
	sync()
	if !waitConfirm(t, dc1) {
		t.Error("dc1 nacked")
	}
	phantom := pending()
	t.Logf("after multiple ack for tag 3 with only tag 1 published, NotifyPublish reported %+v", phantom)
	if len(phantom) != 3 || phantom[1].DeliveryTag != 2 || phantom[2].DeliveryTag != 3 {
		t.Errorf("NotifyPublish reported %+v; v1.16.0 reported phantom acks for unpublished tags 2 and 3", phantom)
	}

	dc2 := publish(t, ch, "k", false, amqp.Publishing{})
	if p := nextPublish(t, sc); p.Tag != 2 || dc2.DeliveryTag != 2 {
		t.Fatalf("second publish tag: server %d, client %d", p.Tag, dc2.DeliveryTag)
	}
	must(t, sc.Nack(1, 2, false))
	sync()
	if waitConfirm(t, dc2) {
		t.Error("dc2 acked, want nack")
	}
	lost := pending()
	t.Logf("real nack for tag 2 after the phantoms: DeferredConfirmation nack, NotifyPublish reported %+v", lost)
	if len(lost) != 0 {
		t.Errorf("NotifyPublish reported %+v for the real tag 2; v1.16.0 reported nothing (it had already "+
			"reported a phantom ack for tag 2)", lost)
	}
}

// TestAmqp091PendingConfirmsOnClose documents what amqp091-go v1.16.0 does
// with unconfirmed publishes when the broker closes the channel or the
// socket drops: every pending DeferredConfirmation resolves as a nack
// (Wait returns false), indistinguishable from a real basic.nack, and the
// NotifyPublish channel is closed without a confirmation for them.
func TestAmqp091PendingConfirmsOnClose(t *testing.T) {
	for _, tc := range []struct {
		name  string
		close func(*amqpfake.Conn) error
	}{
		{"channel.close", func(c *amqpfake.Conn) error { return c.CloseChannel(1, 406, "PRECONDITION_FAILED - test") }},
		{"connection.close", func(c *amqpfake.Conn) error { return c.CloseConnection(320, "CONNECTION_FORCED - test") }},
		{"drop", func(c *amqpfake.Conn) error { return c.Drop() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, amqpfake.Options{})
			conn, sc := dial(t, s, amqp.Config{})
			ch, confirms, _ := confirmChannel(t, conn)
			closed := ch.NotifyClose(make(chan *amqp.Error, 1))

			var dcs []*amqp.DeferredConfirmation
			for range 3 {
				dcs = append(dcs, publish(t, ch, "k", false, amqp.Publishing{}))
				nextPublish(t, sc)
			}
			must(t, sc.Ack(1, 1, false))
			must(t, tc.close(sc))

			select {
			case e := <-closed:
				t.Logf("channel NotifyClose: %v", e)
			case <-time.After(waitTimeout):
				t.Fatal("channel not closed")
			}
			for i, dc := range dcs {
				ack := waitConfirm(t, dc)
				t.Logf("DeferredConfirmation %d: ack=%v", i+1, ack)
				if want := i == 0; ack != want {
					t.Errorf("dc%d ack=%v, want %v (v1.16.0 nacks pending confirmations on close)", i+1, ack, want)
				}
			}
			var got []amqp.Confirmation
			for c := range confirms { // closed by the client on channel shutdown
				got = append(got, c)
			}
			t.Logf("NotifyPublish delivered %+v, then was closed", got)
			if len(got) != 1 || got[0] != (amqp.Confirmation{DeliveryTag: 1, Ack: true}) {
				t.Errorf("NotifyPublish delivered %+v before closing, want only tag 1 ack", got)
			}
		})
	}
}

// TestAmqp091ConfirmNoWaitBlocks documents amqp091-go v1.16.0 behaviour
// (upstream issue rabbitmq/amqp091-go#198): Channel.Confirm(true) sends
// confirm.select with nowait set, as asked, yet still waits for
// confirm.select-ok, which RabbitMQ (and this fake) rightly never sends for
// a nowait request. The call only returns when the channel or connection
// closes.
func TestAmqp091ConfirmNoWaitBlocks(t *testing.T) {
	s := startServer(t, amqpfake.Options{})
	conn, sc := dial(t, s, amqp.Config{})
	ch, err := conn.Channel()
	must(t, err)

	res := make(chan error, 1)
	go func() { res <- ch.Confirm(true) }()
	select {
	case err := <-res:
		t.Fatalf("Confirm(true) returned %v without a confirm.select-ok: amqp091-go no longer waits for a reply to a "+
			"nowait confirm.select as v1.16.0 did; update TestAmqp091ConfirmNoWaitBlocks", err)
	case <-time.After(200 * time.Millisecond):
	}
	must(t, sc.CloseChannel(1, 406, "PRECONDITION_FAILED - unblock"))
	select {
	case err := <-res:
		t.Logf("Confirm(true) returned only when the server closed the channel: %v", err)
		if err == nil {
			t.Error("Confirm(true) returned nil after channel.close")
		}
	case <-time.After(waitTimeout):
		t.Fatal("Confirm(true) still blocked after the server closed the channel")
	}
}

// TestAmqp091PendingConfirmsWithRecovery documents amqp091-go v1.16.0
// behaviour when automatic recovery (Config.Recovery) is enabled and the
// broker closes a confirm channel with publishes outstanding. The channel is
// not torn down (Channel.shutdown skips closeResources when recovery is
// enabled), so the channel.close itself resolves nothing; the pending
// DeferredConfirmations resolve as nacks when recovery resets the channel to
// reopen it (confirms.reset), NotifyPublish stays open and reports nothing
// for them, and the reopened channel counts delivery tags from 1 again, in
// step with the broker.
func TestAmqp091PendingConfirmsWithRecovery(t *testing.T) {
	s := startServer(t, amqpfake.Options{})
	conn, sc := dial(t, s, amqp.Config{Recovery: &amqp.Recovery{
		ReconnectionConfig:   &amqp.ReconnectionConfig{MaxRetryCount: 3, RetryInterval: 10 * time.Millisecond},
		TopologyRecoveryMode: amqp.TopologyRecoveryDisabled,
	}})
	ch, confirms, _ := confirmChannel(t, conn)
	states := make(chan *amqp.StateChanged, 10)
	ch.NotifyStateChange(states)

	var dcs []*amqp.DeferredConfirmation
	for range 3 {
		dcs = append(dcs, publish(t, ch, "k", false, amqp.Publishing{}))
		nextPublish(t, sc)
	}
	must(t, sc.Ack(1, 1, false))
	if c := nextConfirmation(t, confirms); c != (amqp.Confirmation{DeliveryTag: 1, Ack: true}) {
		t.Fatalf("first confirmation %+v", c)
	}
	must(t, sc.CloseChannel(1, 406, "PRECONDITION_FAILED - test"))

	for {
		var sch *amqp.StateChanged
		select {
		case sch = <-states:
		case <-time.After(waitTimeout):
			t.Fatal("channel did not recover")
		}
		t.Logf("channel state: %v", sch)
		if sch.To == amqp.StateOpen && sch.From == amqp.StateReconnecting {
			break
		}
		if sch.To == amqp.StateClosed {
			t.Fatalf("channel closed instead of recovering: %v", sch)
		}
	}
	for i, dc := range dcs {
		ack := waitConfirm(t, dc)
		t.Logf("DeferredConfirmation %d after recovery: ack=%v", i+1, ack)
		if want := i == 0; ack != want {
			t.Errorf("dc%d ack=%v, want %v (v1.16.0 nacks pending confirmations when recovery resets the channel)", i+1, ack, want)
		}
	}
	select {
	case c, ok := <-confirms:
		t.Errorf("NotifyPublish delivered %+v (open=%v) for the abandoned publishes; v1.16.0 delivered nothing", c, ok)
	default:
	}

	dc := publish(t, ch, "k", false, amqp.Publishing{Body: []byte("after")})
	p := nextPublish(t, sc)
	if p.Tag != 1 || dc.DeliveryTag != 1 || string(p.Body) != "after" {
		t.Fatalf("publish after recovery: server tag %d, client tag %d, body %q", p.Tag, dc.DeliveryTag, p.Body)
	}
	must(t, sc.Ack(1, 1, false))
	if !waitConfirm(t, dc) {
		t.Error("post-recovery publish nacked")
	}
	if c := nextConfirmation(t, confirms); c != (amqp.Confirmation{DeliveryTag: 1, Ack: true}) {
		t.Errorf("post-recovery NotifyPublish %+v, want tag 1 ack", c)
	}
	if got := sc.Channels(); len(got) != 2 || got[0] != 1 || got[1] != 1 {
		t.Errorf("Channels() = %v, want [1 1] (reopened)", got)
	}
}
