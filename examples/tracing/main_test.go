package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// The example prints one trace whose tree follows the message from the
// request through both brokers.
func TestTracingPrintsOneTrace(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, &out, "mem://", "mem://"); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	if n := strings.Count(text, "trace "); n != 1 {
		t.Fatalf("%d traces printed, want 1:\n%s", n, text)
	}
	// Each step is indented under the one before it.
	steps := []string{"POST /orders [server]", "send orders [producer]", "process orders [consumer]",
		"send events [producer]", "process events [consumer]"}
	lines := strings.Split(text, "\n")
	depth := 0
	for _, step := range steps {
		found := false
		for _, l := range lines {
			if strings.HasPrefix(strings.TrimLeft(l, " "), step) {
				d := (len(l) - len(strings.TrimLeft(l, " "))) / 2
				if d <= depth {
					t.Errorf("%q at depth %d, want deeper than %d:\n%s", step, d, depth, text)
				}
				depth, found = d, true
				break
			}
		}
		if !found {
			t.Errorf("no %q in the tree:\n%s", step, text)
		}
	}
	for _, m := range []string{"messaging.client.sent.messages", "messaging.process.duration"} {
		if !strings.Contains(text, m) {
			t.Errorf("metric %s not printed:\n%s", m, text)
		}
	}
}
