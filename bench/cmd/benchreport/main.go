// Command benchreport runs isobroker's comparative benchmarks and writes
// docs/BENCHMARKS.md with SVG charts (see package runner). `make bench`
// runs it from the bench module:
//
//	go run ./cmd/benchreport -out ../docs
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/isobroker/broker/bench/runner"
)

func main() {
	runner.MaybeChild()
	out := flag.String("out", "../docs", "directory for BENCHMARKS.md (charts go to OUT/bench)")
	smoke := flag.Bool("smoke", false, "seconds-long smoke run: proves the runner works, numbers mean nothing")
	rounds := flag.Int("rounds", 0, "interleaved rounds per scenario (0: default)")
	ehReady := flag.Bool("eventhubs", true, "measure the eventhubs adapter (false: report it as not ready)")
	scenarios := flag.String("scenarios", "", "run only these scenarios, e.g. 1,3 (for working on the runner; the report is partial)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runner.Run(ctx, runner.Options{Out: *out, Smoke: *smoke, Rounds: *rounds, EventHubsReady: *ehReady, Scenarios: *scenarios}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
