// Package runner is isobroker's comparative benchmark: it starts its own
// servers (a throw-away RabbitMQ node, the Event Hubs emulator in a child
// process), runs every scenario for every contender interleaved over
// several rounds in one process, and writes docs/BENCHMARKS.md with SVG
// charts. cmd/benchreport is its command line; TestSmoke runs it in a
// seconds-long smoke mode so that it cannot rot.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/isobroker/broker/internal/rabbitnode"
)

// Options configures Run.
type Options struct {
	// Out is the directory BENCHMARKS.md is written to; charts go to
	// Out/bench. Required.
	Out string
	// Smoke shrinks every scenario to a fraction of a second: it proves the
	// runner works, its numbers mean nothing.
	Smoke bool
	// Rounds overrides the number of interleaved rounds (0: default).
	Rounds int
	// EventHubsReady says whether the eventhubs adapter's contender runs;
	// when false its rows read "not measured: adapter not ready".
	EventHubsReady bool
	// Scenarios limits the run to these scenario numbers, e.g. "1,3"
	// (empty: all; 6 comes with 1). For working on the runner: a partial
	// report is not the published one.
	Scenarios string
	// Log receives progress lines (default os.Stderr).
	Log io.Writer
}

// params sizes the runs.
type params struct {
	rounds     int
	publishFor time.Duration // one publish-throughput run
	e2eFor     time.Duration // one end-to-end run
	pings      int           // latency samples per end-to-end run
	receiveN   int           // events drained per Event Hubs receive run
	isoCycles  int           // open/close cycles of broker A
	scaleN     int           // idle instances
	settle     time.Duration // pause before each GC when measuring memory
	idle       time.Duration // how long the scale instances idle before they are measured
	// distanceRounds is scenario 8's number of rounds: each of its runs
	// takes longer at a distance, and it runs every workload twice.
	distanceRounds int
}

func paramsFor(o Options) params {
	p := params{rounds: 7, settle: 200 * time.Millisecond, publishFor: time.Second, e2eFor: 1500 * time.Millisecond, pings: 100, receiveN: 30000, isoCycles: 100, scaleN: 1000, idle: 3 * time.Second, distanceRounds: 5}
	if o.Smoke {
		p = params{rounds: 1, settle: 20 * time.Millisecond, publishFor: 150 * time.Millisecond, e2eFor: 200 * time.Millisecond, pings: 5, receiveN: 500, isoCycles: 3, scaleN: 5, idle: 1500 * time.Millisecond, distanceRounds: 1}
	}
	if o.Rounds > 0 {
		p.rounds, p.distanceRounds = o.Rounds, min(o.Rounds, p.distanceRounds)
	}
	return p
}

type family string

const (
	famRabbit    family = "RabbitMQ"
	famEventHubs family = "Event Hubs"
)

// client is one contender's connection: what every scenario drives.
type client interface {
	// publish returns once the contender considers bodies published
	// (confirmed, for all but watermill-amqp's default config).
	publish(ctx context.Context, topic string, bodies [][]byte) error
	// subscribe calls fn for each message of topic until the returned stop.
	subscribe(ctx context.Context, topic string, fn func([]byte)) (stop func(), err error)
	close(ctx context.Context) error
}

func (c *contender) chartName() string {
	if c.chart != "" {
		return c.chart
	}
	return c.label
}

// reconnecter is implemented by clients without their own recovery: the
// recovery scenario calls it after a failed publish, as an application
// would.
type reconnecter interface {
	reconnect(ctx context.Context) error
}

type contender struct {
	key, label, short string
	chart             string // label in charts (default label); the caption names the versions
	note              string // caveat shown next to its numbers
	notReady          string // non-empty: not run, reported with this text
	family            family
	style             topoStyle
	ours              bool
	// open connects; url is the RabbitMQ URL to use (unused for Event Hubs).
	open func(ctx context.Context, url string) (client, error)
}

// bench holds one run's servers and results.
type bench struct {
	opts Options
	p    params
	log  io.Writer
	env  *rabbitEnv
	emu  *emulatorProc
	mach machine
	vers versions

	rabbitCs, ehCs []*contender
	ehDiag         []*contender // diagnostic variants, receiving figures only
	tracedCs       []*contender // our adapters with telemetry on, scenario 7 only
	figs           []*figure
	steps          []stepRun
	nodeDir        string // where the RabbitMQ node keeps its data ("": the temp dir)
	started        time.Time
	topicSeq       atomic.Int64 // numbers the topics of this run
}

// stepRun records how long a scenario took and the machine's load
// around it.
type stepRun struct {
	name               string
	took               time.Duration
	loadStart, loadEnd string
	steal              string // share of CPU time stolen by the hypervisor
}

// Run starts the servers, runs every scenario and writes the report.
func Run(ctx context.Context, o Options) error {
	if o.Out == "" {
		return errors.New("runner: Options.Out is required")
	}
	if o.Log == nil {
		o.Log = os.Stderr
	}
	b := &bench{opts: o, p: paramsFor(o), log: o.Log, started: time.Now()}
	b.mach = describeMachine()
	b.logf("machine: %s", b.mach.oneLine())

	b.nodeDir = nodeBaseDir()
	node, err := rabbitnode.Start(ctx, rabbitnode.Options{Name: "bench", BaseDir: b.nodeDir})
	if err != nil {
		return fmt.Errorf("runner: rabbitmq node: %w", err)
	}
	defer func() {
		// The node's data is thrown away: no need for a graceful stop.
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = node.Stop(sctx)
	}()
	admin, err := amqp.Dial(node.URL())
	if err != nil {
		return fmt.Errorf("runner: admin connection: %w", err)
	}
	defer admin.Close()
	b.env = &rabbitEnv{url: node.URL(), addr: node.Addr(), admin: admin}
	b.vers = readVersions(admin)
	b.logf("rabbitmq node up (server %s) in %v", b.vers.rabbitServer, time.Since(b.started).Round(time.Millisecond))

	if b.emu, err = startEmulatorChild(); err != nil {
		return fmt.Errorf("runner: emulator: %w", err)
	}
	defer b.emu.stop()

	b.rabbitCs = rabbitContenders(b.vers)
	b.ehCs, b.ehDiag = eventHubsContenders(b.vers, b.emu, o.EventHubsReady)
	b.tracedCs = tracedContenders(b.vers, b.emu, o.EventHubsReady)

	steps := []struct {
		num, name string
		run       func(context.Context) error
	}{
		{"1", "publish throughput (and 6, allocations)", b.scenarioPublish},
		{"2", "end-to-end", b.scenarioEndToEnd},
		{"3", "recovery", b.scenarioRecovery},
		{"4", "isolation", b.scenarioIsolation},
		{"5", "scale", b.scenarioScale},
		{"7", "telemetry overhead", b.scenarioTelemetry},
		{"8", "at a distance", b.scenarioDistance},
	}
	only := map[string]bool{}
	for _, n := range strings.Split(o.Scenarios, ",") {
		if n = strings.TrimSpace(n); n != "" {
			only[n] = true
		}
	}
	for _, s := range steps {
		if len(only) > 0 && !only[s.num] {
			continue
		}
		st := stepRun{name: s.num + " " + s.name, loadStart: readLoad()}
		cpu0 := readCPUTimes()
		begin := time.Now()
		b.logf("scenario %s … (load %s)", st.name, st.loadStart)
		if err := s.run(ctx); err != nil {
			return fmt.Errorf("runner: scenario %s: %w", st.name, err)
		}
		st.took, st.loadEnd, st.steal = time.Since(begin), readLoad(), stealShare(cpu0, readCPUTimes())
		b.steps = append(b.steps, st)
		b.logf("scenario %s done in %v", st.name, st.took.Round(100*time.Millisecond))
	}
	b.mach.loadEnd = readLoad()
	return b.write(filepath.Clean(o.Out))
}

// nodeBaseDir puts the RabbitMQ node's data on tmpfs when the machine has
// one: its fsyncs then cost nothing, so the numbers compare clients, not
// the disk (and not whatever else is writing to it on a shared machine).
func nodeBaseDir() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if f, err := os.CreateTemp("/dev/shm", "isobroker-bench-probe-"); err == nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
			return "/dev/shm"
		}
	}
	return "" // the default temp dir
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "%s bench: %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// rotate returns cs starting at index r mod len: successive rounds change
// which contender goes first (A/B/A/B interleaving without a fixed order).
func rotate(cs []*contender, r int) []*contender {
	if len(cs) == 0 {
		return nil
	}
	r %= len(cs)
	return append(append([]*contender(nil), cs[r:]...), cs[:r]...)
}
