package eventhubs_test

import (
	"context"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs/emulator"
)

// TestIdleRequestLinksReleased: the $cbs and $management request links
// are detached about a second after their last call, so an idle broker
// holds only its event links; the next call that needs one attaches a
// new link and works. The connection and the sender stay up throughout.
func TestIdleRequestLinksReleased(t *testing.T) {
	e := startEmulator(t, emulator.Config{IdleTimeout: -1})
	hub1, hub2 := newHub(t, e, 1), newHub(t, e, 1)
	logs := &logBuffer{}
	b := open(t, e, logs)

	if err := b.Publish(ctxT(t, 5*time.Second), hub1, &broker.Message{ID: "one"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.HubProperties(ctxT(t, 5*time.Second), hub1); err != nil {
		t.Fatal(err)
	}
	released := func(node string) int {
		return logs.count("request link released after idle", "node="+node)
	}
	for deadline := time.Now().Add(10 * time.Second); released("$cbs")+released("$management") < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("request links not released within 10 s:\n%s", logs)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Both nodes are needed again: a put-token for the new hub's sender,
	// and a management read.
	if err := b.Publish(ctxT(t, 5*time.Second), hub2, &broker.Message{ID: "two"}); err != nil {
		t.Fatalf("publish after the $cbs link was released: %v", err)
	}
	if _, err := b.PartitionProperties(ctxT(t, 5*time.Second), hub2, "0"); err != nil {
		t.Fatalf("management read after the $management link was released: %v", err)
	}
	// The first hub's sender was not touched by the releases.
	if err := b.Publish(ctxT(t, 5*time.Second), hub1, &broker.Message{ID: "three"}); err != nil {
		t.Fatal(err)
	}
	for _, node := range []string{"$cbs", "$management"} {
		if n := logs.count("request link attached", "node="+node); n != 2 {
			t.Errorf("%s link attached %d times, want 2 (before and after its release)", node, n)
		}
	}
	if n := logs.count("connection open"); n != 1 {
		t.Errorf("%d connections opened, want 1: releasing request links must not touch the connection", n)
	}
	if n := logs.count("sender attached", "target="+hub1); n != 1 {
		t.Errorf("sender to %s attached %d times, want 1", hub1, n)
	}
	if st := b.State(); st != broker.StateConnected {
		t.Errorf("state = %v, want connected", st)
	}
	_ = b.Close(context.Background())
}
