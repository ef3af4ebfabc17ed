package runner

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"
)

// pubShape is how a publish-throughput run calls publish: perCall
// messages of size bytes per call, from callers goroutines on one
// instance. Every contender gets the same calls.
type pubShape struct {
	id            string
	size, perCall int
	callers       int
}

func (s pubShape) String() string {
	if s.callers == 1 {
		return fmt.Sprintf("%d KiB messages, %d per call, one caller", s.size>>10, s.perCall)
	}
	return fmt.Sprintf("%d KiB messages, one per call, %d concurrent callers", s.size>>10, s.callers)
}

// The shapes of scenario 1: batches (what a batching producer does; the
// raw clients pipeline a call's messages and wait for all confirms), and
// single messages from concurrent callers (what a service whose handlers
// each publish one message does — Watermill's usual shape).
var pubShapes = []pubShape{
	{id: "1k", size: 1 << 10, perCall: 64, callers: 1},
	{id: "64k", size: 64 << 10, perCall: 8, callers: 1},
	{id: "1k-single", size: 1 << 10, perCall: 1, callers: 16},
}

func payload(size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

// topicName is unique per run so that no run sees another's messages.
func (b *bench) topicName(scenario string, c *contender) string {
	return fmt.Sprintf("bench.%s.%s.%d", scenario, c.key, b.topicSeq.Add(1))
}

// prepare makes topic publishable with no consumer running.
func (b *bench) prepare(c *contender, topic string) error {
	if c.family == famEventHubs {
		return b.freshHub(topic)
	}
	return b.env.declareSink(c.style, topic)
}

// freshHub restarts the emulator (every Event Hubs run starts on an empty
// server) and creates hub with one partition.
func (b *bench) freshHub(hub string) error {
	if err := b.emu.restart(); err != nil {
		return err
	}
	return b.emu.addHub(hub, 1)
}

func (b *bench) cleanup(c *contender, topic string) {
	if c.family == famRabbit {
		b.env.cleanup(topic)
	}
}

func (b *bench) contenders(f family) []*contender {
	if f == famRabbit {
		return b.rabbitCs
	}
	return b.ehCs
}

func (b *bench) runnable(cs []*contender) []*contender {
	var out []*contender
	for _, c := range cs {
		if c.notReady == "" {
			out = append(out, c)
		}
	}
	return out
}

// ---- scenario 1 (and 6): publish throughput, allocations per message ----

func (b *bench) scenarioPublish(ctx context.Context) error {
	for _, fam := range []family{famRabbit, famEventHubs} {
		for _, sh := range pubShapes {
			cs := b.contenders(fam)
			if sh.callers > 1 {
				// One message per call: "pipelined" and "wait for each
				// confirm" are the same code path; run it once.
				cs = without(cs, "raw-each")
			}
			f := newFigure("1", fmt.Sprintf("publish-%s-%s", famID(fam), sh.id),
				fmt.Sprintf("%s: confirmed publish throughput, %s", fam, sh), "msg/s", true, fam, cs[0], cs)
			cpuF := newFigure("6", fmt.Sprintf("cpu-%s-%s", famID(fam), sh.id), fmt.Sprintf("%s: client CPU time per 1,000 published messages, %s", fam, sh), "ms/1k msg", false, fam, cs[0], cs)
			cpuF.chart = sh.id == "1k-single"
			var allocs, bytesF *figure
			if sh.size == 1<<10 {
				allocs = newFigure("6", fmt.Sprintf("allocs-%s-%s", famID(fam), sh.id), fmt.Sprintf("%s: allocations per published message, %s", fam, sh), "allocs/msg", false, fam, cs[0], cs)
				bytesF = newFigure("6", fmt.Sprintf("allocbytes-%s-%s", famID(fam), sh.id), fmt.Sprintf("%s: bytes allocated per published message, %s", fam, sh), "B/msg", false, fam, cs[0], cs)
				bytesF.chart = false
				allocs.chart = sh.callers == 1
			}
			for r := range b.p.rounds {
				for _, c := range rotate(b.runnable(cs), r) {
					res, err := b.publishRun(ctx, c, sh)
					if err != nil {
						b.logf("  %s %s round %d: %v", c.key, sh.id, r, err)
						f.fail(c, err)
						continue
					}
					f.add(c, r, res.rate)
					cpuF.add(c, r, res.cpu)
					if allocs != nil {
						allocs.add(c, r, res.allocs)
						bytesF.add(c, r, res.bytes)
					}
				}
			}
			b.figs = append(b.figs, f, cpuF)
			if allocs != nil {
				b.figs = append(b.figs, allocs, bytesF)
			}
		}
	}
	return nil
}

// without returns cs minus the contender with key.
func without(cs []*contender, key string) []*contender {
	var out []*contender
	for _, c := range cs {
		if c.key != key {
			out = append(out, c)
		}
	}
	return out
}

type publishResult struct{ rate, allocs, bytes, cpu float64 }

func (b *bench) publishRun(ctx context.Context, c *contender, sh pubShape) (publishResult, error) {
	topic := b.topicName("pub", c)
	if err := b.prepare(c, topic); err != nil {
		return publishResult{}, err
	}
	defer b.cleanup(c, topic)
	cl, err := c.open(ctx, b.env.dialURL())
	if err != nil {
		return publishResult{}, err
	}
	defer cl.close(context.Background())
	body := payload(sh.size)
	bodies := make([][]byte, sh.perCall)
	for i := range bodies {
		bodies[i] = body
	}
	pctx, cancel := context.WithTimeout(ctx, b.p.publishFor+30*time.Second)
	defer cancel()
	if err := cl.publish(pctx, topic, bodies); err != nil { // warm: declarations, links
		return publishResult{}, err
	}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0 := processCPU()
	var n atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, sh.callers)
	begin := time.Now()
	for i := range sh.callers {
		wg.Go(func() {
			for time.Since(begin) < b.p.publishFor {
				if err := cl.publish(pctx, topic, bodies); err != nil {
					errs[i] = err
					return
				}
				n.Add(int64(len(bodies)))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(begin)
	cpu := processCPU() - cpu0
	runtime.ReadMemStats(&m1)
	if err := errors.Join(errs...); err != nil {
		return publishResult{}, err
	}
	total := float64(n.Load())
	return publishResult{
		rate:   total / elapsed.Seconds(),
		allocs: float64(m1.Mallocs-m0.Mallocs) / total,
		bytes:  float64(m1.TotalAlloc-m0.TotalAlloc) / total,
		cpu:    cpuPerK(cpu, total),
	}, nil
}

// ---- scenario 2: end-to-end throughput and latency ----

const (
	e2eSize   = 1 << 10
	e2eWindow = 512 // published but not yet received, at most
	kindBulk  = 0
	kindPing  = 1
)

func (b *bench) scenarioEndToEnd(ctx context.Context) error {
	for _, fam := range []family{famRabbit, famEventHubs} {
		cs := b.contenders(fam)
		if fam == famEventHubs {
			cs = append(append([]*contender(nil), cs...), b.ehDiag...)
		}
		thr := newFigure("2", "e2e-"+famID(fam), fmt.Sprintf("%s: end-to-end throughput (publish + consume + ack), 1 KiB", fam), "msg/s", true, fam, cs[0], cs)
		p50 := newFigure("2", "latency-p50-"+famID(fam), fmt.Sprintf("%s: end-to-end latency p50, one message at a time", fam), "ms", false, fam, cs[0], cs)
		p99 := newFigure("2", "latency-p99-"+famID(fam), fmt.Sprintf("%s: end-to-end latency p99, one message at a time", fam), "ms", false, fam, cs[0], cs)
		cpuE2E := newFigure("6", "cpu-e2e-"+famID(fam), fmt.Sprintf("%s: client CPU time per 1,000 messages end to end (publish + consume + ack)", fam), "ms/1k msg", false, fam, cs[0], cs)
		p50.chart, cpuE2E.chart = false, false
		var recv *figure
		if fam == famEventHubs {
			recv = newFigure("2", "receive-"+famID(fam), fmt.Sprintf("%s: receive throughput, draining %d pre-filled 1 KiB events", fam, b.p.receiveN), "msg/s", true, fam, cs[0], cs)
		}
		for r := range b.p.rounds {
			for _, c := range rotate(b.runnable(cs), r) {
				res, err := b.e2eRun(ctx, c, b.p.pings)
				if err != nil {
					b.logf("  %s e2e round %d: %v", c.key, r, err)
					thr.fail(c, err)
				} else {
					thr.add(c, r, res.rate)
					cpuE2E.add(c, r, res.cpu)
					p50.add(c, r, res.p50)
					p99.add(c, r, res.p99)
				}
				if recv == nil {
					continue
				}
				rate, err := b.receiveRun(ctx, c)
				if err != nil {
					b.logf("  %s receive round %d: %v", c.key, r, err)
					recv.fail(c, err)
					continue
				}
				recv.add(c, r, rate)
			}
		}
		b.figs = append(b.figs, thr, p50, p99, cpuE2E)
		if recv != nil {
			b.figs = append(b.figs, recv)
		}
	}
	return nil
}

// receiveRun fills a fresh hub with receiveN 1 KiB events through the SDK
// (the same events for every contender, not timed), then times c's
// subscription from the earliest event until it has received all of them.
func (b *bench) receiveRun(ctx context.Context, c *contender) (float64, error) {
	hub := b.topicName("recv", c)
	if err := b.freshHub(hub); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	filler := &sdkClient{connStr: b.emu.hubConnStr, producers: map[string]*azeventhubs.ProducerClient{}}
	body := payload(e2eSize)
	bodies := make([][]byte, 1000)
	for i := range bodies {
		bodies[i] = body
	}
	for sent := 0; sent < b.p.receiveN; sent += len(bodies) {
		if err := filler.publish(ctx, hub, bodies[:min(len(bodies), b.p.receiveN-sent)]); err != nil {
			_ = filler.close(ctx)
			return 0, fmt.Errorf("fill: %w", err)
		}
	}
	if err := filler.close(ctx); err != nil {
		return 0, fmt.Errorf("fill: %w", err)
	}
	cl, err := c.open(ctx, "")
	if err != nil {
		return 0, err
	}
	defer cl.close(context.Background())
	var got atomic.Int64
	all := make(chan struct{})
	want := int64(b.p.receiveN)
	begin := time.Now()
	stop, err := cl.subscribe(ctx, hub, func([]byte) {
		if got.Add(1) == want {
			close(all)
		}
	})
	if err != nil {
		return 0, err
	}
	defer stop()
	select {
	case <-all:
		return float64(want) / time.Since(begin).Seconds(), nil
	case <-ctx.Done():
		return 0, fmt.Errorf("received %d of %d: %w", got.Load(), want, ctx.Err())
	}
}

type e2eResult struct{ rate, p50, p99, cpu float64 }

func (b *bench) e2eRun(ctx context.Context, c *contender, samples int) (e2eResult, error) {
	topic := b.topicName("e2e", c)
	if c.family == famEventHubs {
		if err := b.freshHub(topic); err != nil {
			return e2eResult{}, err
		}
	}
	defer b.cleanup(c, topic)
	ctx, cancel := context.WithTimeout(ctx, b.p.e2eFor+20*time.Second)
	defer cancel()
	cl, err := c.open(ctx, b.env.dialURL())
	if err != nil {
		return e2eResult{}, err
	}
	defer cl.close(context.Background())

	var received atomic.Int64
	more := make(chan struct{}, 1)
	pings := make(chan time.Duration, 1)
	stop, err := cl.subscribe(ctx, topic, func(body []byte) {
		if len(body) >= 9 && body[0] == kindPing {
			sent := int64(binary.BigEndian.Uint64(body[1:9]))
			select {
			case pings <- time.Duration(time.Now().UnixNano() - sent):
			default:
			}
			return
		}
		received.Add(1)
		select {
		case more <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return e2eResult{}, err
	}
	defer stop()

	bulk := payload(e2eSize)
	bulk[0] = kindBulk
	bodies := make([][]byte, 64)
	for i := range bodies {
		bodies[i] = bulk
	}
	begin := time.Now()
	cpu0 := processCPU()
	sent := int64(0)
	for time.Since(begin) < b.p.e2eFor {
		for sent-received.Load() > e2eWindow-int64(len(bodies)) {
			select {
			case <-more:
			case <-time.After(10 * time.Millisecond):
			case <-ctx.Done():
				return e2eResult{}, ctx.Err()
			}
		}
		if err := cl.publish(ctx, topic, bodies); err != nil {
			return e2eResult{}, err
		}
		sent += int64(len(bodies))
	}
	for received.Load() < sent {
		select {
		case <-more:
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return e2eResult{}, fmt.Errorf("received %d of %d: %w", received.Load(), sent, ctx.Err())
		}
	}
	res := e2eResult{rate: float64(received.Load()) / time.Since(begin).Seconds(),
		cpu: cpuPerK(processCPU()-cpu0, float64(received.Load()))}

	var lat []float64
	for range samples {
		ping := payload(e2eSize)
		ping[0] = kindPing
		binary.BigEndian.PutUint64(ping[1:9], uint64(time.Now().UnixNano()))
		if err := cl.publish(ctx, topic, [][]byte{ping}); err != nil {
			return e2eResult{}, err
		}
		select {
		case d := <-pings:
			lat = append(lat, float64(d)/float64(time.Millisecond))
		case <-time.After(10 * time.Second):
			return e2eResult{}, errors.New("ping not received within 10 s")
		}
	}
	slices.Sort(lat)
	res.p50, res.p99 = percentile(lat, 50), percentile(lat, 99)
	return res, nil
}

// ---- scenario 3: recovery ----

func (b *bench) scenarioRecovery(ctx context.Context) error {
	for _, fam := range []family{famRabbit, famEventHubs} {
		cs := b.contenders(fam)
		what := "forced connection kill (TCP cut)"
		if fam == famEventHubs {
			what = "idle close (amqp:connection:forced)"
		}
		rec := newFigure("3", "recovery-"+famID(fam), fmt.Sprintf("%s: %s to next confirmed publish", fam, what), "ms", false, fam, cs[0], cs)
		floor := newFigure("3", "fresh-"+famID(fam), fmt.Sprintf("%s: fresh dial to first confirmed publish (the floor)", fam), "ms", false, fam, cs[0], cs)
		rel := newFigure("3", "recovery-vs-fresh-"+famID(fam), fmt.Sprintf("%s: recovery ÷ fresh dial-to-first-confirm (same round)", fam), "×", false, fam, nil, cs)
		floor.chart, rel.chart = false, false
		for r := range b.p.rounds {
			for _, c := range rotate(b.runnable(cs), r) {
				fresh, recovery, err := b.recoveryRun(ctx, c)
				if err != nil {
					b.logf("  %s recovery round %d: %v", c.key, r, err)
					rec.fail(c, err)
					continue
				}
				rec.add(c, r, ms(recovery))
				floor.add(c, r, ms(fresh))
				rel.add(c, r, recovery.Seconds()/fresh.Seconds())
			}
		}
		b.figs = append(b.figs, rec, floor, rel)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (b *bench) recoveryRun(ctx context.Context, c *contender) (fresh, recovery time.Duration, err error) {
	topic := b.topicName("rec", c)
	if err := b.prepare(c, topic); err != nil {
		return 0, 0, err
	}
	defer b.cleanup(c, topic)
	url := b.env.url
	var px *proxy
	if c.family == famRabbit {
		if px, err = newProxy(b.env.addr); err != nil {
			return 0, 0, err
		}
		defer px.close()
		url = "amqp://guest:guest@" + px.addr() + "/"
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	one := [][]byte{payload(1 << 10)}

	begin := time.Now()
	cl, err := c.open(ctx, url)
	if err != nil {
		return 0, 0, err
	}
	defer cl.close(context.Background())
	if err := cl.publish(ctx, topic, one); err != nil {
		return 0, 0, err
	}
	fresh = time.Since(begin)
	if err := cl.publish(ctx, topic, one); err != nil {
		return 0, 0, err
	}

	begin = time.Now()
	if px != nil {
		if px.kill() == 0 {
			return 0, 0, errors.New("no connection to cut")
		}
	} else if n, err := b.emu.forceClose(); err != nil || n == 0 {
		return 0, 0, fmt.Errorf("forced close: %d connections, %v", n, err)
	}
	for {
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		err := cl.publish(pctx, topic, one)
		pcancel()
		if err == nil {
			return fresh, time.Since(begin), nil
		}
		if ctx.Err() != nil {
			return 0, 0, fmt.Errorf("no confirmed publish within 60 s of the kill: %w", err)
		}
		if rc, ok := cl.(reconnecter); ok {
			_ = rc.reconnect(ctx)
		}
		time.Sleep(time.Millisecond)
	}
}

// ---- scenario 4: isolation ----

func (b *bench) scenarioIsolation(ctx context.Context) error {
	for _, fam := range []family{famRabbit, famEventHubs} {
		var cs []*contender
		for _, c := range b.contenders(fam) {
			if c.key == "raw-pipelined" || c.key == "rabbit" || c.family == famEventHubs {
				cs = append(cs, c)
			}
		}
		f := newFigure("4", "isolation-"+famID(fam),
			fmt.Sprintf("%s: broker B's p99 publish latency while A opens, publishes once and closes %d times ÷ B alone", fam, b.p.isoCycles),
			"×", false, fam, nil, cs)
		f.target = 1.1
		alone := newFigure("4", "isolation-alone-"+famID(fam), fmt.Sprintf("%s: B's p99 publish latency alone", fam), "ms", false, fam, nil, cs)
		loaded := newFigure("4", "isolation-loaded-"+famID(fam), fmt.Sprintf("%s: B's p99 publish latency while A cycles", fam), "ms", false, fam, nil, cs)
		alone.chart, loaded.chart = false, false
		openCPU := newFigure("4", "opencpu-"+famID(fam), fmt.Sprintf("%s: client CPU time from open to the first confirmed publish", fam), "ms", false, fam, cs[0], cs)
		for r := range b.p.rounds {
			for _, c := range rotate(b.runnable(cs), r) {
				if v, err := b.openCostRun(ctx, c); err != nil {
					b.logf("  %s open cost round %d: %v", c.key, r, err)
					openCPU.fail(c, err)
				} else {
					openCPU.add(c, r, v)
				}
				a, l, err := b.isolationRun(ctx, c)
				if err != nil {
					b.logf("  %s isolation round %d: %v", c.key, r, err)
					f.fail(c, err)
					continue
				}
				f.add(c, r, l/a)
				alone.add(c, r, a)
				loaded.add(c, r, l)
			}
		}
		b.figs = append(b.figs, f, alone, loaded, openCPU)
	}
	return nil
}

// openCycles is how many instances openCostRun opens, one at a time.
const openCycles = 20

// openCostRun returns the client CPU time (ms) of opening an instance of
// c and publishing one confirmed message, averaged over openCycles
// instances opened one after the other; each is closed after its
// reading, outside it.
func (b *bench) openCostRun(ctx context.Context, c *contender) (float64, error) {
	topic := b.topicName("open", c)
	if err := b.prepare(c, topic); err != nil {
		return 0, err
	}
	defer b.cleanup(c, topic)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	one := [][]byte{payload(1 << 10)}
	var total time.Duration
	for range openCycles {
		cpu0 := processCPU()
		cl, err := c.open(ctx, b.env.url)
		if err != nil {
			return 0, err
		}
		err = cl.publish(ctx, topic, one)
		total += processCPU() - cpu0
		if err = errors.Join(err, cl.close(ctx)); err != nil {
			return 0, err
		}
	}
	return ms(total) / openCycles, nil
}

// isolationRun returns B's p99 single-message publish latency (ms) alone
// and while another instance of the same contender, A, is opened, used
// once and closed. B publishes without pause for the whole run while A
// alternates isoCycles times between a cycle and an idle gap as long as
// that cycle took, so the "alone" and "loaded" samples are interleaved in
// time and whatever else runs on the machine falls on both alike. A sample
// counts as alone only when A was idle from its start to its end; one that
// overlaps any part of a cycle counts as loaded.
func (b *bench) isolationRun(ctx context.Context, c *contender) (alone, loaded float64, err error) {
	topic := b.topicName("iso", c)
	if err := b.prepare(c, topic); err != nil {
		return 0, 0, err
	}
	defer b.cleanup(c, topic)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cl, err := c.open(ctx, b.env.url)
	if err != nil {
		return 0, 0, err
	}
	defer cl.close(context.Background())
	one := [][]byte{payload(1 << 10)}
	if err := cl.publish(ctx, topic, one); err != nil {
		return 0, 0, err
	}
	cycle := func() error {
		a, err := c.open(ctx, b.env.url)
		if err != nil {
			return err
		}
		err = a.publish(ctx, topic, one)
		return errors.Join(err, a.close(ctx))
	}
	// phase counts A's transitions: odd while A cycles, even while idle.
	var phase atomic.Int64
	var done atomic.Bool
	var cycleErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		defer done.Store(true)
		time.Sleep(20 * time.Millisecond) // B's first samples: alone
		for range b.p.isoCycles {
			begin := time.Now()
			phase.Add(1)
			cycleErr = cycle()
			phase.Add(1)
			if cycleErr != nil {
				return
			}
			time.Sleep(time.Since(begin))
		}
	})
	var la, ll []float64
	var pubErr error
	for !done.Load() {
		p0, t := phase.Load(), time.Now()
		if pubErr = cl.publish(ctx, topic, one); pubErr != nil {
			break
		}
		d := ms(time.Since(t))
		if p1 := phase.Load(); p0 == p1 && p0%2 == 0 {
			la = append(la, d)
		} else {
			ll = append(ll, d)
		}
	}
	wg.Wait()
	if err := errors.Join(pubErr, cycleErr); err != nil {
		return 0, 0, err
	}
	if len(la) == 0 || len(ll) == 0 {
		return 0, 0, errors.New("no samples")
	}
	slices.Sort(la)
	slices.Sort(ll)
	return percentile(la, 99), percentile(ll, 99), nil
}

// ---- scenario 5: scale ----

func (b *bench) scenarioScale(ctx context.Context) error {
	for _, fam := range []family{famRabbit, famEventHubs} {
		var cs []*contender
		for _, c := range b.contenders(fam) {
			if c.key != "raw-each" && c.key != "wm-confirm" {
				cs = append(cs, c)
			}
		}
		mem := newFigure("5", "scale-mem-"+famID(fam), fmt.Sprintf("%s: memory (heap + stacks) per idle instance, %d instances", fam, b.p.scaleN), "KiB", false, fam, nil, cs)
		mem.target = 100
		gor := newFigure("5", "scale-goroutines-"+famID(fam), fmt.Sprintf("%s: goroutines per idle instance, %d instances", fam, b.p.scaleN), "goroutines", false, fam, nil, cs)
		gor.chart = false
		for _, c := range b.runnable(cs) {
			kib, g, err := b.scaleRun(ctx, c)
			if err != nil {
				b.logf("  %s scale: %v", c.key, err)
				mem.fail(c, err)
				continue
			}
			mem.add(c, 0, kib)
			gor.add(c, 0, g)
		}
		b.figs = append(b.figs, mem, gor)
	}
	return nil
}

// scaleRun opens scaleN instances, each publishing one message so that its
// connection is really up, then measures heap + stacks and goroutines
// against the baseline before them.
func (b *bench) scaleRun(ctx context.Context, c *contender) (kibPer, goroutinesPer float64, err error) {
	topic := b.topicName("scale", c)
	if err := b.prepare(c, topic); err != nil {
		return 0, 0, err
	}
	defer b.cleanup(c, topic)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	one := [][]byte{payload(16)}
	settle := func() (uint64, int) {
		var m runtime.MemStats
		for range 2 {
			time.Sleep(b.p.settle)
			runtime.GC()
		}
		runtime.ReadMemStats(&m)
		return m.HeapInuse + m.StackInuse, runtime.NumGoroutine()
	}
	mem0, g0 := settle()
	clients := make([]client, b.p.scaleN)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 4 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(clients) {
					return
				}
				cl, err := c.open(ctx, b.env.url)
				if err == nil {
					err = cl.publish(ctx, topic, one)
					if err != nil {
						_ = cl.close(ctx)
					}
				}
				if err != nil {
					mu.Lock()
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
					return
				}
				clients[i] = cl
			}
		})
	}
	wg.Wait()
	var mem1 uint64
	var g1 int
	if firstErr == nil {
		// Idle means idle: whatever a client does just after its first
		// publish (the eventhubs adapter detaches its $cbs link
		// shortly after the last token put) is over before measuring.
		time.Sleep(b.p.idle)
		mem1, g1 = settle()
	}
	var cwg sync.WaitGroup
	for _, cl := range clients {
		if cl != nil {
			cwg.Go(func() { _ = cl.close(context.Background()) })
		}
	}
	cwg.Wait()
	if firstErr != nil {
		return 0, 0, firstErr
	}
	n := float64(b.p.scaleN)
	return math.Max(0, float64(int64(mem1)-int64(mem0))) / 1024 / n, float64(g1-g0) / n, nil
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

func famID(f family) string {
	if f == famRabbit {
		return "rabbitmq"
	}
	return "eventhubs"
}

func (f family) String() string { return string(f) }
