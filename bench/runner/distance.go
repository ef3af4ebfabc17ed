package runner

import (
	"context"
	"fmt"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// ---- scenario 8: at a distance ----

// distances are the latencies scenario 8 adds in each direction, in
// milliseconds: a broker in the same region (1 ms each way) and one a
// region away (10 ms each way).
func distances() []int { return []int{1, 10} }

// distancePings is the number of latency samples per end-to-end run at a
// distance (each costs several round trips).
const distancePings = 20

// distanceWorkload is one workload of scenario 8 and the loopback figure
// it repeats.
type distanceWorkload struct {
	id, what string
	loopback string // the id (without family) of the loopback figure of scenarios 1 and 2
	shape    *pubShape
	e2e      bool
}

func distanceWorkloads(fam family) []distanceWorkload {
	ws := []distanceWorkload{
		{id: "publish-1k", what: "confirmed publish, " + pubShapes[0].String(), loopback: "publish-%s-1k", shape: &pubShapes[0]},
		{id: "publish-1k-single", what: "confirmed publish, " + pubShapes[2].String(), loopback: "publish-%s-1k-single", shape: &pubShapes[2]},
		{id: "e2e", what: "end-to-end throughput (publish + consume + ack), 1 KiB", loopback: "e2e-%s", e2e: true},
	}
	if fam == famEventHubs {
		ws = append(ws, distanceWorkload{id: "receive", what: "receive throughput, draining a pre-filled hub", loopback: "receive-%s"})
	}
	return ws
}

// distanceFigID names the figure of workload w of family fam at ms.
func distanceFigID(fam family, w distanceWorkload, ms int) string {
	return fmt.Sprintf("distance-%s-%s-%dms", famID(fam), w.id, ms)
}

// scenarioDistance repeats the publish, end-to-end and receive runs with
// every contender's connections through a proxy that adds latency in each
// direction. The servers' admin work (declaring sinks, filling hubs)
// takes the direct path except the SDK filler, which dials what the
// contenders dial.
func (b *bench) scenarioDistance(ctx context.Context) error {
	px, err := startProxyChild()
	if err != nil {
		return err
	}
	defer px.stop()
	for _, ms := range distances() {
		rabbitAddr, err := px.open(b.env.addr, ms)
		if err != nil {
			return err
		}
		b.env.through = "amqp://guest:guest@" + rabbitAddr + "/"
		var emuAddr string // the proxy in front of the current emulator child
		b.emu.setThrough(func(upstream string) (string, error) {
			if emuAddr != "" {
				px.close(emuAddr)
			}
			addr, err := px.open(upstream, ms)
			emuAddr = addr
			return addr, err
		})
		err = b.distanceRounds(ctx, ms)
		b.env.through = ""
		b.emu.setThrough(nil)
		px.close(rabbitAddr)
		if emuAddr != "" {
			px.close(emuAddr)
		}
		if err != nil {
			return err
		}
	}
	b.distanceCharts()
	return nil
}

func (b *bench) distanceRounds(ctx context.Context, ms int) error {
	for _, fam := range []family{famRabbit, famEventHubs} {
		cs := without(b.contenders(fam), "raw-each")
		ws := distanceWorkloads(fam)
		figs := make([]*figure, len(ws))
		for i, w := range ws {
			unit := "msg/s"
			figs[i] = newFigure("8", distanceFigID(fam, w, ms), fmt.Sprintf("%s, %d ms each way (%d ms round trip): %s", fam, ms, 2*ms, w.what), unit, true, fam, cs[0], cs)
			figs[i].chart = false
		}
		for r := range b.p.distanceRounds {
			for _, c := range rotate(b.runnable(cs), r) {
				for i, w := range ws {
					v, err := b.distanceRun(ctx, c, w)
					if err != nil {
						b.logf("  %s %s at %d ms round %d: %v", c.key, w.id, ms, r, err)
						figs[i].fail(c, err)
						continue
					}
					figs[i].add(c, r, v)
				}
			}
		}
		b.figs = append(b.figs, figs...)
	}
	return nil
}

// distanceRun runs workload w once for c and returns its throughput.
func (b *bench) distanceRun(ctx context.Context, c *contender, w distanceWorkload) (float64, error) {
	switch {
	case w.shape != nil:
		res, err := b.publishRun(ctx, c, *w.shape)
		return res.rate, err
	case w.e2e:
		res, err := b.e2eRun(ctx, c, distancePings)
		return res.rate, err
	default:
		return b.receiveRun(ctx, c)
	}
}

// distanceCharts adds, per family and workload, a chart of throughput
// against round-trip time: loopback (scenarios 1 and 2) and each
// distance.
func (b *bench) distanceCharts() {
	for _, fam := range []family{famRabbit, famEventHubs} {
		for _, w := range distanceWorkloads(fam) {
			series := &lineSpec{xs: []float64{0}, figs: []*figure{b.fig(fmt.Sprintf(w.loopback, famID(fam)))}}
			for _, ms := range distances() {
				series.xs = append(series.xs, float64(2*ms))
				series.figs = append(series.figs, b.fig(distanceFigID(fam, w, ms)))
			}
			cs := without(b.contenders(fam), "raw-each")
			f := newFigure("8", fmt.Sprintf("distance-%s-%s", famID(fam), w.id), fmt.Sprintf("%s: %s against round-trip time", fam, w.what), "msg/s", true, fam, cs[0], cs)
			f.line = series
			b.figs = append(b.figs, f)
		}
	}
}

// lineSpec makes a figure a line chart: the median of each contender in
// figs[i], at x = xs[i] (round-trip time, ms). A nil figure (a scenario
// that did not run) leaves its point out.
type lineSpec struct {
	xs   []float64
	figs []*figure
}

// writeLineChart draws f.line: one line per contender, throughput on a
// logarithmic axis against round-trip time.
func (b *bench) writeLineChart(dir string, f *figure) (string, error) {
	p := b.newPlot(f, fmt.Sprintf("round-trip time added by the proxy, ms (0: loopback) — %s, median of interleaved rounds; %s", f.unit, betterWord(f.higherBetter)))
	p.Y.Tick.Label.Font = chartFontOf(9)
	p.Y.Label.Text = f.unit
	p.Y.Label.TextStyle.Font = chartFontOf(9)
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = true
	p.Legend.TextStyle.Font = chartFontOf(9)
	drawn := 0
	for i, r := range f.rows {
		var pts plotter.XYs
		for j, fig := range f.line.figs {
			if s := summarize(fig.get(r.c).values()); s.n > 0 && s.median > 0 {
				pts = append(pts, plotter.XY{X: f.line.xs[j], Y: s.median})
			}
		}
		if len(pts) == 0 {
			continue
		}
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			return "", err
		}
		col := plotutil.Color(i)
		l.LineStyle.Color, sc.Color = col, col
		l.LineStyle.Width = vg.Points(1.5)
		if r.c.ours {
			l.LineStyle.Width = vg.Points(2.5)
		} else {
			l.LineStyle.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		}
		p.Add(l, sc)
		p.Legend.Add(r.c.chartName(), l, sc)
		drawn++
	}
	if drawn == 0 {
		return "", nil
	}
	return writeSVG(dir, f.id, p, 5*vg.Inch)
}

// writeLineTable is a line chart's table: each contender's median at
// every round-trip time, and its ratio to the reference there.
func (b *bench) writeLineTable(md *strings.Builder, f *figure) {
	w := func(format string, args ...any) { fmt.Fprintf(md, format, args...) }
	w("| contender |")
	for _, x := range f.line.xs {
		if x == 0 {
			w(" loopback: median %s (÷ %s) |", f.unit, f.ref.short)
		} else {
			w(" %s ms round trip |", num(x))
		}
	}
	w("\n|---|%s\n", strings.Repeat("---|", len(f.line.xs)))
	for _, r := range f.rows {
		w("| %s |", r.c.label)
		for _, fig := range f.line.figs {
			s := summarize(fig.get(r.c).values())
			if s.n == 0 {
				w(" — |")
				continue
			}
			w(" %s", num(s.median))
			if pr := ratioOf(fig, r.c, f.ref); pr.rounds.n > 0 && r.c != f.ref {
				w(" (%.2f×)", pr.value)
			}
			w(" |")
		}
		w("\n")
	}
}
