package main

import (
	"context"
	"testing"
	"time"
)

// The README's main command works on the embedded default.
func TestQuickstartRuns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, "mem://"); err != nil {
		t.Fatal(err)
	}
}
