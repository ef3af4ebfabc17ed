package eventhubs_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
	"github.com/isobroker/broker/internal/oteltest"
)

// The Event Hubs side of telemetry that the conformance suite cannot
// see: the application properties the server holds, as the official SDK
// reads them; events the SDK sent with the Azure SDKs' Diagnostic-Id; and
// the trace of a dead-lettered copy.

// sdkRead reads n events of a hub's partition from the start, with the
// official SDK.
func sdkRead(t *testing.T, e *emulator.Emulator, hub, partition string, n int) []*azeventhubs.ReceivedEventData {
	t.Helper()
	ctx := ctxT(t, 20*time.Second)
	consumer, err := azeventhubs.NewConsumerClientFromConnectionString(e.ConnectionString(hub), "", azeventhubs.DefaultConsumerGroup, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close(context.Background())
	earliest := true
	pc, err := consumer.NewPartitionClient(partition, &azeventhubs.PartitionClientOptions{StartPosition: azeventhubs.StartPosition{Earliest: &earliest}})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close(context.Background())
	var got []*azeventhubs.ReceivedEventData
	for len(got) < n {
		evs, err := pc.ReceiveEvents(ctx, n-len(got), nil)
		if err != nil {
			t.Fatalf("SDK receive from %s/%s (%d of %d): %v", hub, partition, len(got), n, err)
		}
		got = append(got, evs...)
	}
	return got
}

// propertyContext is the span context an event's application properties
// carry in traceparent and tracestate, which must be strings.
func propertyContext(t *testing.T, props map[string]any) trace.SpanContext {
	t.Helper()
	c := propagation.MapCarrier{}
	for _, k := range []string{driver.HeaderTraceParent, driver.HeaderTraceState} {
		if v, ok := props[k]; ok {
			s, isString := v.(string)
			if !isString {
				t.Fatalf("property %s is held as %T, want a string", k, v)
			}
			c[k] = s
		}
	}
	return trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), c))
}

func wantSpanAttrs(t *testing.T, s tracetest.SpanStub, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got, ok := oteltest.Attr(s, k); !ok || got != v {
			t.Errorf("span %q: %s = %q (present %v), want %q", s.Name, k, got, ok, v)
		}
	}
}

// TestTelemetryOnTheWire: events published with telemetry on reach the
// server with traceparent and tracestate of their send span and a
// Diagnostic-Id equal to the traceparent, as string application
// properties that the SDK reads; the send span names the server, the
// process span the partition, the consumer group and the enqueued time.
func TestTelemetryOnTheWire(t *testing.T) {
	e := startEmulator(t, emulator.Config{})
	hub := newHub(t, e, 1)
	rec := oteltest.New(t)
	b := open(t, e, nil, eventhubs.WithTelemetry(rec.Telemetry()))
	ctx := ctxT(t, 30*time.Second)

	ts, err := trace.ParseTraceState("az=1")
	if err != nil {
		t.Fatal(err)
	}
	caller := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{9}, SpanID: trace.SpanID{8},
		TraceFlags: trace.FlagsSampled, TraceState: ts})
	msgs := []*broker.Message{{ID: "w-0", Body: []byte("a")}, {ID: "w-1", Body: []byte("b"), Headers: map[string]string{"app": "kept"}}}
	if err := b.Publish(trace.ContextWithRemoteSpanContext(ctx, caller), hub, msgs...); err != nil {
		t.Fatal(err)
	}
	send := rec.WaitSpan(t, 10*time.Second, "send "+hub)
	host, port, _ := net.SplitHostPort(e.Addr())
	wantSpanAttrs(t, send, map[string]string{driver.AttrSystem: eventhubs.System, driver.AttrDestination: hub,
		driver.AttrBatchCount: "2", driver.AttrServerAddress: host, driver.AttrServerPort: port})
	if send.Parent.SpanID() != caller.SpanID() {
		t.Errorf("send span's parent %s, want the caller's %s", send.Parent.SpanID(), caller.SpanID())
	}
	for i, ev := range sdkRead(t, e, hub, "0", len(msgs)) {
		sc := propertyContext(t, ev.Properties)
		if sc.TraceID() != send.SpanContext.TraceID() || sc.SpanID() != send.SpanContext.SpanID() {
			t.Errorf("event %d holds traceparent %v, want the send span's %s/%s", i, ev.Properties[driver.HeaderTraceParent],
				send.SpanContext.TraceID(), send.SpanContext.SpanID())
		}
		if sc.TraceState().Get("az") != "1" {
			t.Errorf("event %d holds tracestate %v, want the caller's", i, ev.Properties[driver.HeaderTraceState])
		}
		if ev.Properties[driver.HeaderDiagnosticID] != ev.Properties[driver.HeaderTraceParent] {
			t.Errorf("event %d: Diagnostic-Id %v, want the traceparent %v", i, ev.Properties[driver.HeaderDiagnosticID], ev.Properties[driver.HeaderTraceParent])
		}
	}
	if msgs[1].Headers["app"] != "kept" || len(msgs[1].Headers) != 1 || msgs[0].Headers != nil {
		t.Errorf("Publish modified the caller's messages: %v %v", msgs[0].Headers, msgs[1].Headers)
	}

	group := "$Default"
	sub, err := b.Subscribe(ctx, hub, func(context.Context, *broker.Delivery) error { return nil },
		broker.StartAt(broker.Earliest()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close(context.Background()) })
	procs := rec.WaitSpans(t, 10*time.Second, len(msgs), oteltest.Named("process "+hub))
	for _, p := range procs {
		wantSpanAttrs(t, p, map[string]string{driver.AttrPartition: "0", driver.AttrConsumerGroup: group})
		if v, ok := oteltest.Attr(p, driver.AttrEnqueuedTime); !ok || v == "" || v == "0" {
			t.Errorf("process span: enqueued time %q (present %v)", v, ok)
		}
		if p.Parent.SpanID() != send.SpanContext.SpanID() {
			t.Errorf("process span's parent %s, want the send span", p.Parent.SpanID())
		}
	}
}

// TestTelemetrySDKProducerContext: the handler's ctx continues what an
// Azure SDK producer wrote: Diagnostic-Id alone (what the Azure SDKs
// write) is read as the traceparent; a traceparent wins over a different
// Diagnostic-Id; properties of other AMQP types, or malformed, start a
// trace of their own and never fail the call.
func TestTelemetrySDKProducerContext(t *testing.T) {
	e := startEmulator(t, emulator.Config{})
	hub := newHub(t, e, 1)
	rec := oteltest.New(t)
	b := open(t, e, nil, eventhubs.WithTelemetry(rec.Telemetry()))
	ctx := ctxT(t, 30*time.Second)

	const (
		diagTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
		diag      = "00-" + diagTrace + "-00f067aa0ba902b7-01"
		tpTrace   = "0af7651916cd43dd8448eb211c80319c"
		tp        = "00-" + tpTrace + "-b7ad6b7169203331-01"
	)
	cases := map[string]struct {
		props     map[string]any
		wantTrace string // "" for a trace of its own
	}{
		"diagnostic-id": {map[string]any{driver.HeaderDiagnosticID: diag}, diagTrace},
		"both":          {map[string]any{driver.HeaderTraceParent: tp, driver.HeaderDiagnosticID: diag}, tpTrace},
		"int":           {map[string]any{driver.HeaderTraceParent: int64(7), driver.HeaderDiagnosticID: int32(1)}, ""},
		"binary":        {map[string]any{driver.HeaderTraceParent: []byte{0, 1, 2}}, ""},
		"bad-diag":      {map[string]any{driver.HeaderDiagnosticID: "|abc.def."}, ""},
		"uuid-ish":      {map[string]any{driver.HeaderTraceParent: true, driver.HeaderTraceState: 1.5}, ""},
	}
	var mu sync.Mutex
	seen := map[string]trace.SpanContext{}
	sub, err := b.Subscribe(ctx, hub, func(ctx context.Context, d *broker.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		seen[d.ID] = trace.SpanContextFromContext(ctx)
		return nil
	}, broker.StartAt(broker.Earliest()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close(context.Background()) })

	producer, err := azeventhubs.NewProducerClientFromConnectionString(e.ConnectionString(hub), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close(context.Background())
	batch, err := producer.NewEventDataBatch(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range cases {
		id := name
		if err := batch.AddEventData(&azeventhubs.EventData{Body: []byte(name), MessageID: &id, Properties: c.props}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := producer.SendEventDataBatch(ctx, batch, nil); err != nil {
		t.Fatal(err)
	}
	rec.WaitSpans(t, 20*time.Second, len(cases), oteltest.Named("process "+hub))
	for _, p := range rec.Spans() {
		if p.Name == "process "+hub && p.Status.Code == codes.Error {
			t.Errorf("process span with status error %q", p.Status.Description)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for name, c := range cases {
		sc := seen[name]
		if !sc.IsValid() {
			t.Errorf("%s: the handler's ctx carries no span", name)
			continue
		}
		got := sc.TraceID().String()
		switch {
		case c.wantTrace != "" && got != c.wantTrace:
			t.Errorf("%s: handler in trace %s, want the producer's %s", name, got, c.wantTrace)
		case c.wantTrace == "" && (got == diagTrace || got == tpTrace):
			t.Errorf("%s: handler in trace %s, want a trace of its own", name, got)
		}
	}
}

// TestTelemetryDeadLetterCopy: an event that always fails is
// dead-lettered; the copy the server holds in the dead-letter hub keeps
// the producer's traceparent and Diagnostic-Id, and the dead-letter
// publish is a send span under the last process span, in the producer's
// trace.
func TestTelemetryDeadLetterCopy(t *testing.T) {
	e := startEmulator(t, emulator.Config{})
	hub := newHub(t, e, 1)
	dl := newDeadLetterHub(t, e, hub+"-dl")
	rec := oteltest.New(t)
	b := open(t, e, nil, eventhubs.WithTelemetry(rec.Telemetry()))
	ctx := ctxT(t, 30*time.Second)

	sub, err := b.Subscribe(ctx, hub, func(context.Context, *broker.Delivery) error { return errors.New("bad input") },
		broker.StartAt(broker.Earliest()), broker.MaxDeliveries(2), broker.DeadLetterTo(dl), broker.RedeliveryDelay(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close(context.Background()) })
	if err := b.Publish(ctx, hub, &broker.Message{ID: "doomed", Key: "tenant", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	send := rec.WaitSpan(t, 10*time.Second, "send "+hub)
	dlSend := rec.WaitSpan(t, 20*time.Second, "send "+dl)
	settle := rec.WaitSpan(t, 10*time.Second, "dead_letter "+hub)
	procs := rec.WaitSpans(t, 10*time.Second, 2, oteltest.Named("process "+hub))
	for _, s := range []tracetest.SpanStub{dlSend, settle, procs[0], procs[1]} {
		if s.SpanContext.TraceID() != send.SpanContext.TraceID() {
			t.Errorf("%q left the producer's trace%s", s.Name, oteltest.Describe(rec.Spans()))
		}
	}
	last := procs[1]
	if procs[0].EndTime.After(procs[1].EndTime) {
		last = procs[0]
	}
	if dlSend.Parent.SpanID() != last.SpanContext.SpanID() {
		t.Errorf("dead-letter send's parent %s, want the last process span %s", dlSend.Parent.SpanID(), last.SpanContext.SpanID())
	}

	// The copy went to one of the dead-letter hub's two partitions.
	var held *azeventhubs.ReceivedEventData
	for _, p := range []string{"0", "1"} {
		if props, err := dlPartitionCount(ctx, e, dl, p); err == nil && props > 0 {
			held = sdkRead(t, e, dl, p, 1)[0]
		}
	}
	if held == nil {
		t.Fatal("the dead-letter hub holds nothing")
	}
	sc := propertyContext(t, held.Properties)
	if sc.TraceID() != send.SpanContext.TraceID() || sc.SpanID() != send.SpanContext.SpanID() {
		t.Errorf("the dead-lettered copy carries traceparent %v, want the producer's send span %s/%s",
			held.Properties[driver.HeaderTraceParent], send.SpanContext.TraceID(), send.SpanContext.SpanID())
	}
	if held.Properties[driver.HeaderDiagnosticID] != held.Properties[driver.HeaderTraceParent] {
		t.Errorf("the dead-lettered copy: Diagnostic-Id %v, traceparent %v", held.Properties[driver.HeaderDiagnosticID], held.Properties[driver.HeaderTraceParent])
	}
}

// dlPartitionCount is how many events a partition of hub holds.
func dlPartitionCount(ctx context.Context, e *emulator.Emulator, hub, partition string) (int64, error) {
	c, err := azeventhubs.NewProducerClientFromConnectionString(e.ConnectionString(hub), "", nil)
	if err != nil {
		return 0, err
	}
	defer c.Close(context.Background())
	p, err := c.GetPartitionProperties(ctx, partition, nil)
	if err != nil {
		return 0, err
	}
	if p.IsEmpty {
		return 0, nil
	}
	return p.LastEnqueuedSequenceNumber - p.BeginningSequenceNumber + 1, nil
}
