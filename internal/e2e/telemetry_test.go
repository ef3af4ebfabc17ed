package e2e_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/driver"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
	"github.com/isobroker/broker/internal/oteltest"
	"github.com/isobroker/broker/internal/rabbitnode"
	"github.com/isobroker/broker/rabbit"
)

// node is the RabbitMQ node of this package's tests (or RABBITMQ_URL).
var node = rabbitnode.NewShared(rabbitnode.Options{Name: "e2e"})

func TestMain(m *testing.M) {
	code := m.Run()
	node.Close()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreAnyFunction(rabbitnode.WaitFunction)); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}

const wait = 30 * time.Second

// One trace from an incoming request through RabbitMQ and Event Hubs: the
// request's span → send on rabbit → its handler → send on eventhubs → its
// handler, each span the child of the one before, the context carried in
// the AMQP 0-9-1 headers and then in the Event Hubs application
// properties (traceparent and Diagnostic-Id).
func TestOneTraceThroughRabbitAndEventHubs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	quiet := slog.New(slog.DiscardHandler)
	rec := oteltest.New(t)

	emu, err := emulator.New(emulator.Config{AutoCreate: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer emu.Close(context.Background())

	orders, err := rabbit.OpenURL(ctx, node.URL(t), rabbit.WithName("orders"), rabbit.WithLogger(quiet), rabbit.WithTelemetry(rec.Telemetry()))
	if err != nil {
		t.Fatal(err)
	}
	defer orders.Close(context.Background())
	events, err := eventhubs.OpenURL(ctx, emu.ConnectionString(""), eventhubs.WithName("events"), eventhubs.WithLogger(quiet), eventhubs.WithTelemetry(rec.Telemetry()))
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close(context.Background())

	ordersTopic, eventsHub := brokertest.RandomName("e2e-orders"), brokertest.RandomName("e2e-events")
	forwarded := make(chan error, 1)
	osub, err := orders.Subscribe(ctx, ordersTopic, func(ctx context.Context, d *broker.Delivery) error {
		err := events.Publish(ctx, eventsHub, &broker.Message{ID: "event-" + d.ID, Body: d.Body})
		forwarded <- err
		return err
	}, broker.Group("billing"))
	if err != nil {
		t.Fatal(err)
	}
	defer osub.Close(context.Background())
	got := make(chan *broker.Delivery, 1)
	esub, err := events.Subscribe(ctx, eventsHub, func(_ context.Context, d *broker.Delivery) error {
		got <- d
		return nil
	}, broker.Group("$Default"))
	if err != nil {
		t.Fatal(err)
	}
	defer esub.Close(context.Background())

	reqCtx, req := rec.Tracer.Tracer("e2e").Start(ctx, "POST /orders", trace.WithSpanKind(trace.SpanKindServer))
	if err := orders.Publish(reqCtx, ordersTopic, &broker.Message{ID: "order-1", Key: "tea", Body: []byte("2 × tea")}); err != nil {
		t.Fatal(err)
	}
	req.End()
	if err := <-forwarded; err != nil {
		t.Fatalf("the rabbit handler's publish to eventhubs: %v", err)
	}
	var d *broker.Delivery
	select {
	case d = <-got:
	case <-ctx.Done():
		t.Fatal("the event never reached its handler")
	}
	if tp := d.Headers[driver.HeaderTraceParent]; tp == "" || d.Headers[driver.HeaderDiagnosticID] != tp {
		t.Errorf("event's traceparent %q, Diagnostic-Id %q: want both, equal", tp, d.Headers[driver.HeaderDiagnosticID])
	}

	// The last process span ends once its event is settled.
	rec.WaitSpan(t, wait, "process "+eventsHub)
	rec.WaitSpan(t, wait, "process "+ordersTopic)
	spans := rec.Spans()
	find := func(name string) tracetest.SpanStub {
		t.Helper()
		for _, s := range spans {
			if s.Name == name {
				return s
			}
		}
		t.Fatalf("no span %q:%s", name, oteltest.Describe(spans))
		return tracetest.SpanStub{}
	}
	chain := []struct {
		name   string
		kind   trace.SpanKind
		system string
	}{
		{"POST /orders", trace.SpanKindServer, ""},
		{"send " + ordersTopic, trace.SpanKindProducer, "rabbitmq"},
		{"process " + ordersTopic, trace.SpanKindConsumer, "rabbitmq"},
		{"send " + eventsHub, trace.SpanKindProducer, "eventhubs"},
		{"process " + eventsHub, trace.SpanKindConsumer, "eventhubs"},
	}
	var parent tracetest.SpanStub
	for i, step := range chain {
		s := find(step.name)
		if s.SpanKind != step.kind {
			t.Errorf("%q is %v, want %v", step.name, s.SpanKind, step.kind)
		}
		if s.SpanContext.TraceID() != req.SpanContext().TraceID() {
			t.Errorf("%q is in trace %s, want the request's %s", step.name, s.SpanContext.TraceID(), req.SpanContext().TraceID())
		}
		if i > 0 && s.Parent.SpanID() != parent.SpanContext.SpanID() {
			t.Errorf("%q's parent is %s, want %q (%s)", step.name, s.Parent.SpanID(), parent.Name, parent.SpanContext.SpanID())
		}
		if step.system != "" {
			if v, _ := oteltest.Attr(s, driver.AttrSystem); v != step.system {
				t.Errorf("%q has %s %q, want %q", step.name, driver.AttrSystem, v, step.system)
			}
		}
		parent = s
	}
	// Each handled message was settled under its process span.
	for _, topic := range []string{ordersTopic, eventsHub} {
		proc := find("process " + topic)
		settled := false
		for _, s := range spans {
			settled = settled || (s.Parent.SpanID() == proc.SpanContext.SpanID() && s.SpanKind == trace.SpanKindClient)
		}
		if !settled {
			t.Errorf("no settle span under %q:%s", proc.Name, oteltest.Describe(spans))
		}
	}
}
