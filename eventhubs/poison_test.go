package eventhubs_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/checkpoint"
	"github.com/isobroker/broker/eventhubs/emulator"
)

// The poison-message tests: an event whose handler keeps failing is
// retried in place on its partition, then published to the dead-letter
// hub and passed over.

// handlerCall is one handler call of a poison test.
type handlerCall struct {
	id, partition string
	seq           int64
	count         int // Metadata.DeliveryCount
	at            time.Time
}

// calls records handler calls; fail decides which ones fail.
type calls struct {
	mu   sync.Mutex
	all  []handlerCall
	fail func(d *broker.Delivery) bool
	more chan struct{}
}

func newCalls(fail func(d *broker.Delivery) bool) *calls {
	return &calls{fail: fail, more: make(chan struct{}, 1)}
}

func (c *calls) handle(_ context.Context, d *broker.Delivery) error {
	c.mu.Lock()
	c.all = append(c.all, handlerCall{d.ID, d.Metadata.Partition, d.Metadata.SequenceNumber, d.Metadata.DeliveryCount, time.Now()})
	c.mu.Unlock()
	select {
	case c.more <- struct{}{}:
	default:
	}
	if c.fail(d) {
		return fmt.Errorf("cannot parse order %s: bad input", d.ID)
	}
	return nil
}

// of returns the calls for id, in order.
func (c *calls) of(id string) []handlerCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []handlerCall
	for _, h := range c.all {
		if h.id == id {
			out = append(out, h)
		}
	}
	return out
}

// waitFor waits until cond holds (checked after every call) or d passes.
func (c *calls) waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-c.more:
		case <-time.After(20 * time.Millisecond):
		case <-deadline.C:
			t.Fatalf("%s: not within %v", what, d)
		}
	}
}

// deadReader subscribes to a dead-letter hub in the kept group from the
// earliest event, so that no copy published before it attached is missed.
func deadReader(t *testing.T, b *eventhubs.Broker, dl string) <-chan *broker.Delivery {
	t.Helper()
	ch := make(chan *broker.Delivery, 100)
	sub, err := b.Subscribe(subCtx(t), dl, func(_ context.Context, d *broker.Delivery) error {
		ch <- d
		return nil
	}, broker.Group(broker.DeadLetterGroup), broker.StartAt(broker.Earliest()))
	if err != nil {
		t.Fatalf("subscribe to the dead-letter hub: %v", err)
	}
	t.Cleanup(func() { _ = sub.Close(ctxT(t, 10*time.Second)) })
	return ch
}

func takeDead(t *testing.T, ch <-chan *broker.Delivery, d time.Duration) *broker.Delivery {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(d):
		t.Fatalf("no dead-lettered event within %v", d)
		return nil
	}
}

func toPartition(id, partition string) *broker.Message {
	return &broker.Message{ID: id, Body: []byte("body of " + id), Headers: map[string]string{eventhubs.PartitionIDHeader: partition}}
}

func publishT(t *testing.T, b *eventhubs.Broker, hub string, msgs ...*broker.Message) {
	t.Helper()
	if err := b.Publish(ctxT(t, 10*time.Second), hub, msgs...); err != nil {
		t.Fatalf("publish to %s: %v", hub, err)
	}
}

func TestPoisonCapabilities(t *testing.T) {
	e := startEmulator(t, emulator.Config{})
	caps := open(t, e, nil).Capabilities()
	if !caps.DeadLetter || !caps.RedeliveryDelay {
		t.Errorf("Capabilities DeadLetter %v RedeliveryDelay %v, want both true", caps.DeadLetter, caps.RedeliveryDelay)
	}
}

// TestPoisonDeadLetteredWhileOtherPartitionsFlow: an event that always
// fails is delivered MaxDeliveries times, RedeliveryDelay apart, while
// the events of the other partitions are handled; the event behind it on
// its own partition waits (in-place retry), and is handled once the
// poison event was dead-lettered — with its ID, body, headers and content
// type, and the four headers saying where it came from and why.
func TestPoisonDeadLetteredWhileOtherPartitionsFlow(t *testing.T) {
	e := startEmulator(t, emulator.Config{})
	hub := newHub(t, e, 4)
	dl := newDeadLetterHub(t, e, hub+"-dl")
	b := open(t, e, nil)
	dead := deadReader(t, b, dl)

	const limit, delay = 3, time.Second
	c := newCalls(func(d *broker.Delivery) bool { return d.ID == "poison" })
	sub, err := b.Subscribe(subCtx(t), hub, c.handle, // no Group: $Default
		broker.MaxDeliveries(limit), broker.DeadLetterTo(dl), broker.RedeliveryDelay(delay))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Close(ctxT(t, 10*time.Second)) }()

	poison := toPartition("poison", "0")
	poison.ContentType = "application/x-order"
	poison.Headers["tenant"] = "t1"
	publishT(t, b, hub, poison)
	c.waitFor(t, 10*time.Second, "first delivery of the poison event", func() bool { return len(c.of("poison")) >= 1 })

	var others []*broker.Message
	for p := 1; p < 4; p++ {
		for i := range 2 {
			others = append(others, toPartition(fmt.Sprintf("other-%d-%d", p, i), fmt.Sprint(p)))
		}
	}
	publishT(t, b, hub, append(others, toPartition("behind", "0"))...)
	c.waitFor(t, 10*time.Second, "events of the other partitions", func() bool {
		for _, m := range others {
			if len(c.of(m.ID)) == 0 {
				return false
			}
		}
		return true
	})
	if n := len(c.of("poison")); n >= limit {
		t.Errorf("poison event delivered %d times before the other partitions' events were all handled; want them handled while it was retried", n)
	}
	if n := len(c.of("behind")); n != 0 {
		t.Errorf("the event behind the poison event on its partition was handled before the poison event was given up on")
	}

	d := takeDead(t, dead, 20*time.Second)
	c.waitFor(t, 10*time.Second, "the event behind the poison event", func() bool { return len(c.of("behind")) == 1 })
	pc := c.of("poison")
	if len(pc) != limit {
		t.Fatalf("poison event delivered %d times, want MaxDeliveries = %d", len(pc), limit)
	}
	for i, h := range pc {
		if h.count != i {
			t.Errorf("delivery %d of the poison event: DeliveryCount %d, want %d", i+1, h.count, i)
		}
		if i > 0 && h.at.Sub(pc[i-1].at) < delay {
			t.Errorf("delivery %d came %v after the previous one, want at least the redelivery delay %v", i+1, h.at.Sub(pc[i-1].at), delay)
		}
	}
	if bh := c.of("behind")[0]; bh.at.Before(pc[limit-1].at) {
		t.Errorf("the event behind was handled before the poison event's last delivery")
	}
	if d.ID != "poison" || string(d.Body) != "body of poison" || d.ContentType != "application/x-order" || d.Headers["tenant"] != "t1" {
		t.Errorf("dead-lettered {ID %q Body %q ContentType %q Headers %v}, want the poison event as published", d.ID, d.Body, d.ContentType, d.Headers)
	}
	for k, want := range map[string]string{
		broker.HeaderOriginalTopic: hub,
		broker.HeaderOriginalGroup: eventhubs.DefaultConsumerGroup,
		broker.HeaderDeliveryCount: fmt.Sprint(limit),
	} {
		if got := d.Headers[k]; got != want {
			t.Errorf("dead-letter header %s = %q, want %q", k, got, want)
		}
	}
	if last := d.Headers[broker.HeaderLastError]; !strings.Contains(last, "cannot parse order poison") {
		t.Errorf("dead-letter header %s = %q, want the handler's error", broker.HeaderLastError, last)
	}
	// Passed over: never delivered again.
	publishT(t, b, hub, toPartition("marker", "0"))
	c.waitFor(t, 10*time.Second, "marker", func() bool { return len(c.of("marker")) == 1 })
	if n := len(c.of("poison")); n != limit {
		t.Errorf("poison event delivered %d times after it was dead-lettered, want %d", n, limit)
	}
}

// newDeadLetterHub creates the hub name with 2 partitions and the kept
// consumer group, as an operator must for a dead-letter hub.
func newDeadLetterHub(t *testing.T, e *emulator.Emulator, name string) string {
	t.Helper()
	if err := e.AddHub(name, 2, broker.DeadLetterGroup); err != nil {
		t.Fatal(err)
	}
	return name
}

// TestPoisonDeadLetterCopyOfSDKEvent: an event sent by the Azure SDK
// with a partition key and an application property named like
// PartitionIDHeader is dead-lettered with its key, its other properties
// and without that property (publishing it would target a partition of
// the dead-letter hub, and is refused together with a key).
func TestPoisonDeadLetterCopyOfSDKEvent(t *testing.T) {
	e := startEmulator(t, emulator.Config{})
	hub := newHub(t, e, 2)
	dl := newDeadLetterHub(t, e, hub+"-dl")
	b := open(t, e, nil)
	dead := deadReader(t, b, dl)
	c := newCalls(func(*broker.Delivery) bool { return true })
	sub, err := b.Subscribe(subCtx(t), hub, c.handle, broker.MaxDeliveries(2), broker.DeadLetterTo(dl),
		broker.RedeliveryDelay(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Close(ctxT(t, 10*time.Second)) }()

	ctx := ctxT(t, 20*time.Second)
	producer, err := azeventhubs.NewProducerClientFromConnectionString(e.ConnectionString(hub), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close(context.Background())
	key, id, ct := "tenant-b", "sdk-poison", "application/json"
	batch, err := producer.NewEventDataBatch(ctx, &azeventhubs.EventDataBatchOptions{PartitionKey: &key})
	if err != nil {
		t.Fatal(err)
	}
	if err := batch.AddEventData(&azeventhubs.EventData{Body: []byte(`{"bad":`), MessageID: &id, ContentType: &ct,
		Properties: map[string]any{"origin": "sdk", eventhubs.PartitionIDHeader: "1"}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := producer.SendEventDataBatch(ctx, batch, nil); err != nil {
		t.Fatal(err)
	}
	d := takeDead(t, dead, 20*time.Second)
	if d.ID != id || d.Key != key || string(d.Body) != `{"bad":` || d.ContentType != ct || d.Headers["origin"] != "sdk" {
		t.Errorf("dead-lettered {ID %q Key %q Body %q ContentType %q Headers %v}, want the SDK's event", d.ID, d.Key, d.Body, d.ContentType, d.Headers)
	}
	if v, ok := d.Headers[eventhubs.PartitionIDHeader]; ok {
		t.Errorf("dead-letter copy carries %s = %q", eventhubs.PartitionIDHeader, v)
	}
	if got := d.Headers[broker.HeaderDeliveryCount]; got != "2" {
		t.Errorf("%s = %q, want 2", broker.HeaderDeliveryCount, got)
	}
}

// TestPoisonBalanced: a Balanced member dead-letters like a plain
// subscription (group named in HeaderOriginalGroup) and checkpoints past
// the dead-lettered event.
func TestPoisonBalanced(t *testing.T) {
	e := startEmulator(t, emulator.Config{})
	hub := newHub(t, e, 2)
	if err := e.AddConsumerGroup(hub, "billing"); err != nil {
		t.Fatal(err)
	}
	dl := newDeadLetterHub(t, e, hub+"-dl")
	b := open(t, e, nil)
	dead := deadReader(t, b, dl)
	store := checkpoint.NewMemoryStore()
	c := newCalls(func(d *broker.Delivery) bool { return d.ID == "poison" })
	sub, err := b.Subscribe(subCtx(t), hub, c.handle, broker.Group("billing"), broker.StartAt(broker.Earliest()),
		broker.MaxDeliveries(2), broker.DeadLetterTo(dl), broker.RedeliveryDelay(100*time.Millisecond),
		broker.WithDriverOption(eventhubs.Balanced(store, eventhubs.BalanceOptions{Strategy: eventhubs.StrategyGreedy})))
	if err != nil {
		t.Fatal(err)
	}
	publishT(t, b, hub, toPartition("ok-1", "0"), toPartition("poison", "0"), toPartition("ok-2", "0"), toPartition("other", "1"))
	d := takeDead(t, dead, 20*time.Second)
	c.waitFor(t, 10*time.Second, "events after the poison event", func() bool {
		return len(c.of("ok-2")) == 1 && len(c.of("other")) == 1
	})
	if n := len(c.of("poison")); n != 2 {
		t.Errorf("poison event delivered %d times, want 2", n)
	}
	if d.ID != "poison" || d.Headers[broker.HeaderOriginalGroup] != "billing" || d.Headers[broker.HeaderOriginalTopic] != hub {
		t.Errorf("dead-lettered %q with headers %v, want poison from %s group billing", d.ID, d.Headers, hub)
	}
	if err := sub.Close(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got, want := checkpointSeq(t, e, store, hub, "billing", "0"), c.of("ok-2")[0].seq; got != want {
		t.Errorf("partition 0 checkpoint at sequence %d, want %d (ok-2, past the dead-lettered event)", got, want)
	}
}

// checkpointSeq returns the sequence number of partition p's checkpoint
// (-1 when there is none).
func checkpointSeq(t *testing.T, e *emulator.Emulator, store checkpoint.Store, hub, group, p string) int64 {
	t.Helper()
	cfg, err := eventhubs.ParseConnectionString(e.ConnectionString(""))
	if err != nil {
		t.Fatal(err)
	}
	cps, err := store.ListCheckpoints(ctxT(t, 10*time.Second), cfg.Namespace, hub, group)
	if err != nil {
		t.Fatal(err)
	}
	for _, cp := range cps {
		if cp.PartitionID == p {
			return cp.SequenceNumber
		}
	}
	return -1
}

// TestPoisonStoppedWhileRetryingNotCheckpointed: a Balanced member
// closed while it waits to redeliver an event closes at once and does
// not checkpoint that event; the next member reads it again, and nothing
// is dead-lettered.
func TestPoisonStoppedWhileRetryingNotCheckpointed(t *testing.T) {
	e := startEmulator(t, emulator.Config{})
	hub := newHub(t, e, 2)
	dl := newDeadLetterHub(t, e, hub+"-dl")
	b := open(t, e, nil)
	store := checkpoint.NewMemoryStore()
	opts := func() []broker.SubscribeOption {
		return []broker.SubscribeOption{broker.StartAt(broker.Earliest()), broker.MaxDeliveries(5), broker.DeadLetterTo(dl),
			broker.RedeliveryDelay(time.Minute),
			broker.WithDriverOption(eventhubs.Balanced(store, eventhubs.BalanceOptions{Strategy: eventhubs.StrategyGreedy}))}
	}
	c := newCalls(func(d *broker.Delivery) bool { return d.ID == "poison" })
	sub, err := b.Subscribe(subCtx(t), hub, c.handle, opts()...)
	if err != nil {
		t.Fatal(err)
	}
	publishT(t, b, hub, toPartition("ok-1", "0"), toPartition("poison", "0"))
	c.waitFor(t, 10*time.Second, "first delivery of the poison event", func() bool { return len(c.of("poison")) == 1 })
	start := time.Now()
	if err := sub.Close(ctxT(t, 20*time.Second)); err != nil {
		t.Fatalf("Close while retrying: %v", err)
	}
	if el := time.Since(start); el > 15*time.Second {
		t.Errorf("Close took %v while the subscription waited a one-minute redelivery delay", el)
	}
	if got, want := checkpointSeq(t, e, store, hub, eventhubs.DefaultConsumerGroup, "0"), c.of("ok-1")[0].seq; got != want {
		t.Errorf("partition 0 checkpoint at sequence %d, want %d (ok-1: the event being retried is not checkpointed)", got, want)
	}
	again := newCalls(func(*broker.Delivery) bool { return false })
	sub2, err := b.Subscribe(subCtx(t), hub, again.handle, opts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub2.Close(ctxT(t, 10*time.Second)) }()
	again.waitFor(t, 20*time.Second, "the poison event read again by the next member", func() bool { return len(again.of("poison")) == 1 })
	if n := len(again.of("ok-1")); n != 0 {
		t.Errorf("ok-1, checkpointed, was read again %d times", n)
	}
	pp, err := b.PartitionProperties(ctxT(t, 10*time.Second), dl, "0")
	if err != nil {
		t.Fatal(err)
	}
	pp1, err := b.PartitionProperties(ctxT(t, 10*time.Second), dl, "1")
	if err != nil {
		t.Fatal(err)
	}
	if !pp.IsEmpty || !pp1.IsEmpty {
		t.Errorf("dead-letter hub holds events, want none: the stopped subscription gave up on nothing")
	}
}

// TestMaxHandlerRetriesMapsToMaxDeliveries: the deprecated
// MaxHandlerRetries(n) dead-letters after n+1 deliveries (to the default
// dead-letter hub); with MaxDeliveries or UnlimitedDeliveries it is
// refused, naming both; MaxHandlerRetries(0) is the default and combines.
func TestMaxHandlerRetriesMapsToMaxDeliveries(t *testing.T) {
	e := startEmulator(t, emulator.Config{})
	hub := newHub(t, e, 1)
	newDeadLetterHub(t, e, broker.DeadLetterTopic(hub))
	b := open(t, e, nil)
	h := func(context.Context, *broker.Delivery) error { return nil }
	for name, opts := range map[string][]broker.SubscribeOption{
		"MaxDeliveries":       {broker.WithDriverOption(eventhubs.MaxHandlerRetries(2)), broker.MaxDeliveries(5)},
		"UnlimitedDeliveries": {broker.UnlimitedDeliveries(), broker.WithDriverOption(eventhubs.MaxHandlerRetries(2))},
		"negative":            {broker.WithDriverOption(eventhubs.MaxHandlerRetries(-1))},
	} {
		sub, err := b.Subscribe(subCtx(t), hub, h, opts...)
		if err == nil {
			_ = sub.Close(ctxT(t, 10*time.Second))
		}
		if !errors.Is(err, broker.ErrInvalidOption) || !strings.Contains(err.Error(), "MaxHandlerRetries") ||
			(name != "negative" && !strings.Contains(err.Error(), "MaxDeliveries")) {
			t.Errorf("%s: Subscribe = %v, want ErrInvalidOption naming MaxHandlerRetries and MaxDeliveries", name, err)
		}
	}
	sub, err := b.Subscribe(subCtx(t), hub, h, broker.WithDriverOption(eventhubs.MaxHandlerRetries(0)), broker.MaxDeliveries(5))
	if err != nil {
		t.Fatalf("MaxHandlerRetries(0) with MaxDeliveries: %v", err)
	}
	_ = sub.Close(ctxT(t, 10*time.Second))

	dead := deadReader(t, b, broker.DeadLetterTopic(hub))
	c := newCalls(func(*broker.Delivery) bool { return true })
	sub, err = b.Subscribe(subCtx(t), hub, c.handle, broker.WithDriverOption(eventhubs.MaxHandlerRetries(2)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Close(ctxT(t, 10*time.Second)) }()
	publishT(t, b, hub, msgT("poison"))
	d := takeDead(t, dead, 20*time.Second)
	if n := len(c.of("poison")); n != 3 || d.Headers[broker.HeaderDeliveryCount] != "3" {
		t.Errorf("MaxHandlerRetries(2): delivered %d times, %s = %q; want 3 deliveries (MaxDeliveries(3))", n,
			broker.HeaderDeliveryCount, d.Headers[broker.HeaderDeliveryCount])
	}
}

func msgT(id string) *broker.Message { return &broker.Message{ID: id, Body: []byte("body of " + id)} }

// TestPoisonDeadLetterHubMissingStalls: when the dead-letter publish is
// refused (the hub does not exist), the partition stalls — the event is
// neither skipped nor lost, the failure is logged at error level and
// retried every Backoff.Max — and once the hub exists the copy arrives and
// the partition moves on.
func TestPoisonDeadLetterHubMissingStalls(t *testing.T) {
	e := startEmulator(t, emulator.Config{})
	hub := newHub(t, e, 1)
	dl := hub + "-missing-dl"
	logs := &logBuffer{}
	b := open(t, e, logs, eventhubs.WithBackoff(broker.Backoff{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond}))
	c := newCalls(func(d *broker.Delivery) bool { return d.ID == "poison" })
	sub, err := b.Subscribe(subCtx(t), hub, c.handle, broker.MaxDeliveries(1), broker.DeadLetterTo(dl))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Close(ctxT(t, 10*time.Second)) }()
	publishT(t, b, hub, msgT("poison"), msgT("behind"))
	deadline := time.Now().Add(20 * time.Second)
	for logs.count("level=ERROR", "dead-lettering failed") < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := logs.count("level=ERROR", "dead-lettering failed"); n < 3 {
		t.Fatalf("%d error-level logs of the failed dead-letter publish, want repeated attempts", n)
	}
	if n := len(c.of("behind")); n != 0 {
		t.Errorf("the event behind was handled while the poison event could not be dead-lettered")
	}
	if n := len(c.of("poison")); n != 1 {
		t.Errorf("poison event delivered %d times, want 1 (MaxDeliveries(1): the retries are of the publish)", n)
	}
	newDeadLetterHub(t, e, dl)
	dead := deadReader(t, b, dl)
	if d := takeDead(t, dead, 20*time.Second); d.ID != "poison" {
		t.Errorf("dead-lettered %q, want poison", d.ID)
	}
	c.waitFor(t, 10*time.Second, "the event behind once dead-lettering worked", func() bool { return len(c.of("behind")) == 1 })
}

// subCtx is a Subscribe ctx: it bounds the subscription's life, so it
// outlasts every wait of the test.
func subCtx(t *testing.T) context.Context { return ctxT(t, 2*time.Minute) }
