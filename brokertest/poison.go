package brokertest

// The poison-message checks: bounded deliveries, dead-lettering and
// redelivery delays, for adapters whose Capabilities claim them; the
// others must refuse the options.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobroker/broker"
)

// failures records, per message ID, when each delivery reached a handler
// that failed it.
type failures struct {
	mu sync.Mutex
	at map[string][]time.Time
	dc map[string][]int // Metadata.DeliveryCount of each delivery
}

func newFailures() *failures {
	return &failures{at: make(map[string][]time.Time), dc: make(map[string][]int)}
}

func (f *failures) note(d *broker.Delivery) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.at[d.ID] = append(f.at[d.ID], time.Now())
	f.dc[d.ID] = append(f.dc[d.ID], d.Metadata.DeliveryCount)
}

func (f *failures) times(id string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.at[id]...)
}

// deadLetterReader is how the checks subscribe to a dead-letter topic:
// in broker.DeadLetterGroup, from the earliest message where the broker
// keeps history (Capabilities.Replay; on such a broker — Event Hubs — a
// reader starting at the latest message would miss a copy published
// before it attached), as an operator reading it would.
func deadLetterReader(b broker.Broker) []broker.SubscribeOption {
	opts := []broker.SubscribeOption{broker.Group(broker.DeadLetterGroup)}
	if b.Capabilities().Replay {
		opts = append(opts, broker.StartAt(broker.Earliest()))
	}
	return opts
}

// testPoisonOptionsRefused: an adapter that does not claim DeadLetter or
// RedeliveryDelay refuses the options with ErrUnsupported instead of
// ignoring them.
func (s *suite) testPoisonOptionsRefused(t *testing.T) {
	b := s.open(t)
	caps := b.Capabilities()
	if caps.DeadLetter && caps.RedeliveryDelay {
		t.Skip("broker claims DeadLetter and RedeliveryDelay: the checks below apply")
	}
	topic := s.h.NewTopic(t)
	h := func(context.Context, *broker.Delivery) error { return nil }
	var opts []broker.SubscribeOption
	if !caps.DeadLetter {
		opts = append(opts, broker.MaxDeliveries(3), broker.DeadLetterTo(topic+"-dlt"), broker.UnlimitedDeliveries())
	}
	if !caps.RedeliveryDelay {
		opts = append(opts, broker.RedeliveryDelay(time.Second))
	}
	for _, o := range opts {
		sub, err := b.Subscribe(s.ctx(t), topic, h, o, broker.Group(RandomName("g")))
		if err == nil {
			_ = sub.Close(s.ctx(t))
			t.Errorf("Subscribe with an option the Capabilities disclaim succeeded")
		} else if !errors.Is(err, broker.ErrUnsupported) {
			t.Errorf("Subscribe with an option the Capabilities disclaim = %v, want ErrUnsupported", err)
		}
	}
}

// testMaxDeliveriesDeadLetters: a message that always fails is delivered
// exactly MaxDeliveries times and then published, unchanged but for four
// headers, to the dead-letter topic; the other messages flow meanwhile.
func (s *suite) testMaxDeliveriesDeadLetters(t *testing.T) {
	b := s.open(t)
	if !b.Capabilities().DeadLetter {
		t.Skip("broker does not dead-letter (Capabilities.DeadLetter is false)")
	}
	topic, dlt := s.h.NewTopic(t), s.h.NewTopic(t)
	dead := newCollector()
	s.subscribe(t, b, dlt, dead.handle, deadLetterReader(b)...)
	const limit = 3
	group := RandomName("g")
	fails := newFailures()
	good := newCollector()
	secret := "amqp://user:s3cr3t-pw@host/" // a handler error quoting a URL
	s.subscribe(t, b, topic, func(ctx context.Context, d *broker.Delivery) error {
		if d.ID == "poison" {
			fails.note(d)
			return fmt.Errorf("cannot parse order from %s: %s", secret, strings.Repeat("x", 2*broker.MaxLastErrorBytes))
		}
		return good.handle(ctx, d)
	}, broker.Group(group), broker.MaxDeliveries(limit), broker.DeadLetterTo(dlt))

	poison := &broker.Message{ID: "poison", Key: "k-poison", Body: []byte("bad body"),
		Headers: map[string]string{"tenant": "t1"}, ContentType: "application/x-test"}
	s.publish(t, b, topic, poison)
	for i := range 20 {
		s.publish(t, b, topic, msg(fmt.Sprintf("good-%d", i)))
	}
	if got := s.take(t, good, 20); len(got) != 20 {
		t.Fatalf("good messages: %d of 20", len(got))
	}
	d := s.take(t, dead, 1)[0]
	if n := len(fails.times("poison")); n != limit {
		t.Errorf("poison message delivered %d times before dead-lettering, want MaxDeliveries = %d", n, limit)
	}
	if d.ID != poison.ID || d.Key != poison.Key || !bytes.Equal(d.Body, poison.Body) || d.ContentType != poison.ContentType ||
		d.Headers["tenant"] != "t1" {
		t.Errorf("dead-lettered {ID %q Key %q Body %q ContentType %q Headers %v}, published %+v", d.ID, d.Key, d.Body, d.ContentType, d.Headers, poison)
	}
	for k, want := range map[string]string{
		broker.HeaderOriginalTopic: topic,
		broker.HeaderOriginalGroup: group,
		broker.HeaderDeliveryCount: strconv.Itoa(limit),
	} {
		if got := d.Headers[k]; got != want {
			t.Errorf("dead-letter header %s = %q, want %q", k, got, want)
		}
	}
	last := d.Headers[broker.HeaderLastError]
	switch {
	case !strings.Contains(last, "cannot parse order"):
		t.Errorf("dead-letter header %s = %.80q…, want the handler's error", broker.HeaderLastError, last)
	case strings.Contains(last, "s3cr3t-pw"):
		t.Errorf("dead-letter header %s shows the password of a URL in the handler's error: %.80q", broker.HeaderLastError, last)
	case len(last) > broker.MaxLastErrorBytes:
		t.Errorf("dead-letter header %s is %d bytes, want at most %d", broker.HeaderLastError, len(last), broker.MaxLastErrorBytes)
	}
	// Dead-lettered means gone from the subscription: never delivered again.
	s.publish(t, b, topic, msg("marker"))
	s.takeUntil(t, good, "marker")
	if n := len(fails.times("poison")); n != limit {
		t.Errorf("poison message delivered %d times after it was dead-lettered, want %d", n, limit)
	}
}

// testDefaultDeadLetter: a subscriber that sets nothing is protected:
// after DefaultMaxDeliveries failed deliveries the message goes to
// DeadLetterTopic(topic), where broker.DeadLetterGroup keeps it even
// though nobody subscribed there before.
func (s *suite) testDefaultDeadLetter(t *testing.T) {
	b := s.open(t)
	if !b.Capabilities().DeadLetter {
		t.Skip("broker does not dead-letter (Capabilities.DeadLetter is false)")
	}
	topic := s.h.NewTopic(t)
	dlt := broker.DeadLetterTopic(topic)
	if s.h.EnsureTopic != nil {
		s.h.EnsureTopic(t, dlt)
	}
	fails := newFailures()
	s.subscribe(t, b, topic, func(_ context.Context, d *broker.Delivery) error {
		fails.note(d)
		return errors.New("always failing")
	}, broker.Group(RandomName("g")))
	s.publish(t, b, topic, msg("poison"))
	deadline := time.Now().Add(s.h.Timeout)
	for len(fails.times("poison")) < broker.DefaultMaxDeliveries && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	dead := newCollector()
	s.subscribe(t, b, dlt, dead.handle, deadLetterReader(b)...)
	d := s.take(t, dead, 1)[0]
	if d.ID != "poison" || d.Headers[broker.HeaderDeliveryCount] != strconv.Itoa(broker.DefaultMaxDeliveries) {
		t.Errorf("dead-lettered %q with %s = %q, want poison after %d", d.ID, broker.HeaderDeliveryCount,
			d.Headers[broker.HeaderDeliveryCount], broker.DefaultMaxDeliveries)
	}
	if n := len(fails.times("poison")); n != broker.DefaultMaxDeliveries {
		t.Errorf("delivered %d times, want DefaultMaxDeliveries = %d", n, broker.DefaultMaxDeliveries)
	}
}

// testRedeliveryDelay: a failed message comes back no sooner than the
// delay, and is held meanwhile while the other messages flow where the
// broker allows: messages published after the failure under other keys —
// on a broker whose order is per partition (Event Hubs retries in place,
// holding the failing message's partition only), at least those on other
// partitions, so several keys are used — are handled before it comes
// back.
func (s *suite) testRedeliveryDelay(t *testing.T) {
	b := s.open(t)
	if !b.Capabilities().RedeliveryDelay {
		t.Skip("broker does not delay redeliveries (Capabilities.RedeliveryDelay is false)")
	}
	const delay = 400 * time.Millisecond
	const others = 16
	topic := s.h.NewTopic(t)
	fails := newFailures()
	flowed := newFailures() // when the other messages were handled
	c := newCollector()
	s.subscribe(t, b, topic, func(ctx context.Context, d *broker.Delivery) error {
		if d.ID == "slow" && d.Metadata.DeliveryCount < 2 {
			fails.note(d)
			return errors.New("not yet")
		}
		if d.ID != "slow" {
			flowed.note(d)
		}
		return c.handle(ctx, d)
	}, broker.Group(RandomName("g")), broker.RedeliveryDelay(delay))
	s.publish(t, b, topic, &broker.Message{ID: "slow", Key: "a", Body: []byte("slow")})
	deadline := time.Now().Add(s.h.Timeout)
	for len(fails.times("slow")) < 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	var msgs []*broker.Message
	for i := range others {
		id := fmt.Sprintf("other-%d", i)
		msgs = append(msgs, &broker.Message{ID: id, Key: "b-" + strconv.Itoa(i), Body: []byte(id)})
	}
	s.publish(t, b, topic, msgs...)
	before := s.takeUntil(t, c, "slow") // handled before slow succeeded
	at := fails.times("slow")
	if len(at) != 2 {
		t.Fatalf("slow failed %d times, want 2", len(at))
	}
	// Lower bounds only: they hold on any machine.
	if gap := at[1].Sub(at[0]); gap < delay {
		t.Errorf("second delivery %v after the first failure, want at least %v", gap, delay)
	}
	held := 0 // others handled while slow waited for its second delivery
	for _, m := range msgs {
		if ts := flowed.times(m.ID); len(ts) > 0 && ts[0].Before(at[1]) {
			held++
		}
	}
	if held == 0 {
		t.Errorf("none of %d messages under other keys was handled while slow was held for its redelivery delay: the delay held up the subscription", others)
	}
	if rest := others - len(before); rest > 0 {
		s.take(t, c, rest) // those held behind slow (its partition) still come
	}
}
