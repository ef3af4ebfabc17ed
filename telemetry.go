package broker

import (
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Telemetry turns on OpenTelemetry traces, metrics and trace-context
// propagation for one instance (a Broker, a registry, a Watermill
// backend). Its zero value turns everything off, and an instance given no
// Telemetry does no telemetry work at all: nothing here is read from
// OpenTelemetry's global providers.
//
// Spans, metrics and attributes follow the OpenTelemetry messaging
// semantic conventions, version 1.44 (development status): a PRODUCER span
// "send {topic}" per Publish call, a CONSUMER span "process {topic}"
// around each handler call, whose parent is the producer's context carried
// in the message, and a CLIENT span "{ack|nack|...} {topic}" for how the
// adapter settled it. The adapters' documentation lists the attributes
// and metric names.
type Telemetry struct {
	// TracerProvider creates the spans; nil means no spans.
	TracerProvider trace.TracerProvider
	// MeterProvider creates the metrics; nil means no metrics.
	MeterProvider metric.MeterProvider
	// Propagator writes the trace context into published messages' headers
	// and reads it from delivered ones. Nil means W3C Trace Context
	// (traceparent, tracestate) when TracerProvider is set, and no
	// propagation otherwise.
	Propagator propagation.TextMapPropagator
}

// Enabled reports whether t turns anything on.
func (t Telemetry) Enabled() bool {
	return t.TracerProvider != nil || t.MeterProvider != nil || t.Propagator != nil
}
