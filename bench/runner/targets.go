package runner

import "fmt"

// figRef names a throughput figure and what it measures, for a target.
type figRef struct{ id, what string }

// throughputFigs lists fam's throughput figures that carry targets: the
// publish shapes and end to end at loopback (scenarios 1 and 2), receive
// for Event Hubs, and the same at each distance (scenario 8).
func throughputFigs(fam family) []figRef {
	var out []figRef
	for _, sh := range pubShapes {
		out = append(out, figRef{fmt.Sprintf("publish-%s-%s", famID(fam), sh.id), "confirmed publish (" + sh.String() + ")"})
	}
	if fam == famEventHubs {
		out = append(out, figRef{"receive-eventhubs", "receive (draining a pre-filled hub)"})
	}
	out = append(out, figRef{"e2e-" + famID(fam), "end to end (publish + consume + ack)"})
	for _, ms := range distances() {
		for _, w := range distanceWorkloads(fam) {
			out = append(out, figRef{distanceFigID(fam, w, ms), fmt.Sprintf("%s at %d ms each way", w.what, ms)})
		}
	}
	return out
}

// ratioAtMost is met when the ratio of medians (a cost: lower is better)
// is at most max; shaky when the median of the round-by-round ratios says
// otherwise.
func ratioAtMost(name string, pr pairRatio, max float64, unmeasured, fix string) target {
	return boundTarget(name, pr, func(r float64) bool { return r <= max }, unmeasured, fix)
}

// costTargets: client CPU time per message against the raw client
// (rabbit ≤ 1.05×) and the SDK (eventhubs ≤ 1.0×), in every publish shape
// and end to end, and allocations per 1 KiB published message at or
// below theirs.
func (b *bench) costTargets(ours, raw, eh, sdk *contender) []target {
	var ts []target
	for _, x := range []struct {
		c, ref *contender
		fam    family
		max    float64
	}{{ours, raw, famRabbit, 1.05}, {eh, sdk, famEventHubs, 1.0}} {
		ids := []figRef{}
		for _, sh := range pubShapes {
			ids = append(ids, figRef{fmt.Sprintf("cpu-%s-%s", famID(x.fam), sh.id), "publish (" + sh.String() + ")"})
		}
		ids = append(ids, figRef{"cpu-e2e-" + famID(x.fam), "end to end"})
		for _, id := range ids {
			ts = append(ts, ratioAtMost(fmt.Sprintf("%s client CPU per message, %s ≤ %.2f× %s", x.c.short, id.what, x.max, x.ref.short),
				ratioOf(b.fig(id.id), x.c, x.ref), x.max, "no data", fixCPU))
		}
		for _, sh := range pubShapes {
			if sh.size != 1<<10 {
				continue
			}
			id := fmt.Sprintf("allocs-%s-%s", famID(x.fam), sh.id)
			ts = append(ts, ratioAtMost(fmt.Sprintf("%s allocations per published message (%s) ≤ %s's", x.c.short, sh, x.ref.short),
				ratioOf(b.fig(id), x.c, x.ref), 1.0, "no data", fixCPU))
		}
	}
	return ts
}

// idleTarget: an idle instance of c holds no more memory and goroutines
// than one of ref.
func (b *bench) idleTarget(c, ref *contender, fix string) target {
	t := target{name: fmt.Sprintf("idle %s instance ≤ %s's memory and goroutines (%d instances)", c.short, ref.short, b.p.scaleN), fix: fix}
	mem, gor := b.fig("scale-mem-"+famID(c.family)), b.fig("scale-goroutines-"+famID(c.family))
	m, rm := summarize(mem.get(c).values()), summarize(mem.get(ref).values())
	g, rg := summarize(gor.get(c).values()), summarize(gor.get(ref).values())
	if m.n == 0 || rm.n == 0 || g.n == 0 || rg.n == 0 {
		t.measured = "no data"
		return t
	}
	met := m.median <= rm.median && g.median <= rg.median
	t.met = &met
	t.measured = fmt.Sprintf("%.1f KiB and %.1f goroutines; %s: %.1f KiB and %.1f goroutines", m.median, g.median, ref.short, rm.median, rg.median)
	return t
}
