package runner

import (
	"context"
	"errors"
	"fmt"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/rabbit"
)

// ---- scenario 7: the cost of telemetry ----

// telemetryPipeline is what an application with OpenTelemetry on would
// hand an instance: every span sampled and exported in batches (to an
// exporter that drops them, so that no collector's cost is counted), and
// metrics aggregated for a reader.
type telemetryPipeline struct {
	tp *sdktrace.TracerProvider
	mp *sdkmetric.MeterProvider
}

func newTelemetryPipeline() *telemetryPipeline {
	return &telemetryPipeline{
		tp: sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()),
			sdktrace.WithBatcher(discardExporter{})),
		mp: sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())),
	}
}

func (p *telemetryPipeline) telemetry() broker.Telemetry {
	return broker.Telemetry{TracerProvider: p.tp, MeterProvider: p.mp}
}

func (p *telemetryPipeline) shutdown(ctx context.Context) error {
	return errors.Join(p.tp.Shutdown(ctx), p.mp.Shutdown(ctx))
}

// discardExporter drops every span it is given.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

// tracedClient is a contender's client whose close also shuts its
// telemetry pipeline down.
type tracedClient struct {
	client
	p *telemetryPipeline
}

func (c tracedClient) close(ctx context.Context) error {
	return errors.Join(c.client.close(ctx), c.p.shutdown(ctx))
}

// tracedContenders are our adapters with tracing and metrics on, compared
// in scenario 7 with the same adapters off.
func tracedContenders(v versions, emu *emulatorProc, ehReady bool) []*contender {
	r := &contender{key: "rabbit-traced", label: "isobroker/rabbit " + v.ours + ", tracing and metrics on",
		short: "isobroker rabbit, telemetry on", chart: "isobroker/rabbit, telemetry on", family: famRabbit, style: exchangeStyle, ours: true,
		open: func(ctx context.Context, url string) (client, error) {
			p := newTelemetryPipeline()
			c, err := openOurRabbit(ctx, url, rabbit.WithTelemetry(p.telemetry()))
			if err != nil {
				return nil, errors.Join(err, p.shutdown(ctx))
			}
			return tracedClient{client: c, p: p}, nil
		}}
	e := &contender{key: "eh-traced", label: "isobroker/eventhubs " + v.ours + ", tracing and metrics on",
		short: "isobroker eventhubs, telemetry on", chart: "isobroker/eventhubs, telemetry on", family: famEventHubs, ours: true,
		open: func(ctx context.Context, url string) (client, error) {
			p := newTelemetryPipeline()
			c, err := openOurEventHubs(emu, []eventhubs.Option{eventhubs.WithTelemetry(p.telemetry())})(ctx, url)
			if err != nil {
				return nil, errors.Join(err, p.shutdown(ctx))
			}
			return tracedClient{client: c, p: p}, nil
		}}
	if !ehReady {
		e.notReady = "not measured: adapter not ready"
	}
	return []*contender{r, e}
}

// scenarioTelemetry measures publish (batched, and single messages from
// 16 callers) and end-to-end throughput of each adapter with telemetry on,
// against the same adapter off (the reference of its figures).
func (b *bench) scenarioTelemetry(ctx context.Context) error {
	for _, fam := range []family{famRabbit, famEventHubs} {
		off := b.contender("rabbit")
		if fam == famEventHubs {
			off = b.contender("eh-ours")
		}
		var on *contender
		for _, c := range b.tracedCs {
			if c.family == fam {
				on = c
			}
		}
		cs := []*contender{off, on}
		shapes := []pubShape{pubShapes[0], pubShapes[2]}
		pubFigs := make([]*figure, len(shapes))
		for i, sh := range shapes {
			pubFigs[i] = newFigure("7", fmt.Sprintf("telemetry-publish-%s-%s", famID(fam), sh.id),
				fmt.Sprintf("%s: confirmed publish throughput with telemetry on and off, %s", fam, sh), "msg/s", true, fam, off, cs)
		}
		e2e := newFigure("7", "telemetry-e2e-"+famID(fam),
			fmt.Sprintf("%s: end-to-end throughput with telemetry on and off, 1 KiB", fam), "msg/s", true, fam, off, cs)
		for r := range b.p.rounds {
			for _, c := range rotate(b.runnable(cs), r) {
				for i, sh := range shapes {
					res, err := b.publishRun(ctx, c, sh)
					if err != nil {
						b.logf("  %s telemetry %s round %d: %v", c.key, sh.id, r, err)
						pubFigs[i].fail(c, err)
						continue
					}
					pubFigs[i].add(c, r, res.rate)
				}
				res, err := b.e2eRun(ctx, c, b.p.pings)
				if err != nil {
					b.logf("  %s telemetry e2e round %d: %v", c.key, r, err)
					e2e.fail(c, err)
					continue
				}
				e2e.add(c, r, res.rate)
			}
		}
		b.figs = append(b.figs, pubFigs...)
		b.figs = append(b.figs, e2e)
	}
	return nil
}
