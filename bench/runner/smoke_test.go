package runner

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/isobroker/broker/internal/rabbitnode"
	"github.com/isobroker/broker/internal/testenv"
)

func TestMain(m *testing.M) {
	MaybeChild()
	os.Exit(m.Run())
}

// TestSmoke runs the whole runner in smoke mode (a fraction of a second
// per measurement) against its own RabbitMQ node and emulator, so that CI
// notices when a contender, a scenario, a chart or the report breaks.
// Without rabbitmq-server it fails in CI (env CI set) and is skipped,
// loudly, elsewhere; under -short it is skipped (testenv.NeedsServer).
func TestSmoke(t *testing.T) {
	testenv.NeedsServer(t, rabbitnode.Needs+" and the emulator, for the whole benchmark runner")
	if _, err := os.Stat(rabbitnode.DefaultServer); err != nil {
		rabbitnode.Require(t, "the bench smoke test needs rabbitmq-server ("+rabbitnode.DefaultServer+"; scripts/install-rabbitmq.sh)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	out := t.TempDir()
	var log strings.Builder
	err := Run(ctx, Options{Out: out, Smoke: true, EventHubsReady: true, Log: &log})
	t.Log(log.String())
	if err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(out, "BENCHMARKS.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"failed:", "not measured", "no data"} {
		if strings.Contains(strings.ToLower(string(md)), bad) {
			t.Errorf("report contains %q:\n%s", bad, md)
		}
	}
	for _, bad := range []string{"NaN", "Inf", "%!"} { // bad numbers, bad format strings
		if strings.Contains(string(md), bad) {
			t.Errorf("report contains %q:\n%s", bad, md)
		}
	}
	charts, _ := filepath.Glob(filepath.Join(out, "bench", "*.svg"))
	if len(charts) < 10 {
		t.Errorf("%d charts written, want at least 10", len(charts))
	}
	for _, c := range charts {
		if !strings.Contains(string(md), "(bench/"+filepath.Base(c)+")") {
			t.Errorf("chart %s is not linked from the report", filepath.Base(c))
		}
	}
}
