package runner

import (
	"math"
	"slices"
)

// figure is one measured quantity for a set of contenders over rounds.
type figure struct {
	id           string // chart file stem
	scenario     string
	title        string
	unit         string
	higherBetter bool
	family       family
	ref          *contender // ratios are against it (same round); nil: no ratios
	rows         []*row
	chart        bool
	target       float64   // > 0: drawn as a dashed line in the chart
	line         *lineSpec // non-nil: a line chart over other figures (distance.go), its rows the lines
}

type row struct {
	c       *contender
	byRound map[int]float64
	failed  string // why some rounds have no value
	skipped string // not measured at all
}

func newFigure(scenario, id, title, unit string, higherBetter bool, fam family, ref *contender, cs []*contender) *figure {
	f := &figure{id: id, scenario: scenario, title: title, unit: unit, higherBetter: higherBetter, family: fam, ref: ref, chart: true}
	for _, c := range cs {
		f.rows = append(f.rows, &row{c: c, byRound: map[int]float64{}, skipped: c.notReady})
	}
	return f
}

// row is c's row, added when missing.
func (f *figure) row(c *contender) *row {
	if r := f.lookup(c); r != nil {
		return r
	}
	r := &row{c: c, byRound: map[int]float64{}}
	f.rows = append(f.rows, r)
	return r
}

// get is c's row, or an empty one (not added) when f has none — or f is
// nil, a scenario that did not run.
func (f *figure) get(c *contender) *row {
	if r := f.lookup(c); r != nil {
		return r
	}
	return &row{c: c, byRound: map[int]float64{}}
}

func (f *figure) lookup(c *contender) *row {
	if f == nil {
		return nil
	}
	for _, r := range f.rows {
		if r.c == c {
			return r
		}
	}
	return nil
}

func (f *figure) add(c *contender, round int, v float64) { f.row(c).byRound[round] = v }

func (f *figure) fail(c *contender, err error) {
	r := f.row(c)
	if r.failed == "" {
		r.failed = err.Error()
	}
}

func (r *row) values() []float64 {
	var vs []float64
	for _, v := range r.byRound {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			vs = append(vs, v)
		}
	}
	slices.Sort(vs)
	return vs
}

// summary is median and spread (min–max) of sorted values.
type summary struct {
	n                int
	median, min, max float64
}

func summarize(sorted []float64) summary {
	if len(sorted) == 0 {
		return summary{}
	}
	return summary{n: len(sorted), median: median(sorted), min: sorted[0], max: sorted[len(sorted)-1]}
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// percentile of sorted values (nearest rank).
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
