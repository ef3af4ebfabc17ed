package driver

import (
	"context"
	"sync"
	"time"

	"github.com/isobroker/broker"
)

// watchBuffer is how many unread changes a watcher channel holds before the
// oldest are dropped.
const watchBuffer = 16

// StateTracker holds a broker's State and fans its changes out to watchers
// without ever blocking the caller of Set. Adapters embed one; its zero
// value is not usable, create it with NewStateTracker.
type StateTracker struct {
	mu       sync.Mutex
	state    broker.State
	watchers map[chan broker.StateChange]func() bool // value stops the ctx hook
	hook     func(broker.StateChange)                // Instruments.Track's, or nil
}

// setHook makes f see every later change, in order, under the tracker's
// lock: f must not block or call back into the tracker.
func (t *StateTracker) setHook(f func(broker.StateChange)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.hook = f
}

// NewStateTracker returns a tracker in state initial.
func NewStateTracker(initial broker.State) *StateTracker {
	return &StateTracker{state: initial, watchers: make(map[chan broker.StateChange]func() bool)}
}

// State returns the current state.
func (t *StateTracker) State() broker.State {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.state
}

// Set moves to state to with cause err and notifies watchers. It never
// blocks on a watcher. Set is a no-op when the state is already to, and
// once broker.StateClosed is reached no other state can follow. It returns the
// change, and false if nothing changed.
func (t *StateTracker) Set(to broker.State, err error) (broker.StateChange, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state == to || t.state == broker.StateClosed {
		return broker.StateChange{}, false
	}
	c := broker.StateChange{From: t.state, To: to, Err: err, At: time.Now()}
	t.state = to
	if t.hook != nil {
		t.hook(c)
	}
	for ch, stop := range t.watchers {
		offer(ch, c)
		if to == broker.StateClosed {
			stop()
			close(ch)
			delete(t.watchers, ch)
		}
	}
	return c, true
}

// offer sends c on ch without blocking, dropping the oldest unread change
// when ch is full. The caller holds t.mu, so no other sender races it.
func offer(ch chan broker.StateChange, c broker.StateChange) {
	for {
		select {
		case ch <- c:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}

// Watch implements broker.Broker.WatchState.
func (t *StateTracker) Watch(ctx context.Context) <-chan broker.StateChange {
	ch := make(chan broker.StateChange, watchBuffer)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state == broker.StateClosed || ctx.Err() != nil {
		close(ch)
		return ch
	}
	t.watchers[ch] = context.AfterFunc(ctx, func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if _, ok := t.watchers[ch]; ok {
			delete(t.watchers, ch)
			close(ch)
		}
	})
	return ch
}
