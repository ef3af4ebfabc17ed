package brokertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isobroker/broker"
)

// testRoundTrip: every field of a published message arrives unchanged, and
// the delivery names its topic.
func (s *suite) testRoundTrip(t *testing.T) {
	b := s.open(t)
	topic := s.h.NewTopic(t)
	c := newCollector()
	s.subscribe(t, b, topic, c.handle)
	want := &broker.Message{
		ID:          "id-1",
		Key:         "key-1",
		Body:        []byte("hello, broker"),
		Headers:     map[string]string{"trace-id": "abc", "x-unicode": "grüße"},
		ContentType: "text/plain",
	}
	s.publish(t, b, topic, want)
	got := s.take(t, c, 1)[0]
	if got.ID != want.ID || got.Key != want.Key || !bytes.Equal(got.Body, want.Body) ||
		got.ContentType != want.ContentType {
		t.Errorf("delivered {ID %q Key %q Body %q ContentType %q}, published {ID %q Key %q Body %q ContentType %q}",
			got.ID, got.Key, got.Body, got.ContentType, want.ID, want.Key, want.Body, want.ContentType)
	}
	for k, v := range want.Headers {
		if got.Headers[k] != v {
			t.Errorf("header %q = %q, want %q (all: %v)", k, got.Headers[k], v, got.Headers)
		}
	}
	if got.Metadata.Topic != topic {
		t.Errorf("Metadata.Topic = %q, want %q", got.Metadata.Topic, topic)
	}
	if got.Metadata.Redelivered {
		t.Errorf("first delivery has Metadata.Redelivered set")
	}
}

// testEmptyBodyAndManyHeaders: an empty body and 50 headers survive.
func (s *suite) testEmptyBodyAndManyHeaders(t *testing.T) {
	b := s.open(t)
	topic := s.h.NewTopic(t)
	c := newCollector()
	s.subscribe(t, b, topic, c.handle)
	headers := make(map[string]string)
	for i := range 50 {
		headers[fmt.Sprintf("h-%02d", i)] = fmt.Sprintf("value %d", i)
	}
	s.publish(t, b, topic, &broker.Message{ID: "empty", Headers: headers})
	got := s.take(t, c, 1)[0]
	if len(got.Body) != 0 {
		t.Errorf("body = %q, want empty", got.Body)
	}
	for k, v := range headers {
		if got.Headers[k] != v {
			t.Errorf("header %q = %q, want %q", k, got.Headers[k], v)
		}
	}
}

// testGroupsFanOut: two groups each receive every message once.
func (s *suite) testGroupsFanOut(t *testing.T) {
	b := s.open(t)
	topic := s.h.NewTopic(t)
	c1, c2 := newCollector(), newCollector()
	s.subscribe(t, b, topic, c1.handle, broker.Group(RandomName("g1")))
	s.subscribe(t, b, topic, c2.handle, broker.Group(RandomName("g2")))
	const n = 20
	for i := range n {
		s.publish(t, b, topic, msg(fmt.Sprintf("m%d", i)))
	}
	for i, c := range []*collector{c1, c2} {
		got := countIDs(s.take(t, c, n))
		if len(got) != n {
			t.Errorf("group %d received %d distinct messages, want %d (repeats: %s)", i+1, len(got), n, describe(got))
		}
	}
}

// testGroupsCompete: two members of one group share the messages: each is
// handled once in total, and both members get some.
func (s *suite) testGroupsCompete(t *testing.T) {
	b := s.open(t)
	if !b.Capabilities().CompetingConsumers {
		t.Skip("broker does not offer competing consumers (Capabilities.CompetingConsumers is false)")
	}
	topic := s.h.NewTopic(t)
	group := RandomName("g")
	all := newCollector()
	var n1, n2 atomic.Int64
	member := func(n *atomic.Int64) broker.Handler {
		return func(ctx context.Context, d *broker.Delivery) error {
			n.Add(1)
			time.Sleep(2 * time.Millisecond) // let the other member take its share
			return all.handle(ctx, d)
		}
	}
	s.subscribe(t, b, topic, member(&n1), broker.Group(group), broker.Prefetch(1))
	s.subscribe(t, b, topic, member(&n2), broker.Group(group), broker.Prefetch(1))
	const n = 60
	msgs := make([]*broker.Message, n)
	for i := range msgs {
		msgs[i] = msg(fmt.Sprintf("m%d", i))
	}
	s.publish(t, b, topic, msgs...)
	got := countIDs(s.take(t, all, n))
	if len(got) != n {
		t.Errorf("group handled %d distinct messages, want %d (repeats: %s)", len(got), n, describe(got))
	}
	select { // the members run concurrently, so no marker can order this
	case d := <-all.ch:
		t.Errorf("message %s handled again by the group", d.ID)
	case <-time.After(300 * time.Millisecond):
	}
	if n1.Load() == 0 || n2.Load() == 0 {
		t.Errorf("members handled %d and %d messages; both should get a share", n1.Load(), n2.Load())
	}
}

// testAckedNotRedelivered: acknowledged messages never come back.
func (s *suite) testAckedNotRedelivered(t *testing.T) {
	b := s.open(t)
	topic := s.h.NewTopic(t)
	c := newCollector()
	s.subscribe(t, b, topic, c.handle, broker.Group(RandomName("g")))
	for i := range 10 {
		s.publish(t, b, topic, msg(fmt.Sprintf("m%d", i)))
	}
	s.take(t, c, 10)
	s.publish(t, b, topic, msg("marker"))
	if extra := s.takeUntil(t, c, "marker"); len(extra) > 0 {
		t.Errorf("acked messages delivered again: %v", ids(extra))
	}
}

// testNackRedelivers: a handler error makes the broker deliver the message
// again, marked as redelivered; acking it then ends the redeliveries.
func (s *suite) testNackRedelivers(t *testing.T) {
	b := s.open(t)
	if !b.Capabilities().Redelivery {
		t.Skip("broker does not redeliver nacked messages (Capabilities.Redelivery is false)")
	}
	topic := s.h.NewTopic(t)
	c := newCollector()
	var attempts atomic.Int64
	h := func(ctx context.Context, d *broker.Delivery) error {
		if d.ID == "flaky" && attempts.Add(1) < 3 {
			return errors.New("not yet")
		}
		return c.handle(ctx, d)
	}
	s.subscribe(t, b, topic, h, broker.Group(RandomName("g")))
	s.publish(t, b, topic, msg("flaky"))
	got := s.take(t, c, 1)[0]
	if got.ID != "flaky" {
		t.Fatalf("delivered %q, want flaky", got.ID)
	}
	if n := attempts.Load(); n != 3 {
		t.Errorf("handler saw the message %d times, want 3 (two nacks, one ack)", n)
	}
	if !got.Metadata.Redelivered {
		t.Errorf("redelivered message has Metadata.Redelivered false")
	}
	s.publish(t, b, topic, msg("marker"))
	if extra := s.takeUntil(t, c, "marker"); len(extra) > 0 {
		t.Errorf("message delivered again after ack: %v", ids(extra))
	}
}

// testCloseWhileRedelivering: a subscription whose handler always fails
// (so the broker redelivers in a tight loop) still stops promptly when
// closed.
func (s *suite) testCloseWhileRedelivering(t *testing.T) {
	b := s.open(t)
	if !b.Capabilities().Redelivery {
		t.Skip("broker does not redeliver nacked messages (Capabilities.Redelivery is false)")
	}
	topic := s.h.NewTopic(t)
	var calls atomic.Int64
	sub := s.subscribe(t, b, topic, func(context.Context, *broker.Delivery) error {
		calls.Add(1)
		return errors.New("always failing")
	}, broker.Group(RandomName("g")), broker.Concurrency(2))
	s.publish(t, b, topic, msg("poison-1"), msg("poison-2"))
	deadline := time.Now().Add(s.h.Timeout)
	for calls.Load() < 10 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if calls.Load() < 10 {
		t.Fatalf("handler called %d times; nacked messages are not redelivered", calls.Load())
	}
	if err := sub.Close(s.ctx(t)); err != nil {
		t.Errorf("Close of a redelivering subscription = %v", err)
	}
	select {
	case <-sub.Done():
	default:
		t.Errorf("Done not closed after Close returned")
	}
	after := calls.Load()
	time.Sleep(100 * time.Millisecond)
	if n := calls.Load(); n != after {
		t.Errorf("handler called %d more times after Close returned", n-after)
	}
}

// testPerKeyOrdering: with four concurrent handlers, messages of one key
// arrive in publish order and never overlap; a nack keeps the order.
func (s *suite) testPerKeyOrdering(t *testing.T) {
	b := s.open(t)
	if !b.Capabilities().PerKeyOrdering {
		t.Skip("broker does not order per key (Capabilities.PerKeyOrdering is false)")
	}
	topic := s.h.NewTopic(t)
	const keys, perKey = 4, 25
	var mu sync.Mutex
	next := make(map[string]int)     // key → next expected index
	running := make(map[string]bool) // key → a handler is running
	nacked := make(map[string]bool)
	var failures []string
	done := make(chan struct{})
	var handled int
	h := func(ctx context.Context, d *broker.Delivery) error {
		mu.Lock()
		if running[d.Key] {
			failures = append(failures, fmt.Sprintf("two handlers at once for key %s", d.Key))
		}
		running[d.Key] = true
		mu.Unlock()
		time.Sleep(time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		running[d.Key] = false
		var idx int
		fmt.Sscanf(d.Headers["index"], "%d", &idx)
		if idx != next[d.Key] {
			failures = append(failures, fmt.Sprintf("key %s: got index %d, want %d", d.Key, idx, next[d.Key]))
		}
		if idx == 7 && !nacked[d.Key] { // nack once mid-stream
			nacked[d.Key] = true
			return errors.New("nack once")
		}
		next[d.Key] = idx + 1
		handled++
		if handled == keys*perKey {
			close(done)
		}
		return nil
	}
	s.subscribe(t, b, topic, h, broker.Group(RandomName("g")), broker.Concurrency(4))
	var msgs []*broker.Message
	for i := range perKey {
		for k := range keys {
			msgs = append(msgs, &broker.Message{
				ID: fmt.Sprintf("k%d-%d", k, i), Key: fmt.Sprintf("k%d", k),
				Headers: map[string]string{"index": fmt.Sprint(i)},
			})
		}
	}
	s.publish(t, b, topic, msgs...)
	select {
	case <-done:
	case <-time.After(s.h.Timeout):
		mu.Lock()
		t.Fatalf("handled %d of %d messages within %v", handled, keys*perKey, s.h.Timeout)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, f := range failures {
		t.Error(f)
	}
}

// testPublishAfterClose: after Close, Publish, Subscribe and Close return
// ErrClosed at once, and State is StateClosed.
func (s *suite) testPublishAfterClose(t *testing.T) {
	b := s.open(t)
	topic := s.h.NewTopic(t)
	if err := b.Close(s.ctx(t)); err != nil {
		t.Fatalf("close: %v", err)
	}
	start := time.Now()
	err := b.Publish(context.Background(), topic, msg("late"))
	if !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Publish after Close = %v, want ErrClosed", err)
	}
	_, err = b.Subscribe(context.Background(), topic, newCollector().handle)
	if !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Subscribe after Close = %v, want ErrClosed", err)
	}
	if err := b.Close(context.Background()); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("calls after Close took %v; they must return at once", d)
	}
	if st := b.State(); st != broker.StateClosed {
		t.Errorf("State after Close = %v, want closed", st)
	}
	if broker.IsRetryable(err) {
		t.Errorf("IsRetryable(ErrClosed) = true, want false")
	}
}

// testExpiredContext: a cancelled ctx fails Publish and Subscribe with the
// context's error, and the message is not delivered.
func (s *suite) testExpiredContext(t *testing.T) {
	b := s.open(t)
	topic := s.h.NewTopic(t)
	c := newCollector()
	s.subscribe(t, b, topic, c.handle)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Publish(ctx, topic, msg("cancelled")); !errors.Is(err, context.Canceled) {
		t.Errorf("Publish with cancelled ctx = %v, want context.Canceled", err)
	}
	if _, err := b.Subscribe(ctx, topic, c.handle); !errors.Is(err, context.Canceled) {
		t.Errorf("Subscribe with cancelled ctx = %v, want context.Canceled", err)
	}
	s.publish(t, b, topic, msg("marker"))
	if extra := s.takeUntil(t, c, "marker"); len(extra) > 0 {
		t.Errorf("delivered messages published with a cancelled ctx: %v", ids(extra))
	}
}

// testShortPublishContext: a large Publish under a short deadline, against
// a subscriber that holds everything up, returns by the deadline (nil or
// the deadline error), and the broker keeps working afterwards. What the
// contract promises about the messages of a call cut short: each one the
// call did not confirm may or may not be delivered (at-least-once; one
// that was written before the return can be routed after it, to any queue
// bound by then), and none is delivered twice because of the cut. So a new
// subscription may see some of them, each at most once, and the broker's
// next Publish is delivered.
func (s *suite) testShortPublishContext(t *testing.T) {
	b := s.open(t)
	topic := s.h.NewTopic(t)
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	s.subscribe(t, b, topic, func(ctx context.Context, d *broker.Delivery) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}, broker.Group(RandomName("stuck")))
	msgs := make([]*broker.Message, 3000)
	for i := range msgs {
		msgs[i] = &broker.Message{ID: fmt.Sprint(i), Body: make([]byte, 1024)}
	}
	const deadline = 50 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	err := b.Publish(ctx, topic, msgs...)
	elapsed := time.Since(start)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Publish under a %v deadline = %v, want nil or DeadlineExceeded", deadline, err)
	}
	if elapsed > deadline+3*time.Second {
		t.Errorf("Publish took %v under a %v deadline", elapsed, deadline)
	}
	releaseOnce.Do(func() { close(release) })

	c := newCollector()
	s.subscribe(t, b, topic, c.handle)
	s.publish(t, b, topic, msg("after"))
	got := s.takeUntil(t, c, "after")
	seen := make(map[string]bool, len(got))
	for _, m := range got {
		if seen[m.ID] {
			t.Errorf("message %q of the cut call delivered twice to one subscription", m.ID)
		}
		seen[m.ID] = true
	}
	if len(got) > 0 {
		t.Logf("%d message(s) of the cut call, written before it returned, reached the new subscription", len(got))
	}
}

// testShortSubscribeContext: a Subscribe under a deadline shorter than
// its set-up (a fresh topic and group: declarations, attaches) returns by
// the deadline with nil or the deadline error. A subscription it did
// return ends at once, its ctx being over; the broker keeps working.
func (s *suite) testShortSubscribeContext(t *testing.T) {
	b := s.open(t)
	topic := s.h.NewTopic(t)
	const deadline = time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	sub, err := b.Subscribe(ctx, topic, newCollector().handle, broker.Group(RandomName("short")))
	elapsed := time.Since(start)
	if elapsed > deadline+3*time.Second {
		t.Errorf("Subscribe took %v under a %v deadline", elapsed, deadline)
	}
	switch {
	case err != nil && !errors.Is(err, context.DeadlineExceeded):
		t.Errorf("Subscribe under a %v deadline = %v, want nil or DeadlineExceeded", deadline, err)
	case err == nil:
		select {
		case <-sub.Done():
		case <-time.After(s.h.Timeout):
			t.Fatalf("subscription still running %v after its ctx ended", s.h.Timeout)
		}
		if err := sub.Err(); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Err of a subscription whose ctx expired = %v, want DeadlineExceeded", err)
		}
	}
	c := newCollector()
	s.subscribe(t, b, topic, c.handle)
	s.publish(t, b, topic, msg("after"))
	s.take(t, c, 1)
}

// testSubscribeContextEnds: ending the Subscribe ctx ends the subscription:
// Done closes and Err reports the context's error.
func (s *suite) testSubscribeContextEnds(t *testing.T) {
	b := s.open(t)
	topic := s.h.NewTopic(t)
	c := newCollector()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := b.Subscribe(ctx, topic, c.handle)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	s.publish(t, b, topic, msg("before"))
	s.take(t, c, 1)
	cancel()
	select {
	case <-sub.Done():
	case <-time.After(s.h.Timeout):
		t.Fatalf("subscription still running %v after its ctx ended", s.h.Timeout)
	}
	if err := sub.Err(); !errors.Is(err, context.Canceled) {
		t.Errorf("Err after ctx cancel = %v, want context.Canceled", err)
	}
	// A second subscription keeps the topic routed (brokers may refuse
	// unroutable messages); the ended one must receive nothing.
	other := newCollector()
	s.subscribe(t, b, topic, other.handle, broker.Group(RandomName("other")))
	s.publish(t, b, topic, msg("after"))
	s.take(t, other, 1)
	select {
	case d := <-c.ch:
		t.Errorf("ended subscription delivered %q", d.ID)
	case <-time.After(200 * time.Millisecond):
	}
}

// testCloseWaitsForHandlers: Close with a generous ctx returns only after
// the running handler finished, and returns nil.
func (s *suite) testCloseWaitsForHandlers(t *testing.T) {
	b := s.open(t)
	topic := s.h.NewTopic(t)
	started := make(chan struct{})
	var finished atomic.Bool
	s.subscribe(t, b, topic, func(ctx context.Context, d *broker.Delivery) error {
		close(started)
		time.Sleep(300 * time.Millisecond)
		finished.Store(true)
		return nil
	})
	s.publish(t, b, topic, msg("slow"))
	select {
	case <-started:
	case <-time.After(s.h.Timeout):
		t.Fatal("handler not started")
	}
	if err := b.Close(s.ctx(t)); err != nil {
		t.Errorf("Close = %v, want nil", err)
	}
	if !finished.Load() {
		t.Errorf("Close returned before the running handler finished")
	}
}

// testCloseHonoursContext: a handler that never returns on its own cannot
// hold Close past its ctx; the handler's ctx is cancelled then.
func (s *suite) testCloseHonoursContext(t *testing.T) {
	b := s.open(t)
	topic := s.h.NewTopic(t)
	started := make(chan struct{})
	release := make(chan struct{})
	defer close(release)
	handlerCancelled := make(chan struct{})
	s.subscribe(t, b, topic, func(ctx context.Context, d *broker.Delivery) error {
		close(started)
		select {
		case <-ctx.Done():
			close(handlerCancelled)
		case <-release:
		}
		<-release // hung: ignores its ctx until the test ends
		return nil
	})
	s.publish(t, b, topic, msg("stuck"))
	select {
	case <-started:
	case <-time.After(s.h.Timeout):
		t.Fatal("handler not started")
	}
	const deadline = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	err := b.Close(ctx)
	elapsed := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close with a hung handler = %v, want an error wrapping DeadlineExceeded", err)
	}
	if elapsed > deadline+3*time.Second {
		t.Errorf("Close took %v with a %v ctx", elapsed, deadline)
	}
	select {
	case <-handlerCancelled:
	case <-time.After(s.h.Timeout):
		t.Errorf("handler ctx not cancelled after Close gave up")
	}
	if err := b.Publish(context.Background(), topic, msg("late")); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Publish after a timed-out Close = %v, want ErrClosed", err)
	}
}

// testSubscriptionCloseIsLocal: closing one subscription leaves the other
// on the same topic delivering; closing twice reports ErrClosed.
func (s *suite) testSubscriptionCloseIsLocal(t *testing.T) {
	b := s.open(t)
	topic := s.h.NewTopic(t)
	c1, c2 := newCollector(), newCollector()
	sub1 := s.subscribe(t, b, topic, c1.handle, broker.Group(RandomName("a")))
	s.subscribe(t, b, topic, c2.handle, broker.Group(RandomName("b")))
	s.publish(t, b, topic, msg("one"))
	s.take(t, c1, 1)
	s.take(t, c2, 1)
	if err := sub1.Close(s.ctx(t)); err != nil {
		t.Fatalf("close subscription: %v", err)
	}
	select {
	case <-sub1.Done():
	default:
		t.Errorf("Done not closed after Close returned")
	}
	if err := sub1.Err(); err != nil {
		t.Errorf("Err after Close = %v, want nil", err)
	}
	if err := sub1.Close(s.ctx(t)); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("second subscription Close = %v, want ErrClosed", err)
	}
	s.publish(t, b, topic, msg("two"))
	if got := s.take(t, c2, 1)[0]; got.ID != "two" {
		t.Errorf("remaining subscription got %q, want two", got.ID)
	}
	select {
	case d := <-c1.ch:
		t.Errorf("closed subscription delivered %q", d.ID)
	case <-time.After(200 * time.Millisecond):
	}
}

// testBadInput: empty topic, nil message, nil handler and bad options get
// errors that name them, and nothing of a rejected call is delivered.
func (s *suite) testBadInput(t *testing.T) {
	b := s.open(t)
	ctx := s.ctx(t)
	topic := s.h.NewTopic(t)
	c := newCollector()
	s.subscribe(t, b, topic, c.handle)
	check := func(what string, err, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Errorf("%s = %v, want %v", what, err, want)
		} else if broker.IsRetryable(err) {
			t.Errorf("%s: IsRetryable = true for bad input", what)
		}
	}
	check("Publish to empty topic", b.Publish(ctx, "", msg("x")), broker.ErrTopicRequired)
	check("Publish nil message", b.Publish(ctx, topic, msg("ok-but-rejected"), nil), broker.ErrNilMessage)
	_, err := b.Subscribe(ctx, "", c.handle)
	check("Subscribe to empty topic", err, broker.ErrTopicRequired)
	_, err = b.Subscribe(ctx, topic, nil)
	check("Subscribe with nil handler", err, broker.ErrNilHandler)
	_, err = b.Subscribe(ctx, topic, c.handle, broker.Concurrency(0))
	check("Subscribe with Concurrency(0)", err, broker.ErrInvalidOption)
	_, err = b.Subscribe(ctx, topic, c.handle, broker.WithDriverOption(struct{ unknown int }{}))
	check("Subscribe with an unknown driver option", err, broker.ErrInvalidOption)
	s.publish(t, b, topic, msg("marker"))
	if extra := s.takeUntil(t, c, "marker"); len(extra) > 0 {
		t.Errorf("messages of rejected calls were delivered: %v", ids(extra))
	}
}

// testOversizeMessage: a message over Capabilities.MaxMessageSize is
// refused with ErrMessageTooLarge before anything of the call is sent.
func (s *suite) testOversizeMessage(t *testing.T) {
	b := s.open(t)
	limit := b.Capabilities().MaxMessageSize
	if limit <= 0 {
		t.Skip("broker states no message size limit")
	}
	topic := s.h.NewTopic(t)
	c := newCollector()
	s.subscribe(t, b, topic, c.handle)
	big := &broker.Message{ID: "big", Body: make([]byte, limit+1)}
	err := b.Publish(s.ctx(t), topic, msg("small-first"), big)
	if !errors.Is(err, broker.ErrMessageTooLarge) {
		t.Fatalf("Publish of %d bytes (limit %d) = %v, want ErrMessageTooLarge", limit+1, limit, err)
	}
	if broker.IsRetryable(err) {
		t.Errorf("IsRetryable(ErrMessageTooLarge) = true")
	}
	s.publish(t, b, topic, msg("marker"))
	if extra := s.takeUntil(t, c, "marker"); len(extra) > 0 {
		t.Errorf("messages of the refused call were delivered: %v", ids(extra))
	}
}

// testConcurrent: 8 publishers and 3 groups of 4 concurrent handlers; every
// group gets every message (run it under -race).
func (s *suite) testConcurrent(t *testing.T) {
	b := s.open(t)
	topic := s.h.NewTopic(t)
	const publishers, perPublisher, groups = 8, 50, 3
	cs := make([]*collector, groups)
	for i := range cs {
		cs[i] = newCollector()
		s.subscribe(t, b, topic, cs[i].handle, broker.Group(RandomName("g")), broker.Concurrency(4))
	}
	ctx := s.ctx(t)
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for p := range publishers {
		wg.Go(func() {
			for i := range perPublisher {
				m := &broker.Message{ID: fmt.Sprintf("p%d-%d", p, i), Key: fmt.Sprintf("p%d", p),
					Headers: map[string]string{"publisher": fmt.Sprint(p)}}
				if err := b.Publish(ctx, topic, m); err != nil {
					errs <- fmt.Errorf("publisher %d message %d: %w", p, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for g, c := range cs {
		got := countIDs(s.take(t, c, publishers*perPublisher))
		if len(got) != publishers*perPublisher {
			t.Errorf("group %d got %d distinct messages, want %d", g, len(got), publishers*perPublisher)
		}
	}
}

// testStateWatch: an open broker reports StateConnected, and a watcher sees
// the move to StateClosed, after which its channel is closed.
func (s *suite) testStateWatch(t *testing.T) {
	b := s.open(t)
	if st := b.State(); st != broker.StateConnected {
		t.Errorf("State of an open broker = %v, want connected", st)
	}
	ch := b.WatchState(context.Background())
	if err := b.Close(s.ctx(t)); err != nil {
		t.Fatalf("close: %v", err)
	}
	var last broker.StateChange
	timeout := time.After(s.h.Timeout)
	for open := true; open; {
		select {
		case c, ok := <-ch:
			if ok {
				last = c
			}
			open = ok
		case <-timeout:
			t.Fatal("watch channel not closed after Close")
		}
	}
	if last.To != broker.StateClosed {
		t.Errorf("last watched change = %+v, want a move to closed", last)
	}
	if closed := b.WatchState(context.Background()); !isClosedChan(closed) {
		t.Errorf("WatchState after Close returned an open channel")
	}
}

func isClosedChan(ch <-chan broker.StateChange) bool {
	select {
	case _, ok := <-ch:
		return !ok
	case <-time.After(time.Second):
		return false
	}
}
