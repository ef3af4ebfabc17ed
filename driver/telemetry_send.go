package driver

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/isobroker/broker"
)

// Publish runs publish, the adapter's own Publish, as one send operation:
// a PRODUCER span "send {topic}" that is the parent of publish's ctx,
// the operation's metrics, and the trace context written into the headers
// of copies of msgs (a message whose headers already carry one keeps it,
// and the span links to it). msgs are never modified.
func (in *Instruments) Publish(ctx context.Context, topic string, msgs []*broker.Message,
	publish func(context.Context, string, ...*broker.Message) error) error {
	start := time.Now()
	n := int64(len(msgs))
	if in.metrics {
		in.inFlight.Add(ctx, n, in.baseSet)
	}
	a := in.op(opKey{topic: topic, typ: "send", name: "send"})
	var span trace.Span
	if in.tracer != nil {
		var extra []attribute.KeyValue
		if len(msgs) > 1 {
			extra = append(extra, attribute.Int(AttrBatchCount, len(msgs)))
		}
		if len(msgs) == 1 && msgs[0] != nil {
			extra = in.messageAttrs(extra, msgs[0])
		}
		ctx, span = in.tracer.Start(ctx, "send "+topic, trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithTimestamp(start), trace.WithAttributes(a.kvs...), trace.WithAttributes(extra...),
			trace.WithLinks(in.carriedLinks(msgs)...))
	}
	err := publish(ctx, topic, in.inject(ctx, msgs)...)
	if in.metrics {
		set := a.measure(errorTypeOf(err))
		in.opDuration.Record(ctx, time.Since(start).Seconds(), set)
		in.sent.Add(ctx, n, set)
		in.inFlight.Add(ctx, -n, in.baseSet)
	}
	if span != nil {
		endSpan(span, err)
	}
	return err
}

// errorTypeOf is ErrorType, or "" for nil.
func errorTypeOf(err error) string {
	if err == nil {
		return ""
	}
	return ErrorType(err)
}

// messageAttrs adds one message's id and key.
func (in *Instruments) messageAttrs(attrs []attribute.KeyValue, m *broker.Message) []attribute.KeyValue {
	if m.ID != "" {
		attrs = append(attrs, attribute.String(AttrMessageID, m.ID))
	}
	if in.cfg.KeyAttribute != "" && m.Key != "" {
		attrs = append(attrs, attribute.String(in.cfg.KeyAttribute, m.Key))
	}
	return attrs
}

// carriedLinks links to the trace contexts messages already carry.
func (in *Instruments) carriedLinks(msgs []*broker.Message) []trace.Link {
	if in.prop == nil {
		return nil
	}
	var links []trace.Link
	for _, m := range msgs {
		if m == nil || !in.carries(m.Headers) {
			continue
		}
		sc := trace.SpanContextFromContext(in.prop.Extract(context.Background(), in.carrier(m.Headers)))
		if sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	return links
}

// carries reports whether h holds any field the propagator writes (or
// Diagnostic-Id where it is read): such a message keeps its own context.
func (in *Instruments) carries(h map[string]string) bool {
	if len(h) == 0 {
		return false
	}
	for _, f := range in.prop.Fields() {
		if _, ok := h[f]; ok {
			return true
		}
	}
	if in.cfg.DiagnosticID {
		_, ok := h[HeaderDiagnosticID]
		return ok
	}
	return false
}

// inject returns msgs with ctx's trace context in their headers: copies
// for the messages that get it, the originals for the others.
func (in *Instruments) inject(ctx context.Context, msgs []*broker.Message) []*broker.Message {
	if in.prop == nil {
		return msgs
	}
	fields := propagation.MapCarrier{}
	in.prop.Inject(ctx, fields)
	if len(fields) == 0 {
		return msgs
	}
	if tp, ok := fields[HeaderTraceParent]; ok && in.cfg.DiagnosticID {
		fields[HeaderDiagnosticID] = tp
	}
	out := make([]*broker.Message, len(msgs))
	for i, m := range msgs {
		if m == nil || in.carries(m.Headers) {
			out[i] = m
			continue
		}
		c := *m
		c.Headers = make(map[string]string, len(m.Headers)+len(fields))
		for k, v := range m.Headers {
			c.Headers[k] = v
		}
		for k, v := range fields {
			c.Headers[k] = v
		}
		out[i] = &c
	}
	return out
}

// headerCarrier reads and writes a message's headers; with Diagnostic-Id
// on, a missing traceparent is read from Diagnostic-Id.
type headerCarrier struct {
	h            map[string]string
	diagnosticID bool
}

func (c headerCarrier) Get(key string) string {
	v, ok := c.h[key]
	if !ok && c.diagnosticID && key == HeaderTraceParent {
		return c.h[HeaderDiagnosticID]
	}
	return v
}

func (c headerCarrier) Set(key, value string) { c.h[key] = value }

func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c.h))
	for k := range c.h {
		keys = append(keys, k)
	}
	return keys
}

func (in *Instruments) carrier(h map[string]string) propagation.TextMapCarrier {
	return headerCarrier{h: h, diagnosticID: in.cfg.DiagnosticID}
}

func endSpan(s trace.Span, err error) { endSpanAt(s, err, time.Now()) }

func endSpanAt(s trace.Span, err error, at time.Time) {
	if err != nil {
		s.RecordError(err, trace.WithTimestamp(at))
		s.SetStatus(codes.Error, err.Error())
		s.SetAttributes(attribute.String(AttrErrorType, ErrorType(err)))
	}
	s.End(trace.WithTimestamp(at))
}
