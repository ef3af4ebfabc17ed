package main

import (
	"context"
	"testing"
	"time"
)

func TestRouterExampleRuns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, 5); err != nil {
		t.Fatal(err)
	}
}
