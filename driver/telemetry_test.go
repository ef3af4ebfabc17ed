package driver_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
	"github.com/isobroker/broker/internal/oteltest"
)

// No Telemetry, no Instruments: a nil *Instruments, whose methods do
// nothing.
func TestInstrumentsOffIsNil(t *testing.T) {
	in, err := driver.NewInstruments(broker.Telemetry{}, driver.InstrumentsConfig{System: "x"})
	if err != nil || in != nil {
		t.Fatalf("NewInstruments(zero) = %v, %v; want nil, nil", in, err)
	}
	in.Track(driver.NewStateTracker(broker.StateConnecting)) // must not panic
}

// A lost connection is one recovery span from the loss until it is back,
// with an event per change; it counts one reconnect, and the state gauge
// follows the tracker until it closes.
func TestRecoverySpanFollowsState(t *testing.T) {
	rec := oteltest.New(t)
	in, err := driver.NewInstruments(rec.Telemetry(), driver.InstrumentsConfig{System: "test", Instance: "a", ServerAddress: "h", ServerPort: 5672})
	if err != nil {
		t.Fatal(err)
	}
	st := driver.NewStateTracker(broker.StateConnecting)
	in.Track(st)
	st.Set(broker.StateConnected, nil)
	if n, _ := oteltest.Sum(rec.Collect(t), driver.MetricState, map[string]string{driver.AttrState: "connected"}); n != 1 {
		t.Errorf("state gauge for connected = %d, want 1", n)
	}
	if len(rec.Spans()) != 0 {
		t.Errorf("the first connection made spans:%s", oteltest.Describe(rec.Spans()))
	}
	st.Set(broker.StateReconnecting, fmt.Errorf("read: %w", broker.ErrUnavailable))
	st.Set(broker.StateConnected, nil)
	spans := rec.Spans()
	if len(spans) != 1 || spans[0].Name != driver.SpanRecover {
		t.Fatalf("spans after one recovery:%s; want one %s", oteltest.Describe(spans), driver.SpanRecover)
	}
	sp := spans[0]
	if len(sp.Events) != 2 || sp.Events[0].Name != driver.EventStateChange {
		t.Fatalf("recovery events %v, want two %s", sp.Events, driver.EventStateChange)
	}
	reason := ""
	for _, kv := range sp.Events[0].Attributes {
		if kv.Key == driver.AttrReconnectReason {
			reason = kv.Value.AsString()
		}
	}
	if reason != "unavailable" {
		t.Errorf("reconnect reason %q, want %q", reason, "unavailable")
	}
	if v, _ := oteltest.Attr(sp, driver.AttrServerAddress); v != "h" {
		t.Errorf("recovery span's server.address %q", v)
	}
	rm := rec.Collect(t)
	if n, _ := oteltest.Sum(rm, driver.MetricReconnects, nil); n != 1 {
		t.Errorf("reconnects = %d, want 1", n)
	}
	// Lost again, then closed before recovering: the span ends in error,
	// and the gauge is released.
	st.Set(broker.StateReconnecting, errors.New("eof"))
	st.Set(broker.StateClosed, nil)
	spans = rec.Spans()
	if len(spans) != 2 || spans[1].Status.Code != codes.Error {
		t.Errorf("second recovery span %v, want one ended in error", spans[len(spans)-1].Status)
	}
	if _, pts := oteltest.Sum(rec.Collect(t), driver.MetricState, nil); pts != 0 {
		t.Errorf("state gauge still reports %d point(s) after close", pts)
	}
}

func publishNothing(got *[]*broker.Message) func(context.Context, string, ...*broker.Message) error {
	return func(_ context.Context, _ string, msgs ...*broker.Message) error {
		*got = msgs
		return nil
	}
}

// On Event Hubs the carrier writes Diagnostic-Id equal to traceparent, and
// reads it when traceparent is missing; traceparent wins when both are
// there. The process span names the consumer group the adapter gave
// Instrument, not the Delivery's Group.
func TestDiagnosticIDCarrier(t *testing.T) {
	rec := oteltest.New(t)
	in, err := driver.NewInstruments(rec.Telemetry(), driver.InstrumentsConfig{System: "eventhubs", DiagnosticID: true})
	if err != nil {
		t.Fatal(err)
	}
	var sent []*broker.Message
	orig := &broker.Message{ID: "1", Headers: map[string]string{"a": "b"}}
	if err := in.Publish(context.Background(), "hub", []*broker.Message{orig}, publishNothing(&sent)); err != nil {
		t.Fatal(err)
	}
	h := sent[0].Headers
	if h[driver.HeaderTraceParent] == "" || h[driver.HeaderDiagnosticID] != h[driver.HeaderTraceParent] || h["a"] != "b" {
		t.Errorf("sent headers %v: want traceparent, an equal Diagnostic-Id and the message's own", h)
	}
	if len(orig.Headers) != 1 {
		t.Errorf("Publish changed the caller's headers: %v", orig.Headers)
	}

	const diag = "00-11111111111111111111111111111111-2222222222222222-01"
	const tp = "00-33333333333333333333333333333333-4444444444444444-01"
	for _, tc := range []struct {
		name    string
		headers map[string]string
		want    string // trace id of the parent
	}{
		{"only Diagnostic-Id", map[string]string{driver.HeaderDiagnosticID: diag}, "11111111111111111111111111111111"},
		{"both", map[string]string{driver.HeaderDiagnosticID: diag, driver.HeaderTraceParent: tp}, "33333333333333333333333333333333"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := driver.NewSubscription(context.Background(), "test", "hub", slog.New(slog.DiscardHandler))
			s.Instrument(in, "$Default")
			var seen trace.SpanContext
			p, err := s.Call(func(ctx context.Context, _ *broker.Delivery) error {
				seen = trace.SpanContextFromContext(ctx)
				return nil
			}, &broker.Delivery{Message: &broker.Message{Headers: tc.headers, Metadata: broker.Metadata{Topic: "hub"}}})
			p.End()
			s.Abandon(nil)
			if err != nil {
				t.Fatal(err)
			}
			if seen.TraceID().String() != tc.want {
				t.Errorf("handler's trace %s, want %s", seen.TraceID(), tc.want)
			}
			procs := rec.Spans()
			if g, _ := oteltest.Attr(procs[len(procs)-1], driver.AttrConsumerGroup); g != "$Default" {
				t.Errorf("process span's consumer group %q, want the one given to Instrument", g)
			}
		})
	}
}

// A Propagator alone writes the caller's own context into the messages
// and makes no spans.
func TestPropagatorOnly(t *testing.T) {
	rec := oteltest.New(t)
	in, err := driver.NewInstruments(broker.Telemetry{Propagator: propagation.TraceContext{}}, driver.InstrumentsConfig{System: "x"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, span := rec.Tracer.Tracer("test").Start(context.Background(), "caller")
	var sent []*broker.Message
	if err := in.Publish(ctx, "t", []*broker.Message{{ID: "1"}}, publishNothing(&sent)); err != nil {
		t.Fatal(err)
	}
	span.End()
	want := fmt.Sprintf("00-%s-%s-01", span.SpanContext().TraceID(), span.SpanContext().SpanID())
	if got := sent[0].Headers[driver.HeaderTraceParent]; got != want {
		t.Errorf("traceparent %q, want the caller's %q", got, want)
	}
	if n := len(rec.Spans()); n != 1 {
		t.Errorf("%d spans, want only the caller's", n)
	}
	// No context in ctx: the messages go out as they were, uncopied.
	orig := &broker.Message{ID: "2"}
	if err := in.Publish(context.Background(), "t", []*broker.Message{orig}, publishNothing(&sent)); err != nil {
		t.Fatal(err)
	}
	if sent[0] != orig {
		t.Errorf("a message with no context to carry was copied: %v", sent[0].Headers)
	}
}

func TestErrorType(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("x: %w", broker.ErrNacked), "nacked"},
		{fmt.Errorf("x: %w", broker.ErrClosed), "closed"},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), "timeout"},
		{context.Canceled, "canceled"},
		{fmt.Errorf("x: %w", broker.ErrMessageTooLarge), "message_too_large"},
		{errors.New("anything"), "_OTHER"},
	} {
		if got := driver.ErrorType(tc.err); got != tc.want {
			t.Errorf("ErrorType(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// The spans' timestamps are the tracker's: a recovery span lasts from the
// loss to the reconnection as the tracker saw them.
func TestRecoverySpanTimes(t *testing.T) {
	rec := oteltest.New(t)
	in, _ := driver.NewInstruments(rec.Telemetry(), driver.InstrumentsConfig{System: "test"})
	st := driver.NewStateTracker(broker.StateConnected)
	in.Track(st)
	lost, _ := st.Set(broker.StateReconnecting, errors.New("eof"))
	time.Sleep(20 * time.Millisecond)
	back, _ := st.Set(broker.StateConnected, nil)
	sp := rec.Spans()[0]
	if !sp.StartTime.Equal(lost.At) || !sp.EndTime.Equal(back.At) {
		t.Errorf("recovery span %v–%v, want %v–%v", sp.StartTime, sp.EndTime, lost.At, back.At)
	}
}
