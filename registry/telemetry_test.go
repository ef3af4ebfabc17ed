package registry_test

import (
	"context"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
	"github.com/isobroker/broker/internal/oteltest"
	"github.com/isobroker/broker/mem"
	"github.com/isobroker/broker/registry"
)

// WithTelemetry reaches the brokers the registry opens, built-in schemes
// and registered Openers alike; a registry without it opens brokers
// without telemetry.
func TestWithTelemetryReachesOpeners(t *testing.T) {
	ctx := context.Background()
	rec := oteltest.New(t)
	var got broker.Telemetry
	r := registry.New(registry.WithTelemetry(rec.Telemetry()))
	r.Register("custom", func(_ context.Context, _ string, oc registry.OpenConfig) (broker.Broker, error) {
		got = oc.Telemetry
		return mem.New(mem.WithTelemetry(oc.Telemetry))
	})
	b, err := r.OpenNamed(ctx, "orders", "mem://")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	if err := b.Publish(ctx, "t", &broker.Message{ID: "1"}); err != nil {
		t.Fatal(err)
	}
	sp := rec.WaitSpan(t, 5*time.Second, "send t")
	if v, _ := oteltest.Attr(sp, driver.AttrInstance); v != "orders" {
		t.Errorf("send span's %s = %q, want the registry name %q", driver.AttrInstance, v, "orders")
	}
	c, err := r.Open(ctx, "custom://x")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if got.TracerProvider != rec.Tracer || got.MeterProvider != rec.Meter {
		t.Errorf("Opener got Telemetry %+v, want the registry's", got)
	}

}
