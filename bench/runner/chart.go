package runner

import (
	"bytes"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// spread is min–max error bars around medians, for horizontal bars.
type spread struct{ med, lo, hi []float64 }

func (s spread) Len() int                        { return len(s.med) }
func (s spread) XY(i int) (float64, float64)     { return s.med[i], float64(i) }
func (s spread) XError(i int) (float64, float64) { return s.med[i] - s.lo[i], s.hi[i] - s.med[i] }

var (
	colRef   = color.RGBA{R: 150, G: 150, B: 150, A: 255}
	colOurs  = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	colOther = color.RGBA{R: 255, G: 127, B: 14, A: 255}
)

// Charts use Liberation Sans (gonum/plot measures text with it); in the
// SVG the family falls back to Arial and Helvetica, which have the same
// metrics, so text fits where those are installed. For wider fallbacks
// (DejaVu Sans is about 15 % wider) the contenders' names get trailing
// spaces (gonum/plot places a name by its measured width including them;
// SVG drops them when rendering, leaving a gap before the axis), the plot
// leaves a margin on its left, caption lines stay short and the value axis
// leaves room right of the longest bar.
const (
	chartFont     = "Liberation"
	chartVariant  = "Sans"
	svgFontFamily = "font-family:Liberation Sans,Arial,Helvetica,sans-serif"
	chartWidth    = 11 * vg.Inch
	leftMargin    = vg.Inch / 2
)

// withSlack pads a contender's name with spaces worth about a fifth of
// its width.
func withSlack(s string) string {
	return s + strings.Repeat(" ", 2+len([]rune(s))/3)
}

func chartFontOf(size vg.Length) font.Font {
	return font.Font{Typeface: chartFont, Variant: chartVariant, Size: size}
}

// writeChart draws f as horizontal bars (median) with min–max whiskers
// and the median written next to each, one bar per measured contender
// (named with its version); the caption names the method, the machine
// and the versions of every contender in the figure. It returns the file
// name, or "" when nothing was measured.
func (b *bench) writeChart(dir string, f *figure) (string, error) {
	if f.line != nil {
		return b.writeLineChart(dir, f)
	}
	var labels, values []string
	var rows []*row
	var sp spread
	for _, r := range f.rows {
		s := summarize(r.values())
		if s.n == 0 {
			continue
		}
		labels = append(labels, withSlack(r.c.chartName()))
		values = append(values, num(s.median))
		rows = append(rows, r)
		sp.med, sp.lo, sp.hi = append(sp.med, s.median), append(sp.lo, s.min), append(sp.hi, s.max)
	}
	if len(rows) == 0 {
		return "", nil
	}
	rounds := fmt.Sprintf("median of %d interleaved rounds, whiskers min–max", maxRounds(f))
	if f.scenario == "5" {
		rounds = "one run per contender"
	}
	p := b.newPlot(f, fmt.Sprintf("%s — %s; %s", f.unit, betterWord(f.higherBetter), rounds))
	p.Y.Tick.Label.Font = chartFontOf(10)
	p.X.Min = 0
	p.X.Max = 1.15 * max(slices.Max(sp.hi), f.target) // room for the value labels
	p.NominalY(labels...)
	for i, r := range rows {
		bar, err := plotter.NewBarChart(plotter.Values{sp.med[i]}, vg.Points(14))
		if err != nil {
			return "", err
		}
		bar.Horizontal = true
		bar.XMin = float64(i)
		bar.LineStyle.Width = 0
		switch {
		case f.ref != nil && r.c == f.ref:
			bar.Color = colRef
		case r.c.ours:
			bar.Color = colOurs
		default:
			bar.Color = colOther
		}
		p.Add(bar)
	}
	eb, err := plotter.NewXErrorBars(sp)
	if err != nil {
		return "", err
	}
	p.Add(eb)
	pts := make(plotter.XYs, len(rows))
	for i := range rows {
		pts[i] = plotter.XY{X: sp.hi[i], Y: float64(i)}
	}
	vl, err := plotter.NewLabels(plotter.XYLabels{XYs: pts, Labels: values})
	if err != nil {
		return "", err
	}
	for i := range vl.TextStyle {
		vl.TextStyle[i].Font = chartFontOf(9)
		vl.TextStyle[i].YAlign = -0.5 // vertically centred on the bar
	}
	vl.Offset = vg.Point{X: vg.Points(4)}
	p.Add(vl)
	if f.target > 0 {
		top := float64(len(rows)) - 0.5
		tl, err := plotter.NewLine(plotter.XYs{{X: f.target, Y: -0.5}, {X: f.target, Y: top}})
		if err != nil {
			return "", err
		}
		tl.LineStyle.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		tl.LineStyle.Color = color.RGBA{R: 200, A: 255}
		p.Add(tl)
		tt, err := plotter.NewLabels(plotter.XYLabels{XYs: plotter.XYs{{X: f.target, Y: top}}, Labels: []string{"target " + num(f.target) + " " + f.unit}})
		if err != nil {
			return "", err
		}
		tt.TextStyle[0].Font = chartFontOf(8)
		tt.TextStyle[0].Color = tl.LineStyle.Color
		tt.Offset = vg.Point{X: vg.Points(3)}
		p.Add(tt)
	}

	return writeSVG(dir, f.id, p, vg.Length(2.1+0.38*float64(len(rows)))*vg.Inch)
}

// writeSVG draws p, chartWidth wide and h high, into dir/stem.svg and
// returns the file name.
func writeSVG(dir, stem string, p *plot.Plot, h vg.Length) (string, error) {
	canvas := vgsvg.New(chartWidth, h)
	p.Draw(draw.Crop(draw.New(canvas), leftMargin, 0, 0, 0))
	var buf bytes.Buffer
	if _, err := canvas.WriteTo(&buf); err != nil {
		return "", err
	}
	svg := strings.ReplaceAll(buf.String(), "font-family:"+chartFont+" "+chartVariant, svgFontFamily)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	name := stem + ".svg"
	if err := os.WriteFile(filepath.Join(dir, name), []byte(svg), 0o644); err != nil {
		return "", err
	}
	return name, nil
}

// newPlot is a chart of f: its title, and under the x axis what the axis
// shows (what), the machine and the versions of the family's contenders.
func (b *bench) newPlot(f *figure, what string) *plot.Plot {
	p := plot.New()
	p.Title.Text = f.title
	p.Title.TextStyle.Font = chartFontOf(11)
	p.X.Label.Text = strings.Join([]string{what, b.mach.chartLines(), b.versionLine(f.family)}, "\n")
	p.X.Label.TextStyle.Font = chartFontOf(9)
	p.X.Tick.Label.Font = chartFontOf(9)
	return p
}

func maxRounds(f *figure) int {
	n := 0
	for _, r := range f.rows {
		n = max(n, len(r.byRound))
	}
	return n
}

// versionLine names the versions of everything in a family's figures.
func (b *bench) versionLine(fam family) string {
	v := b.vers
	if fam == famEventHubs {
		return fmt.Sprintf("isobroker %s · azeventhubs/v2 %s · go-amqp %s\nserver: the isobroker Event Hubs emulator · %s", v.ours, v.azeventhubs, v.goAMQP, b.mach.goVersion)
	}
	return fmt.Sprintf("isobroker %s · amqp091-go %s · watermill %s\nwatermill-amqp %s · RabbitMQ %s · %s", v.ours, v.amqp091, v.watermill, v.watermillAMQP, v.rabbitServer, b.mach.goVersion)
}

func betterWord(higher bool) string {
	if higher {
		return "higher is better"
	}
	return "lower is better"
}
