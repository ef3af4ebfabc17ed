package rabbit_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/rabbit"
)

// TestPublishNacked: the server nacks a publish (basic.nack) when the only
// queue bound to the topic is full and declared with
// x-overflow=reject-publish. As Publish documents, a nacked message is
// sent again MaxNackResends times and then fails the call with ErrNacked
// (retryable) — returned, not resent until ctx ends — while a message
// that fit is confirmed.
func TestPublishNacked(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t)
	ctx := ctxFor(t, 60*time.Second)
	topic := brokertest.RandomName("nack")
	queue := topic + ".bounded"

	// A raw admin connection declares what the adapter does not: a queue
	// that holds one message and rejects publishes beyond that.
	admin, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close() })
	ch, err := admin.Channel()
	if err != nil {
		t.Fatal(err)
	}
	// The same declaration as the adapter's (durable topic exchange).
	if err := ch.ExchangeDeclare(topic, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, false, false, false, false, amqp.Table{
		"x-max-length": int32(1),
		"x-overflow":   "reject-publish",
	}); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(queue, "#", topic, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = ch.QueueDelete(queue, false, false, false)
		_ = ch.ExchangeDelete(topic, false, false)
	})
	// get takes the queue's only message and checks nothing else is left.
	get := func(wantID string) {
		t.Helper()
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Fatalf("queue empty, want %q", wantID)
		}
		if d.MessageId != wantID || d.MessageCount != 0 {
			t.Errorf("queue held %q and %d more, want only %q", d.MessageId, d.MessageCount, wantID)
		}
	}

	logs := &logRecords{}
	b := open(t, url, rabbit.WithLogger(logs.logger()))

	// One message fits: confirmed.
	if err := b.Publish(ctx, topic, &broker.Message{ID: "fits", Key: "k"}); err != nil {
		t.Fatalf("publish into the empty bounded queue = %v, want nil", err)
	}
	// The queue is full: the server nacks the next one.
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = b.Publish(pctx, topic, &broker.Message{ID: "overflow", Key: "k"})
	ctxEnded := pctx.Err()
	cancel()
	t.Logf("publish into the full queue: %v", err)
	if !errors.Is(err, broker.ErrNacked) {
		t.Fatalf("publish into the full queue = %v, want ErrNacked", err)
	}
	if !broker.IsRetryable(err) {
		t.Errorf("ErrNacked not retryable: %v", err)
	}
	if !strings.Contains(err.Error(), `"overflow"`) || !strings.Contains(err.Error(), "nacked") ||
		!strings.Contains(err.Error(), topic) {
		t.Errorf("error does not say which message of which topic the server nacked: %v", err)
	}
	// Returned on the nack, not retried until the deadline.
	if errors.Is(err, context.DeadlineExceeded) || ctxEnded != nil {
		t.Errorf("nacked publish returned by its context (%v), want at the nack: %v", ctxEnded, err)
	}
	if rs := logs.since(0, "rabbit: resending unconfirmed messages"); len(rs) > 0 {
		t.Errorf("the nacked message was resent as unconfirmed: %v", rs)
	}
	if rs := logs.since(0, "rabbit: resending nacked messages"); len(rs) != rabbit.MaxNackResends {
		t.Errorf("the nacked message was resent %d times, want %d: %v", len(rs), rabbit.MaxNackResends, rs)
	}
	get("fits")

	// One call, two messages: the first fits and is confirmed, the second
	// is nacked, and the call reports the nacked one only.
	err = b.Publish(ctx, topic, &broker.Message{ID: "batch-fits"}, &broker.Message{ID: "batch-overflow"})
	t.Logf("two-message publish into a one-message queue: %v", err)
	if !errors.Is(err, broker.ErrNacked) {
		t.Fatalf("two-message publish into a one-message queue = %v, want ErrNacked", err)
	}
	if !strings.Contains(err.Error(), `message 1 (id "batch-overflow")`) || strings.Contains(err.Error(), "batch-fits") {
		t.Errorf("error does not name exactly the nacked message: %v", err)
	}
	get("batch-fits")

	// The nack was a per-message refusal: the broker keeps working.
	if err := b.Publish(ctx, topic, &broker.Message{ID: "after"}); err != nil {
		t.Fatalf("publish after the nacks = %v", err)
	}
	get("after")
	if b.State() != broker.StateConnected {
		t.Errorf("state after the nacks = %v", b.State())
	}
}
