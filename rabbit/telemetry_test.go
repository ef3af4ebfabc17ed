package rabbit_test

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/driver"
	"github.com/isobroker/broker/internal/oteltest"
	"github.com/isobroker/broker/rabbit"
)

// The RabbitMQ side of telemetry that the conformance suite cannot see:
// what the server really holds in the AMQP headers table, what a raw
// client's headers of other AMQP types do, and the trace of a message
// that the adapter moves (a nacked publish, a delayed retry, a
// dead-lettered copy).

// rawTap is a raw amqp091-go channel with a queue bound to every routing
// key of a topic exchange, declared as the adapter declares it, so that a
// test reads what the server holds, not what the adapter says it sent.
type rawTap struct {
	ch    *amqp.Channel
	queue string
}

func newRawTap(t *testing.T, url, topic string, args amqp.Table) *rawTap {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	tap := &rawTap{ch: ch, queue: topic + ".tap"}
	if err := ch.ExchangeDeclare(topic, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(tap.queue, false, false, false, false, args); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(tap.queue, "#", topic, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = ch.QueueDelete(tap.queue, false, false, false)
		_ = ch.ExchangeDelete(topic, false, false)
	})
	return tap
}

// get takes the next message from the tap, waiting for it up to timeout.
func (tap *rawTap) get(t *testing.T, timeout time.Duration) amqp.Delivery {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		d, ok, err := tap.ch.Get(tap.queue, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing reached %s within %v", tap.queue, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// carried is the span context a delivery's headers carry, read by the
// W3C propagator from the header values as the server holds them.
func carried(t *testing.T, h amqp.Table) trace.SpanContext {
	t.Helper()
	c := propagation.MapCarrier{}
	for _, k := range []string{driver.HeaderTraceParent, driver.HeaderTraceState} {
		if v, ok := h[k]; ok {
			s, isString := v.(string)
			if !isString {
				t.Fatalf("header %s is held as %T, want a string (longstr)", k, v)
			}
			c[k] = s
		}
	}
	return trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), c))
}

func sameSpan(a, b trace.SpanContext) bool {
	return a.TraceID() == b.TraceID() && a.SpanID() == b.SpanID()
}

// TestTelemetryOnTheWire: each published message reaches the server with
// the traceparent of its own send span and the tracestate of the caller's
// context, as strings in the AMQP headers table; the send span names the
// server, the routing key and the message id.
func TestTelemetryOnTheWire(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t)
	ctx := ctxFor(t, 60*time.Second)
	topic := brokertest.RandomName("otelwire")
	tap := newRawTap(t, url, topic, nil)
	rec := oteltest.New(t)
	b := open(t, url, rabbit.WithTelemetry(rec.Telemetry()))

	ts, err := trace.ParseTraceState("vendor=abc")
	if err != nil {
		t.Fatal(err)
	}
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled, TraceState: ts,
	})
	pctx := trace.ContextWithRemoteSpanContext(ctx, parent)
	keys := []string{"orders.eu", "orders.us", "k"}
	for i, k := range keys {
		m := &broker.Message{ID: "wire-" + strconv.Itoa(i), Key: k, Body: []byte("x"),
			Headers: map[string]string{"app": "kept"}}
		if err := b.Publish(pctx, topic, m); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if _, ok := m.Headers[driver.HeaderTraceParent]; ok || len(m.Headers) != 1 {
			t.Errorf("Publish wrote into the caller's headers: %v", m.Headers)
		}
	}
	sends := rec.WaitSpans(t, 10*time.Second, len(keys), oteltest.Named("send "+topic))
	byID := map[string]tracetest.SpanStub{}
	for _, s := range sends {
		id, _ := oteltest.Attr(s, driver.AttrMessageID)
		byID[id] = s
	}
	host, port := hostPort(t, url)
	for i := range keys {
		d := tap.get(t, 10*time.Second)
		send, ok := byID[d.MessageId]
		if !ok {
			t.Fatalf("delivery %q has no send span%s", d.MessageId, oteltest.Describe(rec.Spans()))
		}
		sc := carried(t, d.Headers)
		if !sameSpan(sc, send.SpanContext) {
			t.Errorf("message %d holds traceparent %v, want its send span %s/%s",
				i, d.Headers[driver.HeaderTraceParent], send.SpanContext.TraceID(), send.SpanContext.SpanID())
		}
		if sc.TraceState().Get("vendor") != "abc" {
			t.Errorf("message %d holds tracestate %v, want the caller's vendor=abc", i, d.Headers[driver.HeaderTraceState])
		}
		if send.Parent.SpanID() != parent.SpanID() || send.SpanKind != trace.SpanKindProducer {
			t.Errorf("send span kind %v parent %s, want PRODUCER under the caller's span", send.SpanKind, send.Parent.SpanID())
		}
		if d.Headers["app"] != "kept" {
			t.Errorf("message %d lost the application's header: %v", i, d.Headers)
		}
		wantAttrs(t, send, map[string]string{
			driver.AttrSystem:        rabbit.System,
			driver.AttrDestination:   topic,
			driver.AttrRabbitRouting: d.RoutingKey,
			driver.AttrServerAddress: host,
			driver.AttrServerPort:    port,
		})
		if d.RoutingKey != keys[indexOf(t, d.MessageId)] {
			t.Errorf("message %s routed by %q", d.MessageId, d.RoutingKey)
		}
	}
}

func indexOf(t *testing.T, id string) int {
	t.Helper()
	n, err := strconv.Atoi(id[len("wire-"):])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func hostPort(t *testing.T, raw string) (string, string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Hostname(), u.Port()
}

func wantAttrs(t *testing.T, s tracetest.SpanStub, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got, ok := oteltest.Attr(s, k); !ok || got != v {
			t.Errorf("span %q: %s = %q (present %v), want %q", s.Name, k, got, ok, v)
		}
	}
}

// TestTelemetryRawProducerHeaders: a raw client may write trace headers
// as any AMQP field type. A traceparent as a byte array (what amqp091-go
// sends for []byte) is read like the string it spells; one as a number,
// a table or an empty value parses to nothing: the delivery is handled,
// in a trace of its own, and never fails for it.
func TestTelemetryRawProducerHeaders(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t)
	ctx := ctxFor(t, 60*time.Second)
	topic := brokertest.RandomName("otelraw")
	rec := oteltest.New(t)
	b := open(t, url, rabbit.WithTelemetry(rec.Telemetry()))

	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	cases := map[string]amqp.Table{
		"bytes":  {driver.HeaderTraceParent: []byte(tp), driver.HeaderTraceState: []byte("v=1")},
		"int":    {driver.HeaderTraceParent: int64(42)},
		"table":  {driver.HeaderTraceParent: amqp.Table{"a": "b"}},
		"bool":   {driver.HeaderTraceParent: true, driver.HeaderTraceState: int32(7)},
		"empty":  {driver.HeaderTraceParent: ""},
		"floats": {driver.HeaderTraceParent: 1.5},
	}
	var mu sync.Mutex
	handled := map[string]trace.SpanContext{}
	done := make(chan struct{}, len(cases))
	sub, err := b.Subscribe(ctx, topic, func(ctx context.Context, d *broker.Delivery) error {
		mu.Lock()
		handled[d.Message.ID] = trace.SpanContextFromContext(ctx)
		mu.Unlock()
		done <- struct{}{}
		return nil
	}, broker.Group(brokertest.RandomName("g")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close(context.Background()) })

	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for name, h := range cases {
		if err := ch.PublishWithContext(ctx, topic, "k", false, false, amqp.Publishing{MessageId: name, Headers: h, Body: []byte(name)}); err != nil {
			t.Fatal(err)
		}
	}
	for range cases {
		select {
		case <-done:
		case <-ctx.Done():
			mu.Lock()
			t.Fatalf("handled %d of %d raw deliveries: %v", len(handled), len(cases), handled)
		}
	}
	procs := rec.WaitSpans(t, 10*time.Second, len(cases), oteltest.Named("process "+topic))
	for _, p := range procs {
		if p.Status.Code == codes.Error {
			t.Errorf("process span %v has status error %q", p.Attributes, p.Status.Description)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for name, sc := range handled {
		fromProducer := sc.TraceID().String() == "0af7651916cd43dd8448eb211c80319c"
		if name == "bytes" && !fromProducer {
			t.Errorf("a byte-array traceparent was not read: the handler's trace is %s", sc.TraceID())
		}
		if name != "bytes" && fromProducer {
			t.Errorf("case %s: handler in the producer's trace", name)
		}
		if !sc.IsValid() {
			t.Errorf("case %s: the handler's ctx carries no span", name)
		}
	}
}

// TestTelemetryNackedSend: a publish the server nacks (a full queue with
// x-overflow=reject-publish) ends its send span with status error and
// error.type "nacked", and counts under that error.type.
func TestTelemetryNackedSend(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t)
	ctx := ctxFor(t, 60*time.Second)
	topic := brokertest.RandomName("otelnack")
	newRawTap(t, url, topic, amqp.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"})
	rec := oteltest.New(t)
	b := open(t, url, rabbit.WithTelemetry(rec.Telemetry()))

	if err := b.Publish(ctx, topic, &broker.Message{ID: "fits"}); err != nil {
		t.Fatal(err)
	}
	err := b.Publish(ctx, topic, &broker.Message{ID: "refused"})
	if !errors.Is(err, broker.ErrNacked) {
		t.Fatalf("publish into the full queue = %v, want ErrNacked", err)
	}
	sends := rec.WaitSpans(t, 10*time.Second, 2, oteltest.Named("send "+topic))
	for _, s := range sends {
		id, _ := oteltest.Attr(s, driver.AttrMessageID)
		et, hasType := oteltest.Attr(s, driver.AttrErrorType)
		switch id {
		case "fits":
			if s.Status.Code == codes.Error || hasType {
				t.Errorf("confirmed send span: status %v, error.type %q", s.Status.Code, et)
			}
		case "refused":
			if s.Status.Code != codes.Error || et != "nacked" {
				t.Errorf("nacked send span: status %v, error.type %q; want error, nacked", s.Status.Code, et)
			}
		default:
			t.Errorf("unexpected send span for %q", id)
		}
	}
	rm := rec.Collect(t)
	if n, _ := oteltest.Sum(rm, "messaging.client.sent.messages", map[string]string{driver.AttrErrorType: "nacked"}); n != 1 {
		t.Errorf("sent.messages with error.type nacked = %d, want 1", n)
	}
}

// TestTelemetryTraceSurvivesRetryAndDeadLetter: a message whose handler
// always fails is delayed (RedeliveryDelay), redelivered and finally
// dead-lettered; every process span, the delay and dead_letter settle
// spans are in the producer's trace, and the dead-lettered copy the server
// holds still carries the producer's traceparent.
func TestTelemetryTraceSurvivesRetryAndDeadLetter(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t)
	ctx := ctxFor(t, 90*time.Second)
	topic := brokertest.RandomName("otelretry")
	dead := newRawTap(t, url, broker.DeadLetterTopic(topic), nil)
	rec := oteltest.New(t)
	b := open(t, url, rabbit.WithTelemetry(rec.Telemetry()))

	calls := make(chan struct{}, 8)
	sub, err := b.Subscribe(ctx, topic, func(context.Context, *broker.Delivery) error {
		calls <- struct{}{}
		return errors.New("always fails")
	}, broker.Group(brokertest.RandomName("g")), broker.MaxDeliveries(2), broker.RedeliveryDelay(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close(context.Background()) })
	if err := b.Publish(ctx, topic, &broker.Message{ID: "doomed", Key: "k", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	send := rec.WaitSpan(t, 10*time.Second, "send "+topic)
	held := dead.get(t, 30*time.Second)
	if held.MessageId != "doomed" {
		t.Fatalf("dead-letter topic holds %q", held.MessageId)
	}
	if sc := carried(t, held.Headers); !sameSpan(sc, send.SpanContext) {
		t.Errorf("the dead-lettered copy carries traceparent %v, want the send span's %s/%s",
			held.Headers[driver.HeaderTraceParent], send.SpanContext.TraceID(), send.SpanContext.SpanID())
	}
	procs := rec.WaitSpans(t, 10*time.Second, 2, oteltest.Named("process "+topic))
	rec.WaitSpan(t, 10*time.Second, "delay "+topic)
	rec.WaitSpan(t, 10*time.Second, "dead_letter "+topic)
	for _, s := range rec.Spans() {
		if s.SpanContext.TraceID() != send.SpanContext.TraceID() {
			t.Errorf("span %q left the producer's trace%s", s.Name, oteltest.Describe(rec.Spans()))
		}
	}
	for _, p := range procs {
		if p.Parent.SpanID() != send.SpanContext.SpanID() {
			t.Errorf("process span's parent %s, want the send span %s", p.Parent.SpanID(), send.SpanContext.SpanID())
		}
	}
	if len(calls) != 2 {
		t.Errorf("handler called %d times, want MaxDeliveries = 2", len(calls))
	}
}
