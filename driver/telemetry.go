package driver

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/isobroker/broker"
)

// ScopeName is the OpenTelemetry instrumentation scope of every tracer and
// meter isobroker creates.
const ScopeName = "github.com/isobroker/broker"

// Attribute keys of the OpenTelemetry messaging semantic conventions
// (version 1.44) that isobroker sets, and the ones of its own.
const (
	AttrSystem          = "messaging.system"
	AttrDestination     = "messaging.destination.name"
	AttrOperationType   = "messaging.operation.type"
	AttrOperationName   = "messaging.operation.name"
	AttrMessageID       = "messaging.message.id"
	AttrConsumerGroup   = "messaging.consumer.group.name"
	AttrPartition       = "messaging.destination.partition.id"
	AttrBatchCount      = "messaging.batch.message_count"
	AttrRabbitRouting   = "messaging.rabbitmq.destination.routing_key"
	AttrEnqueuedTime    = "messaging.eventhubs.message.enqueued_time"
	AttrServerAddress   = "server.address"
	AttrServerPort      = "server.port"
	AttrErrorType       = "error.type"
	AttrInstance        = "isobroker.instance.name"
	AttrState           = "isobroker.state"
	AttrDeliveryCount   = "isobroker.message.delivery_count"
	AttrPreviousState   = "isobroker.state.previous"
	AttrReconnectReason = "isobroker.reconnect.reason"
)

// Metric names: the four of the messaging conventions, then isobroker's
// own (documented in the README's Telemetry section).
const (
	MetricOperationDuration = "messaging.client.operation.duration"
	MetricSentMessages      = "messaging.client.sent.messages"
	MetricConsumedMessages  = "messaging.client.consumed.messages"
	MetricProcessDuration   = "messaging.process.duration"
	MetricState             = "isobroker.client.state"
	MetricReconnects        = "isobroker.client.reconnects"
	MetricPublishInFlight   = "isobroker.client.publish.in_flight"
)

// Names of the span and events isobroker records for a recovery.
const (
	SpanRecover       = "isobroker.recover"
	EventStateChange  = "isobroker.state_change"
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"
	// HeaderDiagnosticID is the Azure SDKs' older carrier of the
	// traceparent value, written and read on Event Hubs.
	HeaderDiagnosticID = "Diagnostic-Id"
)

// InstrumentsConfig describes the instance an Instruments serves.
type InstrumentsConfig struct {
	// System is messaging.system: "rabbitmq", "eventhubs", "isobroker.mem".
	System string
	// Instance is the instance's name ("" for unnamed instances).
	Instance string
	// ServerAddress and ServerPort are the server the instance talks to
	// (empty and 0 for in-process brokers).
	ServerAddress string
	ServerPort    int
	// KeyAttribute is the attribute that carries Message.Key on spans
	// (AttrRabbitRouting for RabbitMQ; "" for none).
	KeyAttribute string
	// DiagnosticID makes the carrier write HeaderDiagnosticID next to
	// traceparent and read it when traceparent is absent, as the Azure
	// SDKs do.
	DiagnosticID bool
	// EnqueuedTime sets AttrEnqueuedTime on process spans (Event Hubs).
	EnqueuedTime bool
}

// Instruments is an adapter's OpenTelemetry instrumentation: the spans,
// metrics and trace-context propagation that broker.Telemetry turns on.
// A nil *Instruments is valid and does nothing, which is what an adapter
// holds when its user gave no Telemetry: every method returns at once.
// It is safe for concurrent use and never blocks on anything but the
// OpenTelemetry SDK's own calls.
type Instruments struct {
	cfg    InstrumentsConfig
	tracer trace.Tracer                  // nil: no spans
	prop   propagation.TextMapPropagator // nil: no propagation
	base   []attribute.KeyValue          // system, instance and server

	opDuration      metric.Float64Histogram
	processDuration metric.Float64Histogram
	sent, consumed  metric.Int64Counter
	reconnects      metric.Int64Counter
	inFlight        metric.Int64UpDownCounter
	baseSet         metric.MeasurementOption // base as a metric attribute set
	metrics         bool

	ops  sync.Map     // opKey → *opAttrs
	nops atomic.Int64 // entries in ops

	state    atomic.Int32 // the instance's broker.State, for the gauge
	stateReg metric.Registration

	mu       sync.Mutex
	recovery trace.Span // the running recovery span, or nil
}

// NewInstruments returns the instrumentation t asks for, or nil when t
// turns nothing on. Metric instruments that cannot be created make it
// fail with an error wrapping broker.ErrInvalidOption.
func NewInstruments(t broker.Telemetry, c InstrumentsConfig) (*Instruments, error) {
	if !t.Enabled() {
		return nil, nil
	}
	in := &Instruments{cfg: c, prop: t.Propagator}
	in.base = append(in.base, attribute.String(AttrSystem, c.System))
	if c.Instance != "" {
		in.base = append(in.base, attribute.String(AttrInstance, c.Instance))
	}
	if c.ServerAddress != "" {
		in.base = append(in.base, attribute.String(AttrServerAddress, c.ServerAddress))
		if c.ServerPort > 0 {
			in.base = append(in.base, attribute.Int(AttrServerPort, c.ServerPort))
		}
	}
	if t.TracerProvider != nil {
		in.tracer = t.TracerProvider.Tracer(ScopeName)
		if in.prop == nil {
			in.prop = propagation.TraceContext{}
		}
	}
	if t.MeterProvider != nil {
		if err := in.makeMetrics(t.MeterProvider.Meter(ScopeName)); err != nil {
			return nil, fmt.Errorf("%w: telemetry: %w", broker.ErrInvalidOption, err)
		}
	}
	return in, nil
}

func (in *Instruments) makeMetrics(m metric.Meter) error {
	var errs [7]error
	in.opDuration, errs[0] = m.Float64Histogram(MetricOperationDuration, metric.WithUnit("s"),
		metric.WithDescription("Duration of messaging operations initiated by a producer or consumer client."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10))
	in.processDuration, errs[1] = m.Float64Histogram(MetricProcessDuration, metric.WithUnit("s"),
		metric.WithDescription("Duration of processing operations (handler calls)."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10))
	in.sent, errs[2] = m.Int64Counter(MetricSentMessages, metric.WithUnit("{message}"),
		metric.WithDescription("Number of messages the producer attempted to send."))
	in.consumed, errs[3] = m.Int64Counter(MetricConsumedMessages, metric.WithUnit("{message}"),
		metric.WithDescription("Number of messages delivered to the application."))
	in.reconnects, errs[4] = m.Int64Counter(MetricReconnects, metric.WithUnit("{reconnect}"),
		metric.WithDescription("Number of times the instance recovered its connection."))
	in.inFlight, errs[5] = m.Int64UpDownCounter(MetricPublishInFlight, metric.WithUnit("{message}"),
		metric.WithDescription("Messages of Publish calls that have not returned yet."))
	var gauge metric.Int64ObservableGauge
	gauge, errs[6] = m.Int64ObservableGauge(MetricState, metric.WithUnit("1"),
		metric.WithDescription("The instance's connection state: 1 for the current state, attribute isobroker.state."))
	if err := errors.Join(errs[:]...); err != nil {
		return err
	}
	attrs := make([]attribute.Set, broker.StateClosed+1)
	for s := range attrs {
		kvs := append(append([]attribute.KeyValue(nil), in.base...), attribute.String(AttrState, broker.State(s).String()))
		attrs[s] = attribute.NewSet(kvs...)
	}
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := in.state.Load()
		for i := range attrs {
			v := int64(0)
			if int32(i) == s {
				v = 1
			}
			o.ObserveInt64(gauge, v, metric.WithAttributeSet(attrs[i]))
		}
		return nil
	}, gauge)
	if err != nil {
		return err
	}
	in.stateReg = reg
	in.baseSet = metric.WithAttributeSet(attribute.NewSet(in.base...))
	in.metrics = true
	return nil
}

// Track follows t's state changes: the state gauge, the reconnect
// counter, and a recovery span (SpanRecover) from the loss of the
// connection until it is back, with an event (EventStateChange) for each
// change. It stops, and releases the gauge, at broker.StateClosed. Call
// it once, right after creating the tracker.
func (in *Instruments) Track(t *StateTracker) {
	if in == nil {
		return
	}
	in.state.Store(int32(t.State()))
	t.setHook(in.stateChanged)
}

// stateChanged runs under the tracker's lock, in the order of the changes.
func (in *Instruments) stateChanged(c broker.StateChange) {
	in.state.Store(int32(c.To))
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.tracer != nil {
		if in.recovery == nil && c.To == broker.StateReconnecting {
			_, in.recovery = in.tracer.Start(context.Background(), SpanRecover,
				trace.WithSpanKind(trace.SpanKindInternal), trace.WithTimestamp(c.At),
				trace.WithAttributes(in.base...))
		}
		if in.recovery != nil {
			attrs := []attribute.KeyValue{
				attribute.String(AttrPreviousState, c.From.String()),
				attribute.String(AttrState, c.To.String()),
			}
			if c.Err != nil {
				attrs = append(attrs, attribute.String(AttrReconnectReason, ErrorType(c.Err)))
			}
			in.recovery.AddEvent(EventStateChange, trace.WithTimestamp(c.At), trace.WithAttributes(attrs...))
			switch c.To {
			case broker.StateConnected:
				in.recovery.End(trace.WithTimestamp(c.At))
				in.recovery = nil
			case broker.StateClosed:
				in.recovery.SetStatus(codes.Error, "closed before the connection was recovered")
				in.recovery.End(trace.WithTimestamp(c.At))
				in.recovery = nil
			}
		}
	}
	if in.metrics {
		if c.From == broker.StateReconnecting && c.To == broker.StateConnected {
			in.reconnects.Add(context.Background(), 1, metric.WithAttributes(in.base...))
		}
		if c.To == broker.StateClosed && in.stateReg != nil {
			_ = in.stateReg.Unregister()
			in.stateReg = nil
		}
	}
}

// Port parses a port for InstrumentsConfig.ServerPort (0 when it does not
// parse).
func Port(s string) int {
	p, err := strconv.Atoi(s)
	if err != nil || p < 0 || p > 65535 {
		return 0
	}
	return p
}
