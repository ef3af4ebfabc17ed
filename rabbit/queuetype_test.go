package rabbit_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/rabbit"
)

// inbox collects deliveries for tests.
type inbox struct {
	mu   sync.Mutex
	got  []*broker.Delivery
	more chan struct{}
}

func newInbox() *inbox { return &inbox{more: make(chan struct{}, 1)} }

func (b *inbox) handle(_ context.Context, d *broker.Delivery) error {
	b.mu.Lock()
	b.got = append(b.got, d)
	b.mu.Unlock()
	select {
	case b.more <- struct{}{}:
	default:
	}
	return nil
}

// wait returns the first n deliveries, failing the test after 30 s.
func (b *inbox) wait(t *testing.T, n int) []*broker.Delivery {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		b.mu.Lock()
		if len(b.got) >= n {
			out := append([]*broker.Delivery(nil), b.got[:n]...)
			b.mu.Unlock()
			return out
		}
		have := len(b.got)
		b.mu.Unlock()
		select {
		case <-b.more:
		case <-deadline:
			t.Fatalf("got %d deliveries, want %d", have, n)
		}
	}
}

func (b *inbox) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.got)
}

func subscribeT(t *testing.T, b *rabbit.Broker, topic string, h broker.Handler, opts ...broker.SubscribeOption) broker.Subscription {
	t.Helper()
	// The Subscribe ctx bounds the subscription's life: the test's.
	sub, err := b.Subscribe(t.Context(), topic, h, opts...)
	if err != nil {
		t.Fatalf("subscribe to %q: %v", topic, err)
	}
	t.Cleanup(func() { _ = sub.Close(ctxFor(t, 30*time.Second)) })
	return sub
}

func publishT(t *testing.T, b *rabbit.Broker, topic string, ids ...string) {
	t.Helper()
	msgs := make([]*broker.Message, len(ids))
	for i, id := range ids {
		msgs[i] = &broker.Message{ID: id, Key: "k." + id, Body: []byte(id)}
	}
	if err := b.Publish(ctxFor(t, 30*time.Second), topic, msgs...); err != nil {
		t.Fatalf("publish %v: %v", ids, err)
	}
}

// queueIs checks with rabbitmqctl that queue exists with type kind.
func queueIs(t *testing.T, queue string, kind rabbit.QueueType) {
	t.Helper()
	out, err := shared.Node(t).Ctl(ctxFor(t, 30*time.Second), "list_queues", "--quiet", "--no-table-headers", "name", "type")
	if err != nil {
		t.Fatalf("list_queues: %v", err)
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == queue {
			if f[1] != string(kind) {
				t.Errorf("queue %q is %s, want %s", queue, f[1], kind)
			}
			return
		}
	}
	t.Errorf("queue %q not listed:\n%s", queue, out)
}

// TestGroupQueueIsQuorum: a group subscription's queue is a quorum queue
// unless QueueType says otherwise; its dead-letter exchange and kept
// queue exist before anything failed.
func TestGroupQueueIsQuorum(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t)
	b := open(t, url)
	topic := brokertest.RandomName("qtype")
	in := newInbox()
	subscribeT(t, b, topic, in.handle, broker.Group("g"))
	subscribeT(t, b, topic, in.handle, broker.Group("c"), broker.WithDriverOption(rabbit.Classic))
	queueIs(t, topic+".g", rabbit.Quorum)
	queueIs(t, topic+".c", rabbit.Classic)
	queueIs(t, broker.DeadLetterTopic(topic)+"."+broker.DeadLetterGroup, rabbit.Quorum)
	publishT(t, b, topic, "m")
	in.wait(t, 2)
}

// TestExistingClassicQueue: a group queue declared classic before quorum
// became the default makes Subscribe fail at once with an error that
// names QueueType, is not retryable, and leaves the queue untouched;
// QueueType(Classic) then reads it.
func TestExistingClassicQueue(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t)
	topic := brokertest.RandomName("legacy")
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := ch.ExchangeDeclare(topic, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(topic+".g", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(topic+".g", "#", topic, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish(topic, "k", false, false, amqp.Publishing{MessageId: "old", Body: []byte("old")}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = ch.QueueDelete(topic+".g", false, false, false) })

	b := open(t, url)
	in := newInbox()
	start := time.Now()
	_, err = b.Subscribe(ctxFor(t, 30*time.Second), topic, in.handle, broker.Group("g"))
	t.Logf("default subscribe to the classic queue: %v (after %v)", err, time.Since(start))
	switch {
	case err == nil:
		t.Fatal("Subscribe to an existing classic queue as quorum succeeded")
	case !errors.Is(err, broker.ErrInvalidOption) || broker.IsRetryable(err):
		t.Errorf("error = %v, want ErrInvalidOption, not retryable", err)
	case !strings.Contains(err.Error(), "QueueType") || !strings.Contains(err.Error(), "x-queue-type"):
		t.Errorf("error does not name the argument and the option: %v", err)
	}
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
		t.Errorf("the server's error is not reachable with errors.As: %v", err)
	}
	subscribeT(t, b, topic, in.handle, broker.Group("g"), broker.WithDriverOption(rabbit.Classic))
	if d := in.wait(t, 1)[0]; d.ID != "old" {
		t.Errorf("read %q from the classic queue, want the message it held", d.ID)
	}
}

// TestQueueOptionsRefused: combinations a queue type cannot honour are
// refused before anything is declared, naming the problem.
func TestQueueOptionsRefused(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t)
	b := open(t, url)
	topic := brokertest.RandomName("qopts")
	h := func(context.Context, *broker.Delivery) error { return nil }
	for _, tc := range []struct {
		name string
		opts []broker.SubscribeOption
		want error
		says string
	}{
		{"private quorum", []broker.SubscribeOption{broker.WithDriverOption(rabbit.Quorum)}, broker.ErrInvalidOption, "needs a group"},
		{"private stream", []broker.SubscribeOption{broker.WithDriverOption(rabbit.Stream)}, broker.ErrInvalidOption, "needs a group"},
		{"unknown type", []broker.SubscribeOption{broker.Group("g"), broker.WithDriverOption(rabbit.QueueType("lazy"))}, broker.ErrInvalidOption, "lazy"},
		{"private single active", []broker.SubscribeOption{broker.WithDriverOption(rabbit.SingleActiveConsumer(true))}, broker.ErrInvalidOption, "SingleActiveConsumer"},
		{"stream single active", []broker.SubscribeOption{broker.Group("g"), broker.WithDriverOption(rabbit.Stream), broker.WithDriverOption(rabbit.SingleActiveConsumer(true))}, broker.ErrInvalidOption, "SingleActiveConsumer"},
		{"replay on quorum", []broker.SubscribeOption{broker.Group("g"), broker.StartAt(broker.Earliest())}, broker.ErrUnsupported, "Stream"},
		{"replay without stream", []broker.SubscribeOption{broker.StartAt(broker.Earliest())}, broker.ErrUnsupported, "start position"},
		{"bad stream offset", []broker.SubscribeOption{broker.Group("g"), broker.WithDriverOption(rabbit.Stream), broker.StartAt(broker.AtOffset("abc", true))}, broker.ErrInvalidOption, "abc"},
		{"sub-millisecond delay", []broker.SubscribeOption{broker.Group("g"), broker.RedeliveryDelay(time.Microsecond)}, broker.ErrInvalidOption, "1ms"},
		{"too many delay steps", []broker.SubscribeOption{broker.Group("g"), broker.RedeliveryBackoff(broker.Backoff{Initial: time.Millisecond, Max: 1000 * time.Hour})}, broker.ErrInvalidOption, "steps"},
	} {
		_, err := b.Subscribe(ctxFor(t, 10*time.Second), topic, h, tc.opts...)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: Subscribe = %v, want %v saying %q", tc.name, err, tc.want, tc.says)
		}
	}
}

// TestQuorumLostConsumerCounts: on a quorum queue a delivery whose
// consumer is lost while handling it counts as failed: after MaxDeliveries
// such losses the server dead-letters the message into the kept queue,
// and the other messages flow meanwhile. (Prefetch 1: the server counts a
// message prefetched by a lost consumer as delivered too, handled or not;
// see QueueType.)
func TestQuorumLostConsumerCounts(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t)
	topic := brokertest.RandomName("lost")
	const limit = 3
	reader := open(t, url)
	dead := newInbox()
	subscribeT(t, reader, broker.DeadLetterTopic(topic), dead.handle, broker.Group(broker.DeadLetterGroup))

	good := newInbox()
	seen := make(chan int, limit+1) // DeliveryCount of each poison delivery
	for i := range limit {
		b := open(t, url)
		hold := make(chan struct{})
		sub := subscribeT(t, b, topic, func(ctx context.Context, d *broker.Delivery) error {
			if d.ID != "poison" {
				return good.handle(ctx, d)
			}
			seen <- d.Metadata.DeliveryCount
			<-hold // until the connection is gone
			return errors.New("never reached")
		}, broker.Group("g"), broker.MaxDeliveries(limit), broker.Prefetch(1))
		if i == 0 {
			publishT(t, b, topic, "poison")
		}
		select {
		case n := <-seen:
			if n != i {
				t.Errorf("delivery %d of the poison message had DeliveryCount %d", i+1, n)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("delivery %d of the poison message never came", i+1)
		}
		publishT(t, b, topic, fmt.Sprint("good-", i))
		// Lose the consumer while it handles the poison message: Close
		// with an expired ctx gives up on the handler and drops the
		// connection, which returns the message to the queue.
		expired, cancel := context.WithCancel(context.Background())
		cancel()
		_ = b.Close(expired)
		close(hold)
		<-sub.Done()
	}
	d := dead.wait(t, 1)[0]
	if d.ID != "poison" {
		t.Fatalf("dead-lettered %q", d.ID)
	}
	if d.Headers["x-first-death-reason"] != "delivery_limit" {
		t.Errorf("dead-lettered with headers %v, want the server's delivery_limit", d.Headers)
	}
	if n := len(seen); n != 0 {
		t.Errorf("the poison message was delivered %d more times", n)
	}
	last := open(t, url)
	subscribeT(t, last, topic, good.handle, broker.Group("g"), broker.MaxDeliveries(limit), broker.Prefetch(1))
	got := map[string]bool{}
	for _, d := range good.wait(t, limit) {
		got[d.ID] = true
	}
	for i := range limit {
		if !got[fmt.Sprint("good-", i)] {
			t.Errorf("good-%d not handled; got %v", i, got)
		}
	}
	if n := dead.count(); n != 1 {
		t.Errorf("%d messages dead-lettered, want only the poison one", n)
	}
}

// TestStreamReplay: a stream group replays from the earliest message, an
// offset or a time, and after the consumer's restart reads again from
// earliest; Metadata carries the stream offset.
func TestStreamReplay(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t)
	b := open(t, url)
	topic := brokertest.RandomName("stream")
	stream := broker.WithDriverOption(rabbit.Stream)
	// The stream must exist before the first publish reaches it.
	first := newInbox()
	sub := subscribeT(t, b, topic, first.handle, broker.Group("log"), stream)
	ids := make([]string, 10)
	for i := range ids {
		ids[i] = fmt.Sprint("m", i)
	}
	publishT(t, b, topic, ids[:5]...)
	time.Sleep(1100 * time.Millisecond) // stream timestamps are in seconds
	atTime := time.Now()
	publishT(t, b, topic, ids[5:]...)
	got := first.wait(t, 10)
	for i, d := range got {
		if d.ID != ids[i] {
			t.Fatalf("latest reader got %v, want m0..m9 in order", idsOf(got))
		}
	}
	if err := sub.Close(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}

	// A restarted consumer of the same group, from earliest: everything
	// again, in order, with offsets.
	again := newInbox()
	subscribeT(t, b, topic, again.handle, broker.Group("log"), stream, broker.StartAt(broker.Earliest()))
	replay := again.wait(t, 10)
	for i, d := range replay {
		if d.ID != ids[i] {
			t.Fatalf("replay from earliest got %v", idsOf(replay))
		}
	}
	off, err := strconv.ParseInt(replay[3].Metadata.Offset, 10, 64)
	if err != nil || replay[3].Metadata.SequenceNumber != off {
		t.Fatalf("replayed message offset %q / sequence %d", replay[3].Metadata.Offset, replay[3].Metadata.SequenceNumber)
	}

	// From an offset, inclusive and not.
	for _, inclusive := range []bool{true, false} {
		in := newInbox()
		subscribeT(t, b, topic, in.handle, broker.Group("log"), stream, broker.StartAt(broker.AtOffset(replay[3].Metadata.Offset, inclusive)))
		want := ids[3:]
		if !inclusive {
			want = ids[4:]
		}
		if got := in.wait(t, len(want)); got[0].ID != want[0] || got[len(got)-1].ID != "m9" {
			t.Errorf("from offset %s (inclusive %v) got %v, want %v", replay[3].Metadata.Offset, inclusive, idsOf(got), want)
		}
	}
	// From a time: only what was published after it.
	in := newInbox()
	subscribeT(t, b, topic, in.handle, broker.Group("log"), stream, broker.StartAt(broker.AtTime(atTime)))
	if got := in.wait(t, 5); got[0].ID != "m5" {
		t.Errorf("from %v got %v first, want m5", atTime, got[0].ID)
	}
}

// TestStreamFailureRetriedInPlace: a stream cannot take a message back: a
// failing message is handed to the handler again after the redelivery
// delay, the next messages go on meanwhile (Concurrency 2), and after
// MaxDeliveries it is dead-lettered with the handler's error; then the
// consumer is severed and resumes after what it took, not from its start
// position.
func TestStreamFailureRetriedInPlace(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t)
	b := open(t, url)
	topic := brokertest.RandomName("streamfail")
	dead := newInbox()
	subscribeT(t, b, broker.DeadLetterTopic(topic), dead.handle, broker.Group(broker.DeadLetterGroup))
	const delay = 200 * time.Millisecond
	var mu sync.Mutex
	var failedAt []time.Time
	good := newInbox()
	subscribeT(t, b, topic, func(ctx context.Context, d *broker.Delivery) error {
		if d.ID == "poison" {
			mu.Lock()
			failedAt = append(failedAt, time.Now())
			mu.Unlock()
			return errors.New("cannot handle poison")
		}
		return good.handle(ctx, d)
	}, broker.Group("g"), broker.WithDriverOption(rabbit.Stream), broker.StartAt(broker.Earliest()),
		broker.MaxDeliveries(3), broker.RedeliveryDelay(delay), broker.Concurrency(2))
	publishT(t, b, topic, "poison", "a", "b", "c")
	if got := good.wait(t, 3); len(got) != 3 {
		t.Fatal(got)
	}
	d := dead.wait(t, 1)[0]
	if d.ID != "poison" || d.Headers[broker.HeaderDeliveryCount] != "3" || !strings.Contains(d.Headers[broker.HeaderLastError], "cannot handle poison") {
		t.Errorf("dead-lettered %q with headers %v", d.ID, d.Headers)
	}
	mu.Lock()
	at := append([]time.Time(nil), failedAt...)
	mu.Unlock()
	if len(at) != 3 {
		t.Fatalf("poison handled %d times, want 3", len(at))
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < delay {
			t.Errorf("attempt %d came %v after the previous, want at least %v", i+1, gap, delay)
		}
	}
	if n := good.count(); n != 3 {
		t.Errorf("good messages handled %d times, want 3", n)
	}
}

func idsOf(ds []*broker.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

// TestSingleActiveConsumer: with SingleActiveConsumer one member of the
// group gets every message; when it closes, the other takes over.
func TestSingleActiveConsumer(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t)
	b := open(t, url)
	topic := brokertest.RandomName("sac")
	sac := broker.WithDriverOption(rabbit.SingleActiveConsumer(true))
	one, two := newInbox(), newInbox()
	first := subscribeT(t, b, topic, one.handle, broker.Group("g"), sac)
	subscribeT(t, b, topic, two.handle, broker.Group("g"), sac)
	for i := range 20 {
		publishT(t, b, topic, fmt.Sprint("a", i))
	}
	one.wait(t, 20)
	if n := two.count(); n != 0 {
		t.Errorf("the standby member got %d messages", n)
	}
	if err := first.Close(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		publishT(t, b, topic, fmt.Sprint("b", i))
	}
	if got := two.wait(t, 5); got[0].ID != "b0" {
		t.Errorf("the standby member got %v", idsOf(got))
	}
}
