package eventhubs_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
)

// storedIDs reads every event stored in partition 0 of hub, in order.
func storedIDs(t *testing.T, b *eventhubs.Broker, hub string) []string {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	pp, err := b.PartitionProperties(ctx, hub, "0")
	if err != nil {
		t.Fatal(err)
	}
	want := int(pp.LastEnqueuedSequenceNumber + 1)
	var mu sync.Mutex
	var ids []string
	all := make(chan struct{})
	sub, err := b.Subscribe(ctx, hub, func(_ context.Context, d *broker.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		ids = append(ids, d.ID)
		if len(ids) == want {
			close(all)
		}
		return nil
	}, broker.StartAt(broker.Earliest()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Close(ctxT(t, 10*time.Second)) }()
	select {
	case <-all:
	case <-ctx.Done():
		t.Fatalf("read %d of %d stored events", len(ids), want)
	}
	mu.Lock()
	defer mu.Unlock()
	return append([]string(nil), ids...)
}

// TestResendKeepsPerKeyOrder publishes, in one call, events of two keys
// interleaved (so that each is a batch of its own, pipelined on one link)
// while the emulator fails one transfer. The call must succeed, and what
// the partition really holds must keep each key's events in the order
// they were given: a key's sequence of stored indexes may repeat an event
// (at least once) but never go back.
func TestResendKeepsPerKeyOrder(t *testing.T) {
	faults := map[string]struct{ cond, desc string }{
		"rejected-busy":    {emulator.CondServerBusy, ""},
		"settled-no-state": {"", ""},
	}
	e := startEmulator(t, emulator.Config{})
	for name, f := range faults {
		for _, nth := range []int{1, 2, 5} {
			t.Run(fmt.Sprintf("%s/transfer-%d", name, nth), func(t *testing.T) {
				hub := newHub(t, e, 1)
				b := open(t, e, nil)
				// Attach the sender first, so that the fault counts only
				// the call's own transfers.
				if err := b.Publish(ctxT(t, 10*time.Second), hub, &broker.Message{ID: "warm", Body: []byte("w")}); err != nil {
					t.Fatal(err)
				}
				const perKey = 8
				var msgs []*broker.Message
				for i := range perKey {
					for _, k := range []string{"k1", "k2"} {
						msgs = append(msgs, &broker.Message{ID: k + "/" + strconv.Itoa(i), Key: k, Body: []byte(k)})
					}
				}
				e.Faults().FailTransfer(nth, f.cond, f.desc)
				if err := b.Publish(ctxT(t, 20*time.Second), hub, msgs...); err != nil {
					t.Fatalf("publish: %v", err)
				}
				last := map[string]int{"k1": -1, "k2": -1}
				stored := map[string]bool{}
				for _, id := range storedIDs(t, b, hub) {
					if id == "warm" {
						continue
					}
					stored[id] = true
					k, n, _ := strings.Cut(id, "/")
					i, _ := strconv.Atoi(n)
					if i < last[k] {
						t.Errorf("key %s: event %d stored after event %d", k, i, last[k])
					}
					last[k] = i
				}
				for _, m := range msgs {
					if !stored[m.ID] {
						t.Errorf("event %s: Publish returned nil, but the partition does not hold it", m.ID)
					}
				}
			})
		}
	}
}
