package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/isobroker/broker/eventhubs"
)

// The example ends by itself, having printed an even spread over one,
// two and three members (3, 3 and 2 partitions with three), and the
// scale-in back to one member; with both strategies. Nothing it started
// outlives it.
func TestBalancedExampleRuns(t *testing.T) {
	for _, s := range []eventhubs.Strategy{eventhubs.StrategyBalanced, eventhubs.StrategyGreedy} {
		t.Run(s.String(), func(t *testing.T) {
			defer goleak.VerifyNone(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var out bytes.Buffer
			if err := run(ctx, &out, s, 100*time.Millisecond); err != nil {
				t.Fatalf("%v\noutput:\n%s", err, out.String())
			}
			text := out.String()
			t.Logf("output:\n%s", text)
			for _, want := range []string{
				"m1 joined", "m2 joined", "m3 joined",
				"even spread over 1 member(s)", "even spread over 2 member(s)", "even spread over 3 member(s)",
				"m3 closed", "m2 closed", "events published, all handled", "m1 owns [0 1 2 3 4 5 6 7]",
			} {
				if !strings.Contains(text, want) {
					t.Errorf("output lacks %q", want)
				}
			}
			if !hasRow(text, []int{3, 3, 2}) {
				t.Errorf("no table row with 3, 3 and 2 partitions for m1, m2, m3")
			}
		})
	}
}

var spreadRE = regexp.MustCompile(`m1:(\d) m2:(\d) m3:(\d)$`)

// hasRow reports whether a table row shows the three members holding the
// counts want, in any order.
func hasRow(text string, want []int) bool {
	for _, line := range strings.Split(text, "\n") {
		m := spreadRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		got := map[int]int{}
		for _, s := range m[1:] {
			n, _ := strconv.Atoi(s)
			got[n]++
		}
		need := map[int]int{}
		for _, n := range want {
			need[n]++
		}
		same := len(got) == len(need)
		for k, v := range need {
			same = same && got[k] == v
		}
		if same {
			return true
		}
	}
	return false
}
