package brokertest

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
	"github.com/isobroker/broker/internal/oteltest"
)

// testTelemetry checks the OpenTelemetry instrumentation every adapter
// shares, with the SDK's in-memory exporters: span names, kinds,
// attributes, parents and links of send, process and settle; the trace
// context carried in the message; malformed or preset trace headers;
// the messaging metrics; recoveries as events; and nothing at all
// without Telemetry.
func (s *suite) testTelemetry(t *testing.T) {
	if s.h.OpenTelemetry == nil {
		t.Skip("Harness.OpenTelemetry is nil: no way to open an instrumented instance")
	}
	if s.h.System == "" {
		t.Fatal("brokertest: Harness.System is required with OpenTelemetry")
	}
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"SendSpan", s.testSendSpan},
		{"BatchSendSpan", s.testBatchSendSpan},
		{"ProcessSpanContinuesTrace", s.testProcessSpan},
		{"HandlerErrorRecorded", s.testHandlerErrorRecorded},
		{"MalformedTraceHeadersIgnored", s.testMalformedTraceHeaders},
		{"ProducerContextRespected", s.testProducerContextRespected},
		{"Metrics", s.testMetrics},
		{"RecoveryEvents", s.testRecoveryEvents},
		{"OffWithoutTelemetry", s.testOffWithoutTelemetry},
	} {
		t.Run(tc.name, tc.fn)
	}
}

// openTraced opens an instrumented instance recording into a new
// Recorder; both end with the test.
func (s *suite) openTraced(t *testing.T) (broker.Broker, *oteltest.Recorder) {
	t.Helper()
	rec := oteltest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), s.h.Timeout)
	defer cancel()
	b, err := s.h.OpenTelemetry(ctx, rec.Telemetry())
	if err != nil {
		t.Fatalf("open broker with telemetry: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.h.Timeout)
		defer cancel()
		_ = b.Close(ctx)
	})
	return b, rec
}

// wantAttrs fails the test for every key of want the span lacks or holds
// with another value.
func wantAttrs(t *testing.T, sp tracetest.SpanStub, want map[string]string) {
	t.Helper()
	for k, v := range want {
		got, ok := oteltest.Attr(sp, k)
		if !ok {
			t.Errorf("span %q has no attribute %s (want %q)", sp.Name, k, v)
		} else if got != v {
			t.Errorf("span %q: %s = %q, want %q", sp.Name, k, got, v)
		}
	}
}

func linksTo(sp tracetest.SpanStub, sc trace.SpanContext) bool {
	for _, l := range sp.Links {
		if l.SpanContext.TraceID() == sc.TraceID() && l.SpanContext.SpanID() == sc.SpanID() {
			return true
		}
	}
	return false
}

// testSendSpan: a Publish is a PRODUCER span "send {topic}", child of the
// caller's span, with the conventions' attributes.
func (s *suite) testSendSpan(t *testing.T) {
	b, rec := s.openTraced(t)
	topic := s.h.NewTopic(t)
	s.subscribe(t, b, topic, newCollector().handle, broker.Group(RandomName("g"))) // something to route to
	ctx, parent := rec.Tracer.Tracer("test").Start(s.ctx(t), "incoming")
	if err := b.Publish(ctx, topic, &broker.Message{ID: "m-1", Key: "k-1", Body: []byte("x")}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	parent.End()
	sp := rec.WaitSpan(t, s.h.Timeout, "send "+topic)
	if sp.SpanKind != trace.SpanKindProducer {
		t.Errorf("send span kind %v, want producer", sp.SpanKind)
	}
	if sp.Parent.SpanID() != parent.SpanContext().SpanID() || sp.SpanContext.TraceID() != parent.SpanContext().TraceID() {
		t.Errorf("send span's parent %s in trace %s, want the caller's span %s in %s",
			sp.Parent.SpanID(), sp.SpanContext.TraceID(), parent.SpanContext().SpanID(), parent.SpanContext().TraceID())
	}
	wantAttrs(t, sp, map[string]string{
		driver.AttrSystem: s.h.System, driver.AttrDestination: topic,
		driver.AttrOperationType: "send", driver.AttrOperationName: "send", driver.AttrMessageID: "m-1",
	})
	if _, ok := oteltest.Attr(sp, driver.AttrBatchCount); ok {
		t.Errorf("single-message send span has %s", driver.AttrBatchCount)
	}
	if sp.Status.Code == codes.Error {
		t.Errorf("send span of a confirmed publish has status error: %q", sp.Status.Description)
	}
}

// testBatchSendSpan: a Publish of three messages is one span with the
// batch size.
func (s *suite) testBatchSendSpan(t *testing.T) {
	b, rec := s.openTraced(t)
	topic := s.h.NewTopic(t)
	s.subscribe(t, b, topic, newCollector().handle, broker.Group(RandomName("g")))
	s.publish(t, b, topic, msg("a"), msg("b"), msg("c"))
	spans := rec.WaitSpans(t, s.h.Timeout, 1, oteltest.Named("send "+topic))
	wantAttrs(t, spans[0], map[string]string{driver.AttrBatchCount: "3"})
	if _, ok := oteltest.Attr(spans[0], driver.AttrMessageID); ok {
		t.Errorf("batch send span has a %s", driver.AttrMessageID)
	}
	// Spans end, and are exported, before Publish returns.
	if n := len(filter(rec.Spans(), oteltest.Named("send "+topic))); n != 1 {
		t.Errorf("%d send spans for one Publish call, want 1", n)
	}
}

func filter(spans tracetest.SpanStubs, match func(tracetest.SpanStub) bool) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, sp := range spans {
		if match(sp) {
			out = append(out, sp)
		}
	}
	return out
}

// handlerSpans records the span context each handler call ran under.
type handlerSpans struct {
	mu    sync.Mutex
	seen  []trace.SpanContext
	heads []map[string]string
	ch    chan struct{}
	fail  int // fail this many calls first
}

func newHandlerSpans(fail int) *handlerSpans {
	return &handlerSpans{ch: make(chan struct{}, 1000), fail: fail}
}

func (h *handlerSpans) handle(ctx context.Context, d *broker.Delivery) error {
	h.mu.Lock()
	h.seen = append(h.seen, trace.SpanContextFromContext(ctx))
	h.heads = append(h.heads, d.Headers)
	failNow := len(h.seen) <= h.fail
	h.mu.Unlock()
	h.ch <- struct{}{}
	if failNow {
		return errors.New("brokertest: handler fails on purpose")
	}
	return nil
}

func (h *handlerSpans) wait(t *testing.T, timeout time.Duration, n int) ([]trace.SpanContext, []map[string]string) {
	t.Helper()
	deadline := time.After(timeout)
	for i := 0; i < n; i++ {
		select {
		case <-h.ch:
		case <-deadline:
			t.Fatalf("%d handler call(s) after %v, want %d", i, timeout, n)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]trace.SpanContext(nil), h.seen...), append([]map[string]string(nil), h.heads...)
}

// testProcessSpan: the handler runs under a CONSUMER span "process
// {topic}" whose parent (and link) is the send span, found through the
// message's traceparent; a CLIENT settle span follows as its child.
func (s *suite) testProcessSpan(t *testing.T) {
	b, rec := s.openTraced(t)
	topic := s.h.NewTopic(t)
	group := RandomName("g")
	h := newHandlerSpans(0)
	s.subscribe(t, b, topic, h.handle, broker.Group(group))
	s.publish(t, b, topic, &broker.Message{ID: "p-1", Body: []byte("x")})
	seen, heads := h.wait(t, s.h.Timeout, 1)
	send := rec.WaitSpan(t, s.h.Timeout, "send "+topic)
	proc := rec.WaitSpan(t, s.h.Timeout, "process "+topic)
	if heads[0][driver.HeaderTraceParent] == "" {
		t.Errorf("delivered headers carry no %s: %v", driver.HeaderTraceParent, heads[0])
	}
	if proc.SpanKind != trace.SpanKindConsumer {
		t.Errorf("process span kind %v, want consumer", proc.SpanKind)
	}
	if proc.SpanContext.TraceID() != send.SpanContext.TraceID() || proc.Parent.SpanID() != send.SpanContext.SpanID() {
		t.Errorf("process span in trace %s with parent %s, want a child of send span %s in %s",
			proc.SpanContext.TraceID(), proc.Parent.SpanID(), send.SpanContext.SpanID(), send.SpanContext.TraceID())
	}
	if !linksTo(proc, send.SpanContext) {
		t.Errorf("process span does not link to the send span (links %v)", proc.Links)
	}
	if seen[0].SpanID() != proc.SpanContext.SpanID() {
		t.Errorf("handler ran under span %s, want the process span %s", seen[0].SpanID(), proc.SpanContext.SpanID())
	}
	wantAttrs(t, proc, map[string]string{
		driver.AttrSystem: s.h.System, driver.AttrDestination: topic, driver.AttrOperationType: "process",
		driver.AttrOperationName: "process", driver.AttrMessageID: "p-1", driver.AttrConsumerGroup: group,
	})
	settle := rec.WaitSpans(t, s.h.Timeout, 1, func(sp tracetest.SpanStub) bool {
		return sp.Parent.SpanID() == proc.SpanContext.SpanID()
	})[0]
	if settle.SpanKind != trace.SpanKindClient {
		t.Errorf("settle span kind %v, want client", settle.SpanKind)
	}
	op, _ := oteltest.Attr(settle, driver.AttrOperationName)
	wantAttrs(t, settle, map[string]string{driver.AttrOperationType: "settle", driver.AttrDestination: topic})
	if settle.Name != op+" "+topic {
		t.Errorf("settle span named %q, want %q", settle.Name, op+" "+topic)
	}
	if settle.Status.Code == codes.Error {
		t.Errorf("settle span of a handled message has status error: %q", settle.Status.Description)
	}
}

// testHandlerErrorRecorded: a failing handler call's process span has
// status error and error.type; the redelivery is processed again.
func (s *suite) testHandlerErrorRecorded(t *testing.T) {
	b, rec := s.openTraced(t)
	topic := s.h.NewTopic(t)
	h := newHandlerSpans(1)
	s.subscribe(t, b, topic, h.handle, broker.Group(RandomName("g")), broker.MaxDeliveries(5))
	s.publish(t, b, topic, msg("e-1"))
	h.wait(t, s.h.Timeout, 2)
	procs := rec.WaitSpans(t, s.h.Timeout, 2, oteltest.Named("process "+topic))
	var failed, ok int
	for _, p := range procs {
		if p.Status.Code == codes.Error {
			failed++
			wantAttrs(t, p, map[string]string{driver.AttrErrorType: "handler_error"})
		} else {
			ok++
		}
	}
	if failed != 1 || ok < 1 {
		t.Errorf("process spans: %d with status error, %d without; want 1 and at least 1%s",
			failed, ok, oteltest.Describe(rec.Spans()))
	}
	for _, p := range procs {
		if p.SpanContext.TraceID() != procs[0].SpanContext.TraceID() {
			t.Errorf("a redelivery's process span left the producer's trace: %s vs %s",
				p.SpanContext.TraceID(), procs[0].SpanContext.TraceID())
		}
	}
}

// testMalformedTraceHeaders: trace headers that do not parse are
// delivered as they were, never fail the handler call, and its span
// starts a new trace.
func (s *suite) testMalformedTraceHeaders(t *testing.T) {
	b, rec := s.openTraced(t)
	topic := s.h.NewTopic(t)
	h := newHandlerSpans(0)
	s.subscribe(t, b, topic, h.handle, broker.Group(RandomName("g")))
	bad := []string{
		"00-not-a-trace", "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"00-00000000000000000000000000000000-b7ad6b7169203331-01", strings.Repeat("f", 512), "\x00\x01",
	}
	for i, v := range bad {
		m := msg("bad-" + string(rune('a'+i)))
		m.Headers = map[string]string{driver.HeaderTraceParent: v, driver.HeaderTraceState: "=,=,===;" + v,
			driver.HeaderDiagnosticID: v}
		s.publish(t, b, topic, m)
	}
	_, heads := h.wait(t, s.h.Timeout, len(bad))
	procs := rec.WaitSpans(t, s.h.Timeout, len(bad), oteltest.Named("process "+topic))
	for _, p := range procs {
		if p.Parent.IsValid() {
			t.Errorf("process span of a malformed traceparent has parent %s", p.Parent.SpanID())
		}
		if p.Status.Code == codes.Error {
			t.Errorf("process span of a malformed traceparent has status error: %q", p.Status.Description)
		}
	}
	got := map[string]bool{}
	for _, hd := range heads {
		got[hd[driver.HeaderTraceParent]] = true
	}
	for _, v := range bad {
		if !got[v] {
			t.Errorf("malformed traceparent %q was not delivered as published (got %v)", v, got)
		}
	}
}

// testProducerContextRespected: a message whose producer set traceparent
// keeps it; the send span links to it and the process span is its child.
func (s *suite) testProducerContextRespected(t *testing.T) {
	b, rec := s.openTraced(t)
	topic := s.h.NewTopic(t)
	h := newHandlerSpans(0)
	s.subscribe(t, b, topic, h.handle, broker.Group(RandomName("g")))
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	m := msg("own-1")
	m.Headers = map[string]string{driver.HeaderTraceParent: tp, driver.HeaderTraceState: "vendor=1"}
	s.publish(t, b, topic, m)
	_, heads := h.wait(t, s.h.Timeout, 1)
	if heads[0][driver.HeaderTraceParent] != tp || heads[0][driver.HeaderTraceState] != "vendor=1" {
		t.Errorf("delivered traceparent %q tracestate %q, want the producer's %q and %q",
			heads[0][driver.HeaderTraceParent], heads[0][driver.HeaderTraceState], tp, "vendor=1")
	}
	if m.Headers[driver.HeaderTraceParent] != tp || len(m.Headers) != 2 {
		t.Errorf("Publish modified the caller's headers: %v", m.Headers)
	}
	send := rec.WaitSpan(t, s.h.Timeout, "send "+topic)
	proc := rec.WaitSpan(t, s.h.Timeout, "process "+topic)
	own := func(sc trace.SpanContext) bool {
		return sc.TraceID().String() == "0af7651916cd43dd8448eb211c80319c" && sc.SpanID().String() == "b7ad6b7169203331"
	}
	linked := false
	for _, l := range send.Links {
		linked = linked || own(l.SpanContext)
	}
	if !linked {
		t.Errorf("send span does not link to the message's own context (links %v)", send.Links)
	}
	if !own(proc.Parent) {
		t.Errorf("process span's parent is %s/%s, want the producer's context", proc.Parent.TraceID(), proc.Parent.SpanID())
	}
}

// testMetrics: the four messaging metrics and isobroker's state and
// in-flight gauges count what happened.
func (s *suite) testMetrics(t *testing.T) {
	b, rec := s.openTraced(t)
	topic := s.h.NewTopic(t)
	h := newHandlerSpans(0)
	s.subscribe(t, b, topic, h.handle, broker.Group(RandomName("g")))
	s.publish(t, b, topic, msg("1"), msg("2"), msg("3"))
	s.publish(t, b, topic, msg("4"))
	h.wait(t, s.h.Timeout, 4)
	// The metrics of a handler call are recorded when it returns, before
	// the settle span; wait for the four settle spans.
	rec.WaitSpans(t, s.h.Timeout, 4, func(sp tracetest.SpanStub) bool {
		v, _ := oteltest.Attr(sp, driver.AttrOperationType)
		return v == "settle"
	})
	rm := rec.Collect(t)
	dest := map[string]string{driver.AttrDestination: topic, driver.AttrSystem: s.h.System}
	if n, _ := oteltest.Sum(rm, driver.MetricSentMessages, dest); n != 4 {
		t.Errorf("%s = %d, want 4", driver.MetricSentMessages, n)
	}
	if n, _ := oteltest.Sum(rm, driver.MetricOperationDuration, map[string]string{
		driver.AttrDestination: topic, driver.AttrOperationName: "send"}); n != 2 {
		t.Errorf("%s has %d send measurements, want 2 (one per Publish call)", driver.MetricOperationDuration, n)
	}
	if n, _ := oteltest.Sum(rm, driver.MetricOperationDuration, map[string]string{
		driver.AttrDestination: topic, driver.AttrOperationType: "settle"}); n != 4 {
		t.Errorf("%s has %d settle measurements, want 4", driver.MetricOperationDuration, n)
	}
	if n, _ := oteltest.Sum(rm, driver.MetricConsumedMessages, dest); n != 4 {
		t.Errorf("%s = %d, want 4", driver.MetricConsumedMessages, n)
	}
	if n, _ := oteltest.Sum(rm, driver.MetricProcessDuration, dest); n != 4 {
		t.Errorf("%s has %d measurements, want 4", driver.MetricProcessDuration, n)
	}
	if n, pts := oteltest.Sum(rm, driver.MetricPublishInFlight, nil); n != 0 || pts == 0 {
		t.Errorf("%s = %d over %d point(s), want 0 once every Publish returned", driver.MetricPublishInFlight, n, pts)
	}
	if n, _ := oteltest.Sum(rm, driver.MetricState, map[string]string{driver.AttrState: "connected"}); n != 1 {
		t.Errorf("%s{%s=connected} = %d, want 1", driver.MetricState, driver.AttrState, n)
	}
	if n, _ := oteltest.Sum(rm, driver.MetricState, nil); n != 1 {
		t.Errorf("%s sums to %d over all states, want 1", driver.MetricState, n)
	}
}

// testRecoveryEvents: a lost connection is a recovery span with a state
// change event for each step, and counts one reconnect.
func (s *suite) testRecoveryEvents(t *testing.T) {
	if s.h.Sever == nil {
		t.Skip("Harness.Sever is nil: no way to cut one instance's connections")
	}
	b, rec := s.openTraced(t)
	topic := s.h.NewTopic(t)
	// A running subscription makes the instance notice the cut (an
	// adapter may otherwise reconnect lazily, on next use); a publish
	// after it uses the recovered connection.
	h := newHandlerSpans(0)
	s.subscribe(t, b, topic, h.handle, broker.Group(RandomName("g")))
	s.publish(t, b, topic, msg("before"))
	h.wait(t, s.h.Timeout, 1)
	s.h.Sever(t, b)
	deadline := time.Now().Add(s.h.Timeout)
	for {
		err := b.Publish(s.ctx(t), topic, msg("after"))
		if err == nil {
			break
		}
		if !broker.IsRetryable(err) || time.Now().After(deadline) {
			t.Fatalf("publish after the cut: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	sp := rec.WaitSpan(t, s.h.Timeout, driver.SpanRecover)
	var to []string
	for _, e := range sp.Events {
		if e.Name != driver.EventStateChange {
			continue
		}
		for _, kv := range e.Attributes {
			if kv.Key == driver.AttrState {
				to = append(to, kv.Value.AsString())
			}
		}
	}
	if len(to) < 2 || to[0] != "reconnecting" || to[len(to)-1] != "connected" {
		t.Errorf("recovery span's state changes %v, want reconnecting ... connected", to)
	}
	wantAttrs(t, sp, map[string]string{driver.AttrSystem: s.h.System})
	rm := rec.Collect(t)
	if n, _ := oteltest.Sum(rm, driver.MetricReconnects, nil); n < 1 {
		t.Errorf("%s = %d after a recovery, want at least 1", driver.MetricReconnects, n)
	}
}

// testOffWithoutTelemetry: an instance opened without Telemetry writes no
// trace context, even when the caller's ctx carries a span.
func (s *suite) testOffWithoutTelemetry(t *testing.T) {
	b := s.open(t)
	rec := oteltest.New(t)
	topic := s.h.NewTopic(t)
	h := newHandlerSpans(0)
	s.subscribe(t, b, topic, h.handle, broker.Group(RandomName("g")))
	ctx, span := rec.Tracer.Tracer("test").Start(s.ctx(t), "incoming")
	defer span.End()
	if err := b.Publish(ctx, topic, msg("plain")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	seen, heads := h.wait(t, s.h.Timeout, 1)
	for _, k := range []string{driver.HeaderTraceParent, driver.HeaderTraceState, driver.HeaderDiagnosticID} {
		if v, ok := heads[0][k]; ok {
			t.Errorf("uninstrumented instance delivered header %s = %q", k, v)
		}
	}
	if seen[0].IsValid() {
		t.Errorf("uninstrumented handler ran under span %s", seen[0].SpanID())
	}
}
