package eventhubs_test

import (
	"context"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
	"github.com/isobroker/broker/internal/tcpproxy"
)

// TestSeverStateReported: the connection is cut from outside 300 times,
// each time followed at once by a publish, while a subscription's
// receivers use the connection too. Every loss shows in WatchState
// (StateReconnecting), and once a publish has succeeded on the
// replacement State is StateConnected. A caller that sees the dead
// connection before its supervisor does must not hide the loss (the
// supervisor then finds the replacement in the slot) nor report it after
// the replacement's StateConnected (State stuck at reconnecting on a
// working connection); before the fix, -race runs showed both a few
// times per thousand cuts.
func TestSeverStateReported(t *testing.T) {
	const cuts = 300
	e := startEmulator(t, emulator.Config{AutoCreate: true})
	hub := newHub(t, e, 4)
	px, err := tcpproxy.Start(e.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	b := open(t, e, nil, eventhubs.WithCustomEndpoint(px.Addr()))
	sub, err := b.Subscribe(ctxT(t, 10*time.Second), hub, func(context.Context, *broker.Delivery) error { return nil },
		broker.Group("g"))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	wctx, stop := context.WithCancel(context.Background())
	defer stop()
	changes := b.WatchState(wctx)

	publish := func(i int, what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := b.Publish(ctx, hub, &broker.Message{ID: what})
			cancel()
			if err == nil {
				return
			}
			if !broker.IsRetryable(err) || time.Now().After(deadline) {
				t.Fatalf("cut %d: publish %s: %v", i, what, err)
			}
		}
	}
	for i := range cuts {
		publish(i, "before")
		if s := b.State(); s != broker.StateConnected {
			t.Fatalf("cut %d: State %v after a successful publish, want %v", i, s, broker.StateConnected)
		}
		for len(changes) > 0 {
			<-changes
		}
		if px.Sever() == 0 {
			t.Fatalf("cut %d: no connection to cut", i)
		}
		publish(i, "after")
		timeout := time.After(10 * time.Second)
		for seen := false; !seen; {
			select {
			case c := <-changes:
				seen = c.To == broker.StateReconnecting
			case <-timeout:
				t.Fatalf("cut %d: the connection was cut and replaced, but State never reported %v", i, broker.StateReconnecting)
			}
		}
	}
}
