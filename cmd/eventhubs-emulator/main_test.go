package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
