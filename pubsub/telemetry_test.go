package pubsub_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/trace"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
	"github.com/isobroker/broker/internal/oteltest"
	"github.com/isobroker/broker/mem"
	"github.com/isobroker/broker/pubsub"
)

const traceWait = 10 * time.Second

// tracedPair returns a Publisher and Subscriber (group "g") over a mem
// broker opened with tel, both with opts; everything closes with the test.
func tracedPair(t *testing.T, tel broker.Telemetry, opts ...pubsub.Option) (*pubsub.Publisher, *pubsub.Subscriber) {
	t.Helper()
	b, err := mem.New(mem.WithTelemetry(tel))
	if err != nil {
		t.Fatal(err)
	}
	opts = append(opts, pubsub.CloseBroker())
	pub, err := pubsub.NewPublisher(b, opts...)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := pubsub.NewSubscriber(b, "g", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sub.Close()
		_ = pub.Close()
	})
	return pub, sub
}

// receiveTraced subscribes to topic and returns a function that takes the next
// message, acks it and returns its context's span context.
func receiveTraced(t *testing.T, sub *pubsub.Subscriber, topic string) func() (*message.Message, trace.SpanContext) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	return func() (*message.Message, trace.SpanContext) {
		t.Helper()
		select {
		case m := <-ch:
			sc := trace.SpanContextFromContext(m.Context())
			m.Ack()
			return m, sc
		case <-time.After(traceWait):
			t.Fatal("no message")
			return nil, trace.SpanContext{}
		}
	}
}

// publishTwoTraces publishes, in one call, messages w-1 and w-2 whose
// contexts carry spans of two traces, and returns those spans and the
// span context each consumer's message had.
func publishTwoTraces(t *testing.T, rec *oteltest.Recorder, pub *pubsub.Publisher, sub *pubsub.Subscriber) (s1, s2 trace.Span, got map[string]trace.SpanContext) {
	t.Helper()
	next := receiveTraced(t, sub, "orders")
	ctx1, s1 := rec.Tracer.Tracer("test").Start(context.Background(), "first")
	ctx2, s2 := rec.Tracer.Tracer("test").Start(context.Background(), "second")
	m1, m2 := message.NewMessage("w-1", nil), message.NewMessage("w-2", nil)
	m1.SetContext(ctx1)
	m2.SetContext(ctx2)
	if err := pub.Publish("orders", m1, m2); err != nil {
		t.Fatal(err)
	}
	s1.End()
	s2.End()
	got = map[string]trace.SpanContext{}
	for range 2 {
		m, sc := next()
		got[m.UUID] = sc
	}
	return s1, s2, got
}

// A Watermill message's context span is the parent of the broker's send
// span, and the consumer's Watermill message carries the process span.
func TestTelemetryThroughInstrumentedBroker(t *testing.T) {
	rec := oteltest.New(t)
	pub, sub := tracedPair(t, rec.Telemetry())
	next := receiveTraced(t, sub, "orders")
	ctx, user := rec.Tracer.Tracer("test").Start(context.Background(), "incoming")
	m := message.NewMessage("w-1", []byte("x"))
	m.SetContext(ctx)
	if err := pub.Publish("orders", m); err != nil {
		t.Fatal(err)
	}
	user.End()
	_, got := next()
	send := rec.WaitSpan(t, traceWait, "send orders")
	proc := rec.WaitSpan(t, traceWait, "process orders")
	if send.Parent.SpanID() != user.SpanContext().SpanID() {
		t.Errorf("send span's parent %s, want the Watermill message's span %s", send.Parent.SpanID(), user.SpanContext().SpanID())
	}
	if got.SpanID() != proc.SpanContext.SpanID() || got.TraceID() != user.SpanContext().TraceID() {
		t.Errorf("consumer message's context span %s in trace %s, want the process span %s in %s",
			got.SpanID(), got.TraceID(), proc.SpanContext.SpanID(), user.SpanContext().TraceID())
	}
}

// With WithTelemetry, a broker opened without telemetry still carries the
// producer's context to the consumer's Watermill message.
func TestTelemetryPropagatesOverUninstrumentedBroker(t *testing.T) {
	rec := oteltest.New(t)
	pub, sub := tracedPair(t, broker.Telemetry{}, pubsub.WithTelemetry(rec.Telemetry()))
	s1, s2, got := publishTwoTraces(t, rec, pub, sub)
	if sc := got["w-2"]; sc.TraceID() != s2.SpanContext().TraceID() || sc.SpanID() != s2.SpanContext().SpanID() {
		t.Errorf("second message's consumer context %s/%s, want its producer's %s/%s",
			sc.TraceID(), sc.SpanID(), s2.SpanContext().TraceID(), s2.SpanContext().SpanID())
	}
	if sc := got["w-1"]; sc.TraceID() != s1.SpanContext().TraceID() || sc.SpanID() != s1.SpanContext().SpanID() {
		t.Errorf("first message's consumer context %s/%s, want its producer's %s/%s",
			sc.TraceID(), sc.SpanID(), s1.SpanContext().TraceID(), s1.SpanContext().SpanID())
	}
	if n := len(rec.Spans()); n != 2 {
		t.Errorf("%d spans ended, want only the test's own 2: the uninstrumented broker made spans%s", n, oteltest.Describe(rec.Spans()))
	}
}

// In one Publish of messages from two traces on an instrumented broker,
// each consumer continues its own message's trace.
func TestTelemetryBatchOfTwoTraces(t *testing.T) {
	rec := oteltest.New(t)
	pub, sub := tracedPair(t, rec.Telemetry(), pubsub.WithTelemetry(rec.Telemetry()))
	s1, s2, got := publishTwoTraces(t, rec, pub, sub)
	if got["w-1"].TraceID() != s1.SpanContext().TraceID() || got["w-2"].TraceID() != s2.SpanContext().TraceID() {
		t.Errorf("consumer traces w-1 %s w-2 %s, want %s and %s", got["w-1"].TraceID(), got["w-2"].TraceID(),
			s1.SpanContext().TraceID(), s2.SpanContext().TraceID())
	}
	send := rec.WaitSpan(t, traceWait, "send orders")
	linked := false
	for _, l := range send.Links {
		linked = linked || l.SpanContext.SpanID() == s2.SpanContext().SpanID()
	}
	if !linked {
		t.Errorf("send span does not link to the second message's context (links %v)", send.Links)
	}
}

// A malformed traceparent in Watermill metadata is delivered as it was,
// and the consumer's message has no span context, never an error.
func TestTelemetryMalformedMetadataIgnored(t *testing.T) {
	rec := oteltest.New(t)
	pub, sub := tracedPair(t, broker.Telemetry{}, pubsub.WithTelemetry(rec.Telemetry()))
	next := receiveTraced(t, sub, "orders")
	m := message.NewMessage("bad", nil)
	m.Metadata.Set(driver.HeaderTraceParent, "00-xyz-not-valid")
	if err := pub.Publish("orders", m); err != nil {
		t.Fatal(err)
	}
	got, sc := next()
	if sc.IsValid() {
		t.Errorf("malformed traceparent gave a span context %s", sc.TraceID())
	}
	if v := got.Metadata.Get(driver.HeaderTraceParent); v != "00-xyz-not-valid" {
		t.Errorf("traceparent metadata delivered as %q", v)
	}
}
