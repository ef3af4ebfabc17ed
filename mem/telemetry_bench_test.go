package mem_test

import (
	"context"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/mem"
)

// BenchmarkPublishTelemetry: one 1 KiB message per Publish to a topic
// with one group queue that a handler drains, with telemetry off and on
// (every span sampled, batch-exported to nowhere; metrics aggregated).
func BenchmarkPublishTelemetry(b *testing.B) {
	for _, tc := range []struct {
		name string
		tel  func(b *testing.B) broker.Telemetry
	}{
		{"off", func(*testing.B) broker.Telemetry { return broker.Telemetry{} }},
		{"on", func(b *testing.B) broker.Telemetry {
			tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(nopExporter{}))
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
			b.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
			return broker.Telemetry{TracerProvider: tp, MeterProvider: mp}
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			br, err := mem.New(mem.WithTelemetry(tc.tel(b)))
			if err != nil {
				b.Fatal(err)
			}
			defer br.Close(context.Background())
			ctx := context.Background()
			sub, err := br.Subscribe(ctx, "t", func(context.Context, *broker.Delivery) error { return nil }, broker.Group("g"))
			if err != nil {
				b.Fatal(err)
			}
			defer sub.Close(ctx)
			m := &broker.Message{ID: "id", Body: make([]byte, 1024)}
			b.ReportAllocs()
			for b.Loop() {
				if err := br.Publish(ctx, "t", m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type nopExporter struct{}

func (nopExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (nopExporter) Shutdown(context.Context) error                             { return nil }
