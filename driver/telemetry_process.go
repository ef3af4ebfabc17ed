package driver

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/isobroker/broker"
)

// Processing is one handler call under instrumentation: the CONSUMER
// span "process {topic}" and its metrics. The adapter ends it by
// recording how it settled the message (Settled) or, where it settles
// later or not per message, with End. The zero Processing (no
// instrumentation) does nothing.
type Processing struct {
	in    *Instruments
	span  trace.Span
	ctx   context.Context // the span's context
	start time.Time
	key   opKey    // the process operation's
	attrs *opAttrs // of key
}

// startProcess extracts the producer's context from d's headers and starts
// the process span of a call in consumer group group, whose context
// (returned) the handler gets. A header
// that does not parse is ignored: the span then starts a new trace.
func (in *Instruments) startProcess(ctx context.Context, d *broker.Delivery, group string) (context.Context, Processing) {
	p := Processing{in: in, start: time.Now(), key: opKey{topic: d.Metadata.Topic, typ: "process", name: "process",
		group: group, partition: d.Metadata.Partition}}
	p.attrs = in.op(p.key)
	if in.prop != nil && len(d.Headers) > 0 {
		ctx = in.prop.Extract(ctx, in.carrier(d.Headers))
	}
	if in.tracer != nil {
		extra := in.messageAttrs(make([]attribute.KeyValue, 0, 4), d.Message)
		if d.Metadata.DeliveryCount > 0 {
			extra = append(extra, attribute.Int(AttrDeliveryCount, d.Metadata.DeliveryCount))
		}
		if in.cfg.EnqueuedTime && !d.Metadata.EnqueuedAt.IsZero() {
			extra = append(extra, attribute.Int64(AttrEnqueuedTime, d.Metadata.EnqueuedAt.Unix()))
		}
		opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithTimestamp(p.start), trace.WithAttributes(p.attrs.kvs...), trace.WithAttributes(extra...)}
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
		}
		ctx, p.span = in.tracer.Start(ctx, "process "+p.key.topic, opts...)
	}
	p.ctx = ctx
	return ctx, p
}

// handled records the handler's end: its error on the span, the process
// duration and the consumed message.
func (p Processing) handled(err error) {
	if p.in == nil {
		return
	}
	errType := ""
	if err != nil {
		errType = handlerErrorType(err)
	}
	if p.span != nil && err != nil {
		p.span.RecordError(err)
		p.span.SetStatus(codes.Error, "handler failed")
		p.span.SetAttributes(attribute.String(AttrErrorType, errType))
	}
	if p.in.metrics {
		set := p.attrs.measure(errType)
		p.in.processDuration.Record(p.ctx, time.Since(p.start).Seconds(), set)
		p.in.consumed.Add(p.ctx, 1, set)
	}
}

// SettleStart is when a settlement begins: time.Now() under
// instrumentation, the zero time otherwise (so that an uninstrumented
// adapter pays nothing).
func (p Processing) SettleStart() time.Time {
	if p.in == nil {
		return time.Time{}
	}
	return time.Now()
}

// Settled records that the adapter settled the message with operation op
// ("ack", "nack", "dead_letter", "delay", "checkpoint"...) from began
// (SettleStart) until now, failing with err if not nil: a CLIENT span
// "{op} {topic}" child of the process span, and the operation's duration.
// Then it ends the process span. Call it (or End) once.
func (p Processing) Settled(op string, began time.Time, err error) {
	if p.in == nil {
		return
	}
	now := time.Now()
	k := p.key
	k.typ, k.name = "settle", op
	a := p.in.op(k)
	if p.in.tracer != nil {
		_, s := p.in.tracer.Start(p.ctx, op+" "+k.topic, trace.WithSpanKind(trace.SpanKindClient),
			trace.WithTimestamp(began), trace.WithAttributes(a.kvs...))
		endSpanAt(s, err, now)
	}
	if p.in.metrics {
		p.in.opDuration.Record(p.ctx, now.Sub(began).Seconds(), a.measure(errorTypeOf(err)))
	}
	p.End()
}

// Within returns ctx carrying the process span as the current span (ctx
// itself without instrumentation), for what the adapter sends while
// settling — a dead-letter copy published under it is a child of the
// process span, not a trace of its own. ctx keeps its own deadline and
// cancellation.
func (p Processing) Within(ctx context.Context) context.Context {
	if p.span == nil {
		return ctx
	}
	return trace.ContextWithSpan(ctx, p.span)
}

// End ends the process span without recording a settlement.
func (p Processing) End() {
	if p.span != nil {
		p.span.End()
	}
}
