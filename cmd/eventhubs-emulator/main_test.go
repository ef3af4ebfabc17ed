package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/go-amqp"
)

func TestRunPrintsConnectionStrings(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "emu.json")
	if err := os.WriteFile(cfgPath, []byte(`{"hubs":[{"name":"orders","partitions":2}],"key":"c2VjcmV0","idle_timeout":"5s"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-config", cfgPath, "-addr", "127.0.0.1:0", "-hub", "audit:1:g1,g2", "-log-level", "warn"}, pw, io.Discard)
		_ = pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	var lines []string
	for len(lines) < 3 && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) != 3 {
		t.Fatalf("output %q", lines)
	}
	for i, want := range []string{"", ";EntityPath=orders", ";EntityPath=audit"} {
		if !strings.HasPrefix(lines[i], "Endpoint=sb://127.0.0.1:") || !strings.Contains(lines[i], "SharedAccessKey=c2VjcmV0;UseDevelopmentEmulator=true") ||
			!strings.HasSuffix(lines[i], "UseDevelopmentEmulator=true"+want) {
			t.Fatalf("line %d: %q", i, lines[i])
		}
	}
	cancel()
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return")
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	if err := run(context.Background(), []string{"-hub", "x:notanumber"}, io.Discard, io.Discard); err == nil {
		t.Fatal("bad -hub accepted")
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "bad.json")
	_ = os.WriteFile(p, []byte(`{"unknown": 1}`), 0o600)
	if err := run(context.Background(), []string{"-config", p}, io.Discard, io.Discard); err == nil {
		t.Fatal("unknown config field accepted")
	}
}

// startRun runs the command with args and returns the connection strings
// it printed (want of them) and a stop function that checks run's result.
func startRun(t *testing.T, want int, args ...string) []string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, args, pw, io.Discard)
		_ = pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	var lines []string
	for len(lines) < want && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	t.Cleanup(func() {
		cancel()
		go func() { _, _ = io.Copy(io.Discard, pr) }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("run did not return")
		}
	})
	if len(lines) != want {
		cancel()
		t.Fatalf("output %q, want %d lines", lines, want)
	}
	return lines
}

func endpointOf(t *testing.T, cs string) string {
	t.Helper()
	rest, ok := strings.CutPrefix(cs, "Endpoint=sb://")
	if !ok || !strings.Contains(rest, ";") {
		t.Fatalf("connection string %q has no sb:// endpoint", cs)
	}
	return rest[:strings.IndexByte(rest, ';')]
}

// TestRunHubsGroupsAndKeyFlags: -hubs, -partitions, -consumer-groups, -hub
// with its own groups, -key-name and -key make the hubs, partitions and
// consumer groups a client then finds (attaching a receiver succeeds), and
// nothing more (not-found).
func TestRunHubsGroupsAndKeyFlags(t *testing.T) {
	lines := startRun(t, 4, "-addr", "127.0.0.1:0", "-hubs", "alpha:2,beta", "-partitions", "3",
		"-consumer-groups", "g1,g2", "-hub", "gamma:1:own", "-key-name", "team", "-key", "dGVhbS1rZXk=", "-log-level", "warn")
	for i, hub := range []string{"", "alpha", "beta", "gamma"} {
		if !strings.Contains(lines[i], ";SharedAccessKeyName=team;SharedAccessKey=dGVhbS1rZXk=;UseDevelopmentEmulator=true") {
			t.Errorf("line %d: %q lacks the key flags", i, lines[i])
		}
		if hub != "" && !strings.HasSuffix(lines[i], ";EntityPath="+hub) {
			t.Errorf("line %d: %q, want EntityPath=%s", i, lines[i], hub)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := amqp.Dial(ctx, "amqp://"+endpointOf(t, lines[0]), &amqp.ConnOptions{SASLType: amqp.SASLTypePlain("team", "dGVhbS1rZXk=")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := c.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		hub, group, partition string
		exists                bool
	}{
		{"alpha", "$Default", "1", true},
		{"alpha", "g1", "1", true},
		{"alpha", "g2", "0", true},
		{"alpha", "$Default", "2", false}, // two partitions: 0 and 1
		{"alpha", "g3", "0", false},
		{"alpha", "own", "0", false}, // own is gamma's alone
		{"beta", "g1", "2", true},    // -partitions 3
		{"beta", "g2", "3", false},
		{"gamma", "own", "0", true},
		{"gamma", "g2", "0", true},
		{"gamma", "$Default", "1", false},
	} {
		addr := tc.hub + "/ConsumerGroups/" + tc.group + "/Partitions/" + tc.partition
		r, err := s.NewReceiver(ctx, addr, nil)
		if tc.exists {
			if err != nil {
				t.Errorf("%s: %v", addr, err)
				continue
			}
			_ = r.Close(ctx)
			continue
		}
		if cond := remoteCondition(err); cond != amqp.ErrCondNotFound {
			t.Errorf("%s: %v (condition %q), want amqp:not-found", addr, err, cond)
		}
	}
}

// remoteCondition is the AMQP error condition the server sent, if any.
func remoteCondition(err error) amqp.ErrCond {
	var le *amqp.LinkError
	if errors.As(err, &le) && le.RemoteErr != nil {
		return le.RemoteErr.Condition
	}
	var ae *amqp.Error
	if errors.As(err, &ae) {
		return ae.Condition
	}
	return ""
}

// TestRunPortFlag: -port replaces the port of -addr (0: a free one).
func TestRunPortFlag(t *testing.T) {
	lines := startRun(t, 1, "-addr", "127.0.0.1:5672", "-port", "0", "-log-level", "warn")
	host, port, err := net.SplitHostPort(endpointOf(t, lines[0]))
	if err != nil || host != "127.0.0.1" || port == "5672" || port == "0" {
		t.Fatalf("endpoint %q (%v): want 127.0.0.1 and a free port, not 5672", endpointOf(t, lines[0]), err)
	}
}

func TestRunRejectsBadListFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-hubs", "a:1:g"},          // groups belong to -hub
		{"-hubs", "a,,b"},           // empty entry
		{"-hubs", "a:x"},            // partitions not a number
		{"-consumer-groups", "g1,"}, // empty entry
		{"-port", "70000"},
		{"-addr", "nonsense", "-port", "1"},
	} {
		if err := run(context.Background(), append(args, "-log-level", "warn"), io.Discard, io.Discard); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}

func TestDialableEndpoint(t *testing.T) {
	for in, want := range map[string]string{
		"Endpoint=sb://0.0.0.0:5672;SharedAccessKeyName=k":   "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=k",
		"Endpoint=sb://[::]:5672;SharedAccessKeyName=k":      "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=k",
		"Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=k": "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=k",
		"Endpoint=sb://10.1.2.3:5672;SharedAccessKeyName=k":  "Endpoint=sb://10.1.2.3:5672;SharedAccessKeyName=k",
	} {
		if got := dialable(in); got != want {
			t.Errorf("dialable(%q) = %q, want %q", in, got, want)
		}
	}
}
