// Package brokertest is the conformance suite every broker.Broker passes.
//
// An adapter runs it from a test with a Harness that opens fresh instances
// against a real server:
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, brokertest.Harness{
//			Open: func(ctx context.Context) (broker.Broker, error) { return mybroker.Open(ctx, url) },
//		})
//	}
//
// The suite reads the Broker's Capabilities and skips, with the reason,
// only the checks of guarantees the broker says it does not give. Its
// Isolation group holds isolation's promise — the FastStream loop (opening
// and closing one instance over and over never hangs another's publish),
// closing one instance while another publishes, a stuck instance closing
// by its Close ctx, a subscription's end staying local, refused
// credentials staying local, a severed instance recovering without
// disturbing another, and no goroutine left — so any adapter, ours or a
// user's, inherits it by calling Run.
//
// Two of those scenarios need a fault the Broker interface cannot ask for,
// so the Harness has optional hooks for them; an adapter with a server
// should provide both:
//
//   - OpenBadCredentials (scenario BadCredentialsAreLocal): open an
//     instance whose credentials the server refuses.
//   - Sever (scenario SeveredInstanceIsLocal): cut one instance's
//     connections from outside, e.g. through a per-instance TCP proxy.
//
// A nil hook skips its scenario, naming the hook.
package brokertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/isobroker/broker"
)

// Harness tells the suite how to reach the broker under test.
type Harness struct {
	// Open returns a new, independent Broker instance. Required.
	Open func(ctx context.Context) (broker.Broker, error)
	// NewTopic returns a topic name no other test uses, creating it on the
	// server if the broker needs topics to exist (Event Hubs). Default: a
	// random name.
	NewTopic func(t testing.TB) string
	// EnsureTopic makes sure a topic the suite did not get from NewTopic
	// exists (a default dead-letter topic, DeadLetterTopic of a NewTopic
	// name), for brokers whose topics must exist; nil for the others.
	EnsureTopic func(t testing.TB, name string)
	// Timeout bounds each wait for deliveries (default 20 s). Keep it
	// generous: the suite runs on slow shared machines.
	Timeout time.Duration
	// IgnoreGoroutines are goroutines the isolation scenarios' leak check
	// tolerates after everything is closed: ones a client library ends
	// asynchronously, on its own schedule, and that the adapter cannot
	// wait for. Goroutines running before a scenario are always ignored.
	IgnoreGoroutines []goleak.Option

	// The optional hooks below let the Isolation group inject faults an
	// adapter cannot be asked for through broker.Broker. Each one that is
	// nil skips its scenario with t.Skip, naming the hook: honest for a
	// broker without a server or credentials (mem), and a visible gap for
	// any other.

	// OpenBadCredentials opens an instance of the same server Open uses,
	// with credentials the server refuses (a wrong password or key). It
	// must return an error wrapping broker.ErrUnauthorized, for which
	// broker.IsRetryable is false, and return it promptly: within 10 s,
	// room for a server's own delay (RabbitMQ holds a refused login for
	// 3 s), although ctx allows 30 s, so that an adapter that retries
	// refused credentials until ctx ends fails. An adapter that checks
	// credentials only on first use may instead return a Broker whose
	// first Publish and Subscribe each fail that way, within the same
	// bound; the suite then closes it. Never a working instance. Scenario
	// BadCredentialsAreLocal calls it 20 times, 10 at a time (it must be
	// safe for concurrent use), while another instance publishes and
	// consumes.
	OpenBadCredentials func(ctx context.Context) (broker.Broker, error)

	// Sever cuts every connection of b, an instance Open returned, from
	// outside — as a network fault, or the server closing them, would —
	// and returns once they are cut. It must not touch any other
	// instance's connections, and must let b connect again at once: the
	// suite expects b to notice the loss (its State leaves
	// StateConnected) and recover by itself. Typically Open dials each
	// instance through its own TCP proxy and Sever closes that proxy's
	// connections (internal/tcpproxy does this for this module's
	// adapters). It is called on the test's goroutine and reports its own
	// failures through t. Scenario SeveredInstanceIsLocal uses it.
	Sever func(t testing.TB, b broker.Broker)

	// OpenTelemetry opens an instance as Open does, with telemetry t
	// turned on. Nil skips the Telemetry group, naming this hook.
	OpenTelemetry func(ctx context.Context, t broker.Telemetry) (broker.Broker, error)
	// System is the messaging.system the adapter's spans must carry
	// ("rabbitmq", "eventhubs"); required with OpenTelemetry.
	System string
}

func (h Harness) withDefaults() Harness {
	if h.NewTopic == nil {
		h.NewTopic = func(t testing.TB) string { return RandomName("topic") }
	}
	if h.Timeout <= 0 {
		h.Timeout = 20 * time.Second
	}
	return h
}

// RandomName returns prefix followed by a random suffix, for topics and
// groups that must not collide across tests or runs.
func RandomName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// Run runs the whole suite as subtests of t.
func Run(t *testing.T, h Harness) {
	if h.Open == nil {
		t.Fatal("brokertest: Harness.Open is required")
	}
	s := &suite{h: h.withDefaults()}
	tests := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"RoundTrip", s.testRoundTrip},
		{"EmptyBodyAndManyHeaders", s.testEmptyBodyAndManyHeaders},
		{"GroupsFanOut", s.testGroupsFanOut},
		{"GroupsCompete", s.testGroupsCompete},
		{"AckedNotRedelivered", s.testAckedNotRedelivered},
		{"NackRedelivers", s.testNackRedelivers},
		{"CloseWhileRedelivering", s.testCloseWhileRedelivering},
		{"PerKeyOrdering", s.testPerKeyOrdering},
		{"PublishAfterClose", s.testPublishAfterClose},
		{"ExpiredContext", s.testExpiredContext},
		{"ShortPublishContext", s.testShortPublishContext},
		{"ShortSubscribeContext", s.testShortSubscribeContext},
		{"SubscribeContextEnds", s.testSubscribeContextEnds},
		{"CloseWaitsForHandlers", s.testCloseWaitsForHandlers},
		{"CloseHonoursContext", s.testCloseHonoursContext},
		{"SubscriptionCloseIsLocal", s.testSubscriptionCloseIsLocal},
		{"BadInput", s.testBadInput},
		{"OversizeMessage", s.testOversizeMessage},
		{"ConcurrentPublishersAndSubscribers", s.testConcurrent},
		{"StateWatch", s.testStateWatch},
		{"PoisonOptionsRefused", s.testPoisonOptionsRefused},
		{"MaxDeliveriesDeadLetters", s.testMaxDeliveriesDeadLetters},
		{"DefaultDeadLetter", s.testDefaultDeadLetter},
		{"RedeliveryDelay", s.testRedeliveryDelay},
		{"Isolation", s.testIsolation},
		{"Telemetry", s.testTelemetry},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.fn)
	}
}

// RunSettlement runs only the checks of what becomes of a delivered
// message — acked, nacked and redelivered, closed while redelivering,
// bounded deliveries, dead-lettering, redelivery delays — as subtests of
// t. It is for a second configuration of an adapter whose whole suite
// Run checks already: another queue type, say.
func RunSettlement(t *testing.T, h Harness) {
	if h.Open == nil {
		t.Fatal("brokertest: Harness.Open is required")
	}
	s := &suite{h: h.withDefaults()}
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"RoundTrip", s.testRoundTrip},
		{"GroupsCompete", s.testGroupsCompete},
		{"AckedNotRedelivered", s.testAckedNotRedelivered},
		{"NackRedelivers", s.testNackRedelivers},
		{"CloseWhileRedelivering", s.testCloseWhileRedelivering},
		{"PoisonOptionsRefused", s.testPoisonOptionsRefused},
		{"MaxDeliveriesDeadLetters", s.testMaxDeliveriesDeadLetters},
		{"DefaultDeadLetter", s.testDefaultDeadLetter},
		{"RedeliveryDelay", s.testRedeliveryDelay},
	} {
		t.Run(tc.name, tc.fn)
	}
}

type suite struct{ h Harness }

// open returns a Broker closed at the end of the test.
func (s *suite) open(t *testing.T) broker.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.h.Timeout)
	defer cancel()
	b, err := s.h.Open(ctx)
	if err != nil {
		t.Fatalf("open broker: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.h.Timeout)
		defer cancel()
		_ = b.Close(ctx) // tests that close it themselves get ErrClosed here
	})
	return b
}

func (s *suite) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), s.h.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// subscribe subscribes and closes the subscription at the end of the test.
func (s *suite) subscribe(t *testing.T, b broker.Broker, topic string, h broker.Handler, opts ...broker.SubscribeOption) broker.Subscription {
	t.Helper()
	sub, err := b.Subscribe(s.ctx(t), topic, h, opts...)
	if err != nil {
		t.Fatalf("subscribe to %q: %v", topic, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.h.Timeout)
		defer cancel()
		_ = sub.Close(ctx)
	})
	return sub
}

func (s *suite) publish(t *testing.T, b broker.Broker, topic string, msgs ...*broker.Message) {
	t.Helper()
	if err := b.Publish(s.ctx(t), topic, msgs...); err != nil {
		t.Fatalf("publish %d message(s) to %q: %v", len(msgs), topic, err)
	}
}

// collector gathers deliveries on a channel.
type collector struct{ ch chan *broker.Delivery }

func newCollector() *collector { return &collector{ch: make(chan *broker.Delivery, 100000)} }

func (c *collector) handle(ctx context.Context, d *broker.Delivery) error {
	select {
	case c.ch <- d:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// take waits for n deliveries.
func (s *suite) take(t *testing.T, c *collector, n int) []*broker.Delivery {
	t.Helper()
	out := make([]*broker.Delivery, 0, n)
	timer := time.NewTimer(s.h.Timeout)
	defer timer.Stop()
	for len(out) < n {
		select {
		case d := <-c.ch:
			out = append(out, d)
		case <-timer.C:
			t.Fatalf("got %d of %d deliveries within %v", len(out), n, s.h.Timeout)
		}
	}
	return out
}

// takeUntil collects deliveries until one with ID marker arrives, and
// returns those before it.
func (s *suite) takeUntil(t *testing.T, c *collector, marker string) []*broker.Delivery {
	t.Helper()
	var out []*broker.Delivery
	timer := time.NewTimer(s.h.Timeout)
	defer timer.Stop()
	for {
		select {
		case d := <-c.ch:
			if d.ID == marker {
				return out
			}
			out = append(out, d)
		case <-timer.C:
			t.Fatalf("marker %q not delivered within %v (%d other deliveries)", marker, s.h.Timeout, len(out))
		}
	}
}

func msg(id string) *broker.Message {
	return &broker.Message{ID: id, Body: []byte("body of " + id)}
}

func ids(ds []*broker.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

// countIDs counts deliveries per ID.
func countIDs(ds []*broker.Delivery) map[string]int {
	m := make(map[string]int, len(ds))
	for _, d := range ds {
		m[d.ID]++
	}
	return m
}

func describe(m map[string]int) string {
	var parts []string
	for id, n := range m {
		if n != 1 {
			parts = append(parts, fmt.Sprintf("%s×%d", id, n))
		}
	}
	return strings.Join(parts, ", ")
}
