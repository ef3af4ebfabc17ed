// Package oteltest records what an instance's telemetry emits, with the
// OpenTelemetry SDK's in-memory span exporter and a manual metric reader,
// for tests that assert span names, kinds, attributes, parents, links and
// metric points.
package oteltest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/isobroker/broker"
)

// Recorder holds the providers a test hands to an instance and what they
// recorded.
type Recorder struct {
	Exporter *tracetest.InMemoryExporter
	Reader   *sdkmetric.ManualReader
	Tracer   *sdktrace.TracerProvider
	Meter    *sdkmetric.MeterProvider
}

// New returns a Recorder whose providers export every span synchronously
// when it ends; they are shut down when the test ends.
func New(t testing.TB) *Recorder {
	r := &Recorder{Exporter: tracetest.NewInMemoryExporter(), Reader: sdkmetric.NewManualReader()}
	r.Tracer = sdktrace.NewTracerProvider(sdktrace.WithSyncer(r.Exporter), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	r.Meter = sdkmetric.NewMeterProvider(sdkmetric.WithReader(r.Reader))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = r.Tracer.Shutdown(ctx)
		_ = r.Meter.Shutdown(ctx)
	})
	return r
}

// Telemetry is the broker.Telemetry that records into r (the default
// propagator: W3C Trace Context).
func (r *Recorder) Telemetry() broker.Telemetry {
	return broker.Telemetry{TracerProvider: r.Tracer, MeterProvider: r.Meter}
}

// Spans returns the spans that have ended so far.
func (r *Recorder) Spans() tracetest.SpanStubs { return r.Exporter.GetSpans() }

// WaitSpans waits until n ended spans match, up to timeout, and returns
// them; it fails the test, listing every span seen, if they do not come.
func (r *Recorder) WaitSpans(t testing.TB, timeout time.Duration, n int, match func(tracetest.SpanStub) bool) []tracetest.SpanStub {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var got []tracetest.SpanStub
		for _, s := range r.Spans() {
			if match(s) {
				got = append(got, s)
			}
		}
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d matching span(s) after %v, want %d; spans: %s", len(got), timeout, n, Describe(r.Spans()))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// WaitSpan waits for one ended span named name and returns the first.
func (r *Recorder) WaitSpan(t testing.TB, timeout time.Duration, name string) tracetest.SpanStub {
	t.Helper()
	return r.WaitSpans(t, timeout, 1, Named(name))[0]
}

// Named matches spans named name.
func Named(name string) func(tracetest.SpanStub) bool {
	return func(s tracetest.SpanStub) bool { return s.Name == name }
}

// Describe lists spans for failure messages: name, kind, ids, parent.
func Describe(spans tracetest.SpanStubs) string {
	var b strings.Builder
	for _, s := range spans {
		fmt.Fprintf(&b, "\n  %q %v trace=%s span=%s parent=%s", s.Name, s.SpanKind,
			s.SpanContext.TraceID(), s.SpanContext.SpanID(), s.Parent.SpanID())
	}
	return b.String()
}

// Attr returns a span's attribute key as a string ("" and false when
// absent).
func Attr(s tracetest.SpanStub, key string) (string, bool) {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value.String(), true
		}
	}
	return "", false
}

// Collect reads every metric recorded so far.
func (r *Recorder) Collect(t testing.TB) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("collect metrics: %v", err)
	}
	return rm
}

// Metric finds a metric by name (false when none was recorded).
func Metric(rm metricdata.ResourceMetrics, name string) (metricdata.Metrics, bool) {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

// matches reports whether set holds every key=value of want.
func matches(set attribute.Set, want map[string]string) bool {
	for k, v := range want {
		got, ok := set.Value(attribute.Key(k))
		if !ok || got.String() != v {
			return false
		}
	}
	return true
}

// Sum adds up the int64 sum, gauge or float64 histogram count points of
// metric name whose attributes hold want, and reports how many points
// matched.
func Sum(rm metricdata.ResourceMetrics, name string, want map[string]string) (total int64, points int) {
	m, ok := Metric(rm, name)
	if !ok {
		return 0, 0
	}
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			if matches(p.Attributes, want) {
				total += p.Value
				points++
			}
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			if matches(p.Attributes, want) {
				total += p.Value
				points++
			}
		}
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			if matches(p.Attributes, want) {
				total += int64(p.Count)
				points++
			}
		}
	}
	return total, points
}
