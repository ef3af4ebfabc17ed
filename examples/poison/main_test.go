package main

import (
	"context"
	"testing"
	"time"
)

// The poison-message example works on the embedded default.
func TestPoisonRuns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, "mem://"); err != nil {
		t.Fatal(err)
	}
}
