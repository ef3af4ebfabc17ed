package driver_test

import (
	"context"
	"testing"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
)

// A watcher that never reads cannot block Set; it still gets the latest
// changes, ending with the move to closed.
func TestStateTrackerNeverBlocks(t *testing.T) {
	tr := driver.NewStateTracker(broker.StateConnecting)
	ch := tr.Watch(context.Background())
	for range 1000 {
		tr.Set(broker.StateConnected, nil)
		tr.Set(broker.StateReconnecting, nil)
	}
	tr.Set(broker.StateClosed, nil)
	var last broker.StateChange
	n := 0
	for c := range ch {
		last = c
		n++
	}
	if last.To != broker.StateClosed || n == 0 || n > 16 {
		t.Fatalf("read %d changes ending with %+v; want at most 16 ending with closed", n, last)
	}
	if _, changed := tr.Set(broker.StateConnected, nil); changed || tr.State() != broker.StateClosed {
		t.Fatalf("closed is not final")
	}
}

func TestStateWatchEndsWithContext(t *testing.T) {
	tr := driver.NewStateTracker(broker.StateConnected)
	ctx, cancel := context.WithCancel(context.Background())
	ch := tr.Watch(ctx)
	tr.Set(broker.StateReconnecting, nil)
	cancel()
	got := []broker.State{}
	for c := range ch { // closed by the ctx
		got = append(got, c.To)
	}
	if len(got) > 1 || (len(got) == 1 && got[0] != broker.StateReconnecting) {
		t.Fatalf("changes after cancel = %v", got)
	}
	tr.Set(broker.StateConnected, nil) // must not panic on the removed watcher
}
