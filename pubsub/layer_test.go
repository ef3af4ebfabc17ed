package pubsub_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/mem"
	"github.com/isobroker/broker/pubsub"
)

func newMem(t *testing.T) broker.Broker {
	t.Helper()
	b, err := mem.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	return b
}

func receive(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("channel closed")
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message")
	}
	return nil
}

// UUID, payload, metadata, key and content type survive the round trip.
func TestMessageMapping(t *testing.T) {
	b := newMem(t)
	pub, _ := pubsub.NewPublisher(b)
	sub, _ := pubsub.NewSubscriber(b, "g")
	defer pub.Close()
	defer sub.Close()
	ch, err := sub.Subscribe(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	m := message.NewMessage("uuid-1", []byte("payload"))
	m.Metadata.Set("trace", "abc")
	m.Metadata.Set(pubsub.KeyMetadata, "customer-7")
	m.Metadata.Set(pubsub.ContentTypeMetadata, "application/json")
	if err := pub.Publish("t", m); err != nil {
		t.Fatal(err)
	}
	got := receive(t, ch)
	got.Ack()
	if got.UUID != "uuid-1" || string(got.Payload) != "payload" || got.Metadata.Get("trace") != "abc" ||
		got.Metadata.Get(pubsub.KeyMetadata) != "customer-7" || got.Metadata.Get(pubsub.ContentTypeMetadata) != "application/json" {
		t.Fatalf("got %s %q %v", got.UUID, got.Payload, got.Metadata)
	}
}

// Closing Watermill components leaves the Broker and its other components
// working, unless CloseBroker is given.
func TestCloseIsLocalToTheComponent(t *testing.T) {
	b := newMem(t)
	pub1, _ := pubsub.NewPublisher(b)
	pub2, _ := pubsub.NewPublisher(b)
	sub1, _ := pubsub.NewSubscriber(b, "g1")
	sub2, _ := pubsub.NewSubscriber(b, "g2")
	defer pub2.Close()
	defer sub2.Close()
	ch1, _ := sub1.Subscribe(context.Background(), "t")
	ch2, _ := sub2.Subscribe(context.Background(), "t")

	if err := pub1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pub1.Close(); err != nil {
		t.Errorf("second Close = %v, want nil (Watermill's rule)", err)
	}
	if err := pub1.Publish("t", message.NewMessage("x", nil)); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Publish on a closed publisher = %v", err)
	}
	if err := sub1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-ch1; ok {
		t.Errorf("closed subscriber's channel still open")
	}
	if err := pub2.Publish("t", message.NewMessage("after", nil)); err != nil {
		t.Fatalf("other publisher broken: %v", err)
	}
	m := receive(t, ch2)
	m.Ack()
	if m.UUID != "after" || b.State() != broker.StateConnected {
		t.Fatalf("got %s, broker %v", m.UUID, b.State())
	}

	owning, _ := pubsub.NewPublisher(b, pubsub.CloseBroker())
	if err := owning.Close(); err != nil {
		t.Fatal(err)
	}
	if b.State() != broker.StateClosed {
		t.Errorf("CloseBroker did not close the broker: %v", b.State())
	}
}

// A Watermill consumer that never acknowledges cannot hold a Subscriber's
// Close past its timeout, nor touch a component on another Broker; its
// message goes back to the group.
func TestStuckConsumerDoesNotBlockOthers(t *testing.T) {
	a, b := newMem(t), newMem(t)
	subA, _ := pubsub.NewSubscriber(a, "g", pubsub.WithCloseTimeout(200*time.Millisecond))
	pubA, _ := pubsub.NewPublisher(a)
	defer pubA.Close()
	chA, _ := subA.Subscribe(context.Background(), "t")
	if err := pubA.Publish("t", message.NewMessage("held", nil)); err != nil {
		t.Fatal(err)
	}
	receive(t, chA) // never acked

	pubB, _ := pubsub.NewPublisher(b)
	subB, _ := pubsub.NewSubscriber(b, "g")
	defer pubB.Close()
	defer subB.Close()
	chB, _ := subB.Subscribe(context.Background(), "t")

	start := time.Now()
	closed := make(chan error, 1)
	go func() { closed <- subA.Close() }()
	for i := range 20 { // B works while A closes
		if err := pubB.Publish("t", message.NewMessage(string(rune('a'+i)), nil)); err != nil {
			t.Fatalf("publish on B: %v", err)
		}
		receive(t, chB).Ack()
	}
	if err := <-closed; err != nil {
		t.Errorf("Close with an unacked message = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v", d)
	}
	// The unacked message was nacked back to the group.
	again, _ := pubsub.NewSubscriber(a, "g")
	defer again.Close()
	ch, _ := again.Subscribe(context.Background(), "t")
	m := receive(t, ch)
	m.Ack()
	if m.UUID != "held" {
		t.Fatalf("got %q, want the unacked message back", m.UUID)
	}
}

// The message context ends once the message is acked; ending the
// Subscribe ctx closes the channel.
func TestMessageAndSubscribeContexts(t *testing.T) {
	b := newMem(t)
	pub, _ := pubsub.NewPublisher(b)
	sub, _ := pubsub.NewSubscriber(b, "g")
	defer pub.Close()
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	ch, _ := sub.Subscribe(ctx, "t")
	_ = pub.Publish("t", message.NewMessage("1", nil))
	m := receive(t, ch)
	if m.Context().Err() != nil {
		t.Fatal("message context ended before ack")
	}
	m.Ack()
	select {
	case <-m.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("message context not cancelled after Ack")
	}
	cancel()
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("unexpected message")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("channel not closed after the Subscribe ctx ended")
	}
}

// A publish whose message context is cancelled returns the context error.
func TestPublishObeysMessageContext(t *testing.T) {
	b := newMem(t)
	pub, _ := pubsub.NewPublisher(b)
	defer pub.Close()
	m := message.NewMessage("1", nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m.SetContext(ctx)
	if err := pub.Publish("t", m); !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish with a cancelled message ctx = %v", err)
	}
}

// Watermill's logs reach the slog handler.
func TestLoggerAdapter(t *testing.T) {
	var buf bytes.Buffer
	l := pubsub.NewLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	l.With(map[string]any{"component": "router"}).Info("router running", map[string]any{"handlers": 2})
	if out := buf.String(); !strings.Contains(out, "router running") || !strings.Contains(out, "component=router") {
		t.Fatalf("slog output %q", out)
	}
}
