package rabbit_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/internal/amqpfake"
	"github.com/isobroker/broker/rabbit"
)

// These tests put a scripted AMQP 0-9-1 server (internal/amqpfake) in
// RabbitMQ's place, to play confirm and return sequences that a real node
// sends only by chance, deterministically.

// fakeBroker starts a scripted server, opens a Broker with one publishing
// channel on it and returns both, with the server side of the connection.
func fakeBroker(t *testing.T, opts ...rabbit.Option) (*rabbit.Broker, *amqpfake.Conn, *amqpfake.Server) {
	t.Helper()
	srv, err := amqpfake.Start(amqpfake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	type opened struct {
		b   *rabbit.Broker
		err error
	}
	ch := make(chan opened, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		opts = append([]rabbit.Option{rabbit.WithLogger(testLogger()), rabbit.WithName(t.Name()),
			rabbit.WithConfig(func(c *rabbit.Config) { c.PublishChannels = 1 })}, opts...)
		b, err := rabbit.OpenURL(ctx, srv.URL(), opts...)
		ch <- opened{b, err}
	}()
	conn, err := srv.Accept(ctxFor(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	o := <-ch
	if o.err != nil {
		t.Fatal(o.err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = o.b.Close(ctx)
	})
	return o.b, conn, srv
}

// publishAsync runs Publish on its own goroutine.
func publishAsync(ctx context.Context, b *rabbit.Broker, topic string, msgs ...*broker.Message) <-chan error {
	done := make(chan error, 1)
	go func() { done <- b.Publish(ctx, topic, msgs...) }()
	return done
}

// nextPublishes reads n publishes from the server side.
func nextPublishes(t *testing.T, conn *amqpfake.Conn, n int) []amqpfake.Publish {
	t.Helper()
	out := make([]amqpfake.Publish, 0, n)
	for range n {
		p, err := conn.NextPublish(ctxFor(t, 10*time.Second))
		if err != nil {
			t.Fatalf("after %d of %d publishes: %v", len(out), n, err)
		}
		out = append(out, p)
	}
	return out
}

func messageError(t *testing.T, err error) *broker.MessageError {
	t.Helper()
	var me *broker.MessageError
	if !errors.As(err, &me) {
		t.Fatalf("error %v carries no *broker.MessageError", err)
	}
	return me
}

// nackResends answers the next n publishes, each a resend of a nacked
// message whose ID is in ids, with a nack.
func nackResends(t *testing.T, conn *amqpfake.Conn, n int, ids map[string]bool) {
	t.Helper()
	for range n {
		p := nextPublishes(t, conn, 1)[0]
		if !ids[p.MessageID] {
			t.Errorf("resent %q, which was not nacked", p.MessageID)
		}
		if err := conn.Nack(p.Channel, p.Tag, false); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNackResentThenConfirmed: a message the server nacks once is sent
// again, and the call succeeds when the resend is confirmed; the other
// message of the call, acked at once, is not sent again.
func TestNackResentThenConfirmed(t *testing.T) {
	leakCheck(t)
	b, conn, _ := fakeBroker(t)
	ctx := ctxFor(t, 20*time.Second)
	done := publishAsync(ctx, b, "t", &broker.Message{ID: "ok"}, &broker.Message{ID: "nacked-once"})
	ps := nextPublishes(t, conn, 2)
	if err := conn.Ack(ps[0].Channel, ps[0].Tag, false); err != nil {
		t.Fatal(err)
	}
	if err := conn.Nack(ps[1].Channel, ps[1].Tag, false); err != nil {
		t.Fatal(err)
	}
	again := nextPublishes(t, conn, 1)[0]
	if again.MessageID != "nacked-once" {
		t.Fatalf("resent %q, want the nacked message", again.MessageID)
	}
	if err := conn.Ack(again.Channel, again.Tag, false); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Publish = %v, want nil once the resend is confirmed", err)
	}
}

// TestNackedChannelReplaced: a channel the server nacks 3 messages in a
// row on is closed and replaced, and the next resend goes on the new
// channel; a channel with an ack between its nacks is kept. (RabbitMQ
// 3.10 nacks every later publish of a channel whose first publish to a
// quorum queue found its leader down, for as long as the channel lives:
// measured on a cluster, and the reason for this rule; a fresh channel
// publishes fine.)
func TestNackedChannelReplaced(t *testing.T) {
	leakCheck(t)
	b, conn, _ := fakeBroker(t)
	ctx := ctxFor(t, 20*time.Second)

	// Nack, ack, nack, nack: no 3 in a row, the channel stays.
	done := publishAsync(ctx, b, "t", &broker.Message{ID: "kept-1"})
	p := nextPublishes(t, conn, 1)[0]
	opened := len(conn.Channels())
	if err := conn.Nack(p.Channel, p.Tag, false); err != nil {
		t.Fatal(err)
	}
	again := nextPublishes(t, conn, 1)[0]
	if err := conn.Ack(again.Channel, again.Tag, false); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Publish = %v, want nil once the resend is confirmed", err)
	}
	done = publishAsync(ctx, b, "t", &broker.Message{ID: "kept-2"})
	for range 2 {
		p := nextPublishes(t, conn, 1)[0]
		if err := conn.Nack(p.Channel, p.Tag, false); err != nil {
			t.Fatal(err)
		}
	}
	third := nextPublishes(t, conn, 1)[0]
	if chans := conn.Channels(); len(chans) != opened || third.Channel != p.Channel {
		t.Fatalf("after nack, ack, nack, nack: channels opened %v (%d before), publish on %d; want channel %d kept",
			chans, opened, third.Channel, p.Channel)
	}

	// The third nack in a row: the resend goes on a new channel.
	if err := conn.Nack(third.Channel, third.Tag, false); err != nil {
		t.Fatal(err)
	}
	fourth := nextPublishes(t, conn, 1)[0]
	chans := conn.Channels()
	if len(chans) != opened+1 || fourth.Channel != chans[len(chans)-1] || fourth.Channel == p.Channel {
		t.Fatalf("3 nacks in a row on channel %d, resent on channel %d; channels opened %v (%d before), want the resend on one new channel",
			p.Channel, fourth.Channel, chans, opened)
	}
	if err := conn.Ack(fourth.Channel, fourth.Tag, false); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Publish = %v, want nil once the resend is confirmed", err)
	}
}

// TestMultipleAckOverNack: RabbitMQ may nack tag 2 alone and then ack up
// to tag 3 with one multiple ack. The multiple ack settles only tags 1
// and 3: message 1 of the call is reported nacked once its resends are
// nacked too. (amqp091-go's NotifyPublish reports all three acked; see
// internal/amqpfake.)
func TestMultipleAckOverNack(t *testing.T) {
	leakCheck(t)
	b, conn, _ := fakeBroker(t)
	ctx := ctxFor(t, 20*time.Second)
	done := publishAsync(ctx, b, "t", &broker.Message{ID: "a"}, &broker.Message{ID: "b"}, &broker.Message{ID: "a"})
	ps := nextPublishes(t, conn, 3)
	// In one write: the client retires a channel that nacks (see
	// TestNackedChannelReplaced), and a later confirm must not race that.
	if err := conn.Confirms(ps[0].Channel, amqpfake.Confirm{Tag: ps[1].Tag, Nack: true}, amqpfake.Confirm{Tag: ps[2].Tag, Multiple: true}); err != nil {
		t.Fatal(err)
	}
	nackResends(t, conn, rabbit.MaxNackResends, map[string]bool{"b": true})
	err := <-done
	if !errors.Is(err, broker.ErrNacked) {
		t.Fatalf("Publish = %v, want ErrNacked", err)
	}
	if me := messageError(t, err); me.Index != 1 || me.ID != "b" {
		t.Errorf("MessageError names message %d (%q), want 1 (\"b\")", me.Index, me.ID)
	}

	// The same, nack after the multiple ack that skipped it: ack 3
	// multiple can only cover 1 and 3 once 2 has its nack, and a nack
	// that comes last is still that message's answer.
	done = publishAsync(ctx, b, "t", &broker.Message{ID: "c"}, &broker.Message{ID: "d"})
	ps = nextPublishes(t, conn, 2)
	if err := conn.Confirms(ps[0].Channel, amqpfake.Confirm{Tag: ps[0].Tag, Nack: true}, amqpfake.Confirm{Tag: ps[1].Tag}); err != nil {
		t.Fatal(err)
	}
	nackResends(t, conn, rabbit.MaxNackResends, map[string]bool{"c": true})
	err = <-done
	if me := messageError(t, err); !errors.Is(err, broker.ErrNacked) || me.Index != 0 {
		t.Errorf("Publish = %v, want message 0 nacked", err)
	}

	// Many single-message calls answered out of order with multiple acks
	// over single nacks: each call gets its own message's answer.
	const n = 40
	results := make([]<-chan error, n)
	for i := range n {
		results[i] = publishAsync(ctx, b, "t", &broker.Message{ID: fmt.Sprint("m", i)})
	}
	ps = nextPublishes(t, conn, n)
	nacked := map[string]bool{}
	var script []amqpfake.Confirm
	for k, p := range ps {
		if p.Channel != ps[0].Channel {
			t.Fatalf("publishes on channels %d and %d, want one", ps[0].Channel, p.Channel)
		}
		if k%3 == 1 {
			nacked[p.MessageID] = true
			script = append(script, amqpfake.Confirm{Tag: p.Tag, Nack: true})
		}
	}
	script = append(script, amqpfake.Confirm{Tag: ps[n-1].Tag, Multiple: true})
	if err := conn.Confirms(ps[0].Channel, script...); err != nil {
		t.Fatal(err)
	}
	// The resends run concurrently, and a channel that nacks one is
	// replaced, so that a resend on it may be lost and sent once more:
	// nack every resend until all calls are answered.
	nctx, stopNacking := context.WithCancel(ctx)
	nacking := make(chan []string, 1)
	go func() {
		var wrong []string
		for {
			p, err := conn.NextPublish(nctx)
			if err != nil {
				nacking <- wrong
				return
			}
			if !nacked[p.MessageID] {
				wrong = append(wrong, p.MessageID)
			}
			_ = conn.Nack(p.Channel, p.Tag, false)
		}
	}()
	defer stopNacking()
	for i, r := range results {
		err := <-r
		id := fmt.Sprint("m", i)
		if nacked[id] != errors.Is(err, broker.ErrNacked) || (!nacked[id] && err != nil) {
			t.Errorf("Publish of %s (nacked by the server: %v) = %v", id, nacked[id], err)
		}
	}
	stopNacking()
	if wrong := <-nacking; len(wrong) > 0 {
		t.Errorf("resent %v, which the server acked", wrong)
	}
}

// TestReturnMatchedByStamp: two messages of one call with the same
// exchange, key and (empty) ID; the server returns the second and acks
// both out of order. The return is pinned on the message it was for.
func TestReturnMatchedByStamp(t *testing.T) {
	leakCheck(t)
	b, conn, _ := fakeBroker(t)
	ctx := ctxFor(t, 20*time.Second)
	for _, which := range []int{1, 0} {
		done := publishAsync(ctx, b, "t", &broker.Message{Key: "k"}, &broker.Message{Key: "k"})
		ps := nextPublishes(t, conn, 2)
		if err := conn.Return(ps[which], 312, "NO_ROUTE"); err != nil {
			t.Fatal(err)
		}
		if err := conn.Ack(ps[1].Channel, ps[1].Tag, false); err != nil {
			t.Fatal(err)
		}
		if err := conn.Ack(ps[0].Channel, ps[0].Tag, false); err != nil {
			t.Fatal(err)
		}
		err := <-done
		if !errors.Is(err, broker.ErrUnroutable) {
			t.Fatalf("Publish = %v, want ErrUnroutable", err)
		}
		if me := messageError(t, err); me.Index != which {
			t.Errorf("return of message %d pinned on message %d: %v", which, me.Index, err)
		}
		if ps[0].AppID == ps[1].AppID {
			t.Errorf("the publishes carry the same stamp %q", ps[0].AppID)
		}
	}
}

// TestReturnsOfAFullWindow: every message a channel's window lets be in
// flight is returned before any of them is confirmed — the most returns
// that can wait in amqp091's return queue at once. Each of the window's
// single-message Publish calls must fail with ErrUnroutable: a return
// queue too small for them would block amqp091's reader, which drops the
// return after 5 s, and that message would be reported as confirmed.
func TestReturnsOfAFullWindow(t *testing.T) {
	leakCheck(t)
	const window = 32
	b, conn, _ := fakeBroker(t, rabbit.WithConfig(func(c *rabbit.Config) { c.PublishWindow = window }))
	ctx := ctxFor(t, 30*time.Second)
	dones := make([]<-chan error, window)
	for i := range dones {
		dones[i] = publishAsync(ctx, b, "t", &broker.Message{ID: fmt.Sprint(i), Key: "k"})
	}
	ps := nextPublishes(t, conn, window)
	for _, p := range ps {
		if err := conn.Return(p, 312, "NO_ROUTE"); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range ps {
		if err := conn.Ack(p.Channel, p.Tag, false); err != nil {
			t.Fatal(err)
		}
	}
	for i, done := range dones {
		if err := <-done; !errors.Is(err, broker.ErrUnroutable) {
			t.Errorf("Publish of message %d = %v, want ErrUnroutable: its return was lost", i, err)
		}
	}
}

// TestWindowBoundsWrites: with a window of 8 and a server that confirms
// nothing, a 100-message Publish writes exactly 8 messages, returns by its
// ctx, and writes nothing after it returned; once the server confirms,
// the channel's window is free again.
func TestWindowBoundsWrites(t *testing.T) {
	leakCheck(t)
	const window = 8
	b, conn, _ := fakeBroker(t, rabbit.WithConfig(func(c *rabbit.Config) { c.PublishWindow = window }))
	msgs := make([]*broker.Message, 100)
	for i := range msgs {
		msgs[i] = &broker.Message{ID: fmt.Sprint(i)}
	}
	pctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := publishAsync(pctx, b, "t", msgs...)
	ps := nextPublishes(t, conn, window)
	err := <-done
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish against a server that confirms nothing = %v, want DeadlineExceeded", err)
	}
	// Nothing more arrives after the return.
	quiet, stop := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer stop()
	if p, err := conn.NextPublish(quiet); err == nil {
		t.Fatalf("message %q (tag %d) written past the window or after Publish returned", p.MessageID, p.Tag)
	}
	if err := conn.Ack(ps[0].Channel, ps[window-1].Tag, true); err != nil {
		t.Fatal(err)
	}
	done = publishAsync(ctxFor(t, 10*time.Second), b, "t", &broker.Message{ID: "next"})
	p := nextPublishes(t, conn, 1)[0]
	if p.MessageID != "next" || p.Tag != window+1 {
		t.Errorf("next publish = %q tag %d, want \"next\" tag %d", p.MessageID, p.Tag, window+1)
	}
	if err := conn.Ack(p.Channel, p.Tag, false); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("Publish after the window freed = %v", err)
	}
}

// TestChannelCloseIsNotANack: the server closes the publishing channel
// with unconfirmed messages on it. amqp091 resolves their confirmations
// negatively; the adapter must take that for loss, not for nacks, and
// resend them on the reopened channel.
func TestChannelCloseIsNotANack(t *testing.T) {
	leakCheck(t)
	b, conn, _ := fakeBroker(t)
	ctx := ctxFor(t, 20*time.Second)
	done := publishAsync(ctx, b, "t", &broker.Message{ID: "x"}, &broker.Message{ID: "y"})
	ps := nextPublishes(t, conn, 2)
	if err := conn.CloseChannel(ps[0].Channel, 541, "INTERNAL_ERROR"); err != nil {
		t.Fatal(err)
	}
	again := nextPublishes(t, conn, 2)
	for k, p := range again {
		if p.Channel == ps[0].Channel {
			t.Errorf("resent on the closed channel %d", p.Channel)
		}
		if p.MessageID != ps[k].MessageID {
			t.Errorf("resend %d = %q, want %q", k, p.MessageID, ps[k].MessageID)
		}
	}
	if err := conn.Ack(again[1].Channel, again[1].Tag, true); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("Publish after a channel close and resend = %v, want nil", err)
	}
}

// TestShortSessionsBackOff: a server that drops every connection right
// after it opened (handshake done, publishing channel open) gets a
// connection per backoff step, not a tight reconnect loop.
func TestShortSessionsBackOff(t *testing.T) {
	leakCheck(t)
	_, conn, srv := fakeBroker(t, rabbit.WithBackoff(broker.Backoff{Initial: 50 * time.Millisecond, Max: 400 * time.Millisecond}))
	time.Sleep(20 * time.Millisecond)
	if err := conn.Drop(); err != nil {
		t.Fatal(err)
	}
	const watch = 2 * time.Second
	ctx := ctxFor(t, watch)
	n := 0
	for {
		c, err := srv.Accept(ctx)
		if err != nil {
			break
		}
		n++
		// Drop it once the session is up (its publishing channel open),
		// so that the dial itself succeeded.
		for len(c.Channels()) == 0 && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
		_ = c.Drop()
	}
	// Backoff 25–50, 50–100, 100–200, then 200–400 ms: about 8 dials in
	// 2 s; a loop without backoff makes hundreds.
	t.Logf("%d connections in %v from a broker whose every connection dies at once", n, watch)
	if n == 0 || n > 20 {
		t.Errorf("%d connections in %v, want a handful (backoff)", n, watch)
	}
}
