package pubsub_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/pubsub"
)

// The root isolation suite's scenarios, through the Watermill layer and
// for every broker row: Watermill components built on one Broker never
// block or break components built on another.
func TestWatermillIsolation(t *testing.T) {
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			t.Run("OpenCloseLoopLeavesOtherBrokerWorking", func(t *testing.T) { isolationOpenCloseLoop(t, be) })
			t.Run("StuckSubscriberCloseLeavesOtherBrokerWorking", func(t *testing.T) { isolationStuckSubscriber(t, be) })
			t.Run("ConcurrentPublishersWhileOtherCloses", func(t *testing.T) { isolationConcurrentClose(t, be) })
			t.Run("SubscriptionEndIsLocal", func(t *testing.T) { isolationSubscriptionEnd(t, be) })
		})
	}
}

// topicFor returns a topic name no other test of this run uses: rows on
// a real server share it between brokers.
func topicFor(what string) string {
	return fmt.Sprintf("iso-%s-%d", what, time.Now().UnixNano())
}

// openSide opens a Broker of the row with a publisher and a subscriber
// reading topic in group, ready to receive.
func openSide(t *testing.T, be backend, topic, group string, subOpts ...pubsub.Option) (broker.Broker, message.Publisher, message.Subscriber, <-chan *message.Message) {
	t.Helper()
	b := be.open(t)
	pub, err := pubsub.NewPublisher(b)
	if err != nil {
		t.Fatal(err)
	}
	opts := append([]pubsub.Option{pubsub.WithSubscribeOptions(be.subscribe...)}, subOpts...)
	sub, err := pubsub.NewSubscriber(b, group, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SubscribeInitialize(topic); err != nil {
		t.Fatal(err)
	}
	ch, err := sub.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	return b, pub, sub, ch
}

// roundTrip publishes one message through pub and waits for it on ch,
// failing if either takes longer than a generous bound.
func roundTrip(t *testing.T, pub message.Publisher, ch <-chan *message.Message, topic, id string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- pub.Publish(topic, message.NewMessage(id, []byte(id))) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("publish %s: %v", id, err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("publish %s did not return", id)
	}
	for {
		m := receive(t, ch)
		m.Ack()
		if m.UUID == id {
			return
		}
	}
}

// The FastStream bug through Watermill: a publisher and subscriber on
// broker A keep working while brokers B are opened, used and closed (with
// their Watermill components, CloseBroker) in a loop.
func isolationOpenCloseLoop(t *testing.T, be backend) {
	topicA := topicFor("a")
	a, pubA, subA, chA := openSide(t, be, topicA, "iso")
	defer a.Close(context.Background())
	defer subA.Close()
	defer pubA.Close()
	iterations := 200 // as in the root suite: the FastStream hang needed many
	for i := range iterations {
		b := be.open(t)
		pubB, _ := pubsub.NewPublisher(b, pubsub.CloseBroker())
		// B publishes to A's topic (a server row routes it to A's
		// group, which roundTrip skips over).
		if err := pubB.Publish(topicA, message.NewMessage(fmt.Sprintf("b-%d", i), nil)); err != nil {
			t.Fatalf("iteration %d: publish on B: %v", i, err)
		}
		if err := pubB.Close(); err != nil {
			t.Fatalf("iteration %d: close B: %v", i, err)
		}
		if b.State() != broker.StateClosed {
			t.Fatalf("iteration %d: CloseBroker left B %v", i, b.State())
		}
		roundTrip(t, pubA, chA, topicA, fmt.Sprintf("a-%d", i))
	}
}

// A subscriber on A holding an unacked message closes (bounded by its
// close timeout) while B's components keep publishing and receiving.
func isolationStuckSubscriber(t *testing.T, be backend) {
	topicA, topicB := topicFor("a"), topicFor("b")
	a, pubA, subA, chA := openSide(t, be, topicA, "iso", pubsub.WithCloseTimeout(300*time.Millisecond))
	defer a.Close(context.Background())
	defer pubA.Close()
	if err := pubA.Publish(topicA, message.NewMessage("held", nil)); err != nil {
		t.Fatal(err)
	}
	receive(t, chA) // never acked: A's handler is stuck

	b, pubB, subB, chB := openSide(t, be, topicB, "iso")
	defer b.Close(context.Background())
	defer subB.Close()
	defer pubB.Close()

	closed := make(chan error, 1)
	go func() { closed <- subA.Close() }()
	for i := range 20 {
		roundTrip(t, pubB, chB, topicB, fmt.Sprintf("b-%d", i))
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close with an unacked message = %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Close of the stuck subscriber did not return")
	}
	roundTrip(t, pubB, chB, topicB, "b-after")
}

// Eight goroutines publish through B's publisher while A's publisher and
// subscriber close: every publish on B succeeds and is received.
func isolationConcurrentClose(t *testing.T, be backend) {
	topicA, topicB := topicFor("a"), topicFor("b")
	a, pubA, subA, _ := openSide(t, be, topicA, "iso")
	b, pubB, subB, chB := openSide(t, be, topicB, "iso")
	defer b.Close(context.Background())
	defer subB.Close()
	defer pubB.Close()

	const publishers, each = 8, 25
	errs := make(chan error, publishers*each)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				if err := pubB.Publish(topicB, message.NewMessage(fmt.Sprintf("b-%d-%d", p, i), nil)); err != nil {
					errs <- err
				}
			}
		})
	}
	if err := pubA.Close(); err != nil {
		t.Errorf("close A's publisher: %v", err)
	}
	if err := subA.Close(); err != nil {
		t.Errorf("close A's subscriber: %v", err)
	}
	closeBounded(t, "A", a)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("publish on B while A closed: %v", err)
	}
	seen := make(map[string]bool, publishers*each)
	for len(seen) < publishers*each {
		m := receive(t, chB)
		m.Ack()
		seen[m.UUID] = true
	}
}

// A's Watermill subscription on a topic ends (its Subscribe ctx ends,
// then A's subscriber and broker close) while B's subscription on the
// same topic, in another group on another broker, keeps receiving.
func isolationSubscriptionEnd(t *testing.T, be backend) {
	topic := topicFor("shared")
	a := be.open(t)
	defer a.Close(context.Background())
	subA, err := pubsub.NewSubscriber(a, "iso-a", pubsub.WithSubscribeOptions(be.subscribe...))
	if err != nil {
		t.Fatal(err)
	}
	if err := subA.SubscribeInitialize(topic); err != nil {
		t.Fatal(err)
	}
	ctxA, cancelA := context.WithCancel(context.Background())
	defer cancelA()
	chA, err := subA.Subscribe(ctxA, topic)
	if err != nil {
		t.Fatal(err)
	}
	b, pubB, subB, chB := openSide(t, be, topic, "iso-b")
	defer b.Close(context.Background())
	defer subB.Close()
	defer pubB.Close()

	roundTrip(t, pubB, chB, topic, "before")
	if be.name != "mem" { // two mem brokers share no topics: A sees nothing of B's
		select { // on a server, A's group got it too (fan-out across groups)
		case m := <-chA:
			m.Ack()
		case <-time.After(15 * time.Second):
			t.Fatal("A's subscription did not receive the shared topic's message")
		}
	}

	cancelA()
	deadline := time.After(15 * time.Second)
	for open := true; open; {
		select {
		case m, ok := <-chA:
			if ok {
				m.Nack()
			}
			open = ok
		case <-deadline:
			t.Fatal("A's output channel still open 15 s after its Subscribe ctx ended")
		}
	}
	for i := range 10 {
		roundTrip(t, pubB, chB, topic, fmt.Sprintf("after-ctx-%d", i))
	}
	if err := subA.Close(); err != nil {
		t.Errorf("close A's subscriber: %v", err)
	}
	closeBounded(t, "A", a)
	for i := range 10 {
		roundTrip(t, pubB, chB, topic, fmt.Sprintf("after-close-%d", i))
	}
}

// closeBounded closes b within a generous bound, failing the test (not
// stopping it) when Close reports an error.
func closeBounded(t *testing.T, name string, b broker.Broker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Errorf("close %s: %v", name, err)
	}
}
