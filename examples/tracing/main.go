// Command tracing follows one message through two brokers with
// OpenTelemetry and prints its trace as a tree: an incoming request
// publishes an order on the first broker, the order's handler publishes
// an event on the second, and the event's handler ends the path — one
// trace, carried in the messages' traceparent headers.
//
//	go run ./examples/tracing
//
// It runs on the embedded default (two in-memory brokers, no server).
// Pass -orders and -events to run the same path over real servers, for
// example -orders amqp://guest:guest@localhost:5672/ and an Event Hubs
// connection string for -events (whose hub "events" and group "audit"
// must exist).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/registry"
)

func main() {
	orders := flag.String("orders", "mem://", "URL of the broker that carries orders")
	events := flag.String("events", "mem://", "URL of the broker that carries events")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, os.Stdout, *orders, *events); err != nil {
		fmt.Fprintln(os.Stderr, "tracing:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer, ordersURL, eventsURL string) error {
	// Telemetry is per instance: these providers serve this registry's
	// brokers only. In a real program the exporter would send to a
	// collector; here a recorder keeps the spans so we can print them.
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	metrics := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(metrics))
	defer tp.Shutdown(context.Background())
	defer mp.Shutdown(context.Background())

	reg := registry.New(registry.WithTelemetry(broker.Telemetry{TracerProvider: tp, MeterProvider: mp}))
	defer reg.CloseAll(context.Background())
	orders, err := reg.OpenNamed(ctx, "orders", ordersURL)
	if err != nil {
		return err
	}
	events, err := reg.OpenNamed(ctx, "events", eventsURL)
	if err != nil {
		return err
	}

	done := make(chan struct{})
	// The order's handler runs under the "process orders" span: what it
	// publishes joins the same trace.
	if _, err := orders.Subscribe(ctx, "orders", func(ctx context.Context, d *broker.Delivery) error {
		return events.Publish(ctx, "events", &broker.Message{ID: "event-" + d.ID, Body: d.Body})
	}, broker.Group("billing")); err != nil {
		return err
	}
	if _, err := events.Subscribe(ctx, "events", func(ctx context.Context, d *broker.Delivery) error {
		close(done)
		return nil
	}, broker.Group("audit")); err != nil {
		return err
	}

	// The span of an incoming request, as an HTTP server's instrumentation
	// would have started it.
	reqCtx, req := tp.Tracer("example").Start(ctx, "POST /orders", trace.WithSpanKind(trace.SpanKindServer))
	err = orders.Publish(reqCtx, "orders", &broker.Message{ID: "order-1", Body: []byte(`{"sku":"tea","qty":2}`)})
	req.End()
	if err != nil {
		return err
	}
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	// A process span ends once its message is settled, just after the
	// handler returns: wait for both.
	for !hasEnded(spans.Ended(), "process orders", "process events") {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	printTree(out, spans.Ended())

	var rm metricdata.ResourceMetrics
	if err := metrics.Collect(ctx, &rm); err != nil {
		return err
	}
	fmt.Fprintln(out, "\nmetrics:")
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			fmt.Fprintf(out, "  %s\n", m.Name)
		}
	}
	return nil
}

// hasEnded reports whether spans named each of names have ended.
func hasEnded(spans []sdktrace.ReadOnlySpan, names ...string) bool {
	ended := map[string]bool{}
	for _, s := range spans {
		ended[s.Name()] = true
	}
	for _, n := range names {
		if !ended[n] {
			return false
		}
	}
	return true
}

// printTree prints spans as a tree, children under their parent in start
// order, each with its kind and main messaging attributes.
func printTree(out io.Writer, spans []sdktrace.ReadOnlySpan) {
	children := map[trace.SpanID][]sdktrace.ReadOnlySpan{}
	known := map[trace.SpanID]bool{}
	for _, s := range spans {
		known[s.SpanContext().SpanID()] = true
	}
	var roots []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if p := s.Parent().SpanID(); s.Parent().IsValid() && known[p] {
			children[p] = append(children[p], s)
		} else {
			roots = append(roots, s)
		}
	}
	byStart := func(l []sdktrace.ReadOnlySpan) {
		sort.Slice(l, func(i, j int) bool { return l[i].StartTime().Before(l[j].StartTime()) })
	}
	var walk func(s sdktrace.ReadOnlySpan, depth int)
	walk = func(s sdktrace.ReadOnlySpan, depth int) {
		fmt.Fprintf(out, "%s%s [%s]%s\n", strings.Repeat("  ", depth), s.Name(),
			strings.ToLower(s.SpanKind().String()), describe(s.Attributes()))
		kids := children[s.SpanContext().SpanID()]
		byStart(kids)
		for _, c := range kids {
			walk(c, depth+1)
		}
	}
	byStart(roots)
	for _, r := range roots {
		fmt.Fprintf(out, "trace %s\n", r.SpanContext().TraceID())
		walk(r, 1)
	}
}

// describe picks the attributes a reader of the tree wants.
func describe(attrs []attribute.KeyValue) string {
	var b strings.Builder
	for _, kv := range attrs {
		switch kv.Key {
		case "messaging.system", "messaging.message.id", "messaging.consumer.group.name", "isobroker.instance.name":
			fmt.Fprintf(&b, " %s=%s", kv.Key, kv.Value.String())
		}
	}
	return b.String()
}
