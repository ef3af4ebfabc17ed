package broker

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// State is a Broker's connection state.
type State int

// Connection states. StateClosed is final.
const (
	// StateConnecting: the first connection is being established.
	StateConnecting State = iota
	// StateConnected: the broker is connected and serving.
	StateConnected
	// StateReconnecting: the connection was lost and is being recovered;
	// calls wait (by their ctx) or fail with a retryable error.
	StateReconnecting
	// StateClosed: Close was called; every call returns ErrClosed.
	StateClosed
)

// String returns the state's lower-case name.
func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateReconnecting:
		return "reconnecting"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// StateChange is one transition reported by Broker.WatchState.
type StateChange struct {
	// From is the state before the transition, To the state after it.
	From, To State
	// Err is the cause of a transition to StateReconnecting (the error the
	// connection was lost with), or nil.
	Err error
	// At is when the transition happened.
	At time.Time
}

// watchBuffer is how many unread changes a watcher channel holds before the
// oldest are dropped.
const watchBuffer = 16

// StateTracker holds a broker's State and fans its changes out to watchers
// without ever blocking the caller of Set. Adapters embed one; its zero
// value is not usable, create it with NewStateTracker.
type StateTracker struct {
	mu       sync.Mutex
	state    State
	watchers map[chan StateChange]func() bool // value stops the ctx hook
}

// NewStateTracker returns a tracker in state initial.
func NewStateTracker(initial State) *StateTracker {
	return &StateTracker{state: initial, watchers: make(map[chan StateChange]func() bool)}
}

// State returns the current state.
func (t *StateTracker) State() State {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.state
}

// Set moves to state to with cause err and notifies watchers. It never
// blocks on a watcher. Set is a no-op when the state is already to, and
// once StateClosed is reached no other state can follow. It returns the
// change, and false if nothing changed.
func (t *StateTracker) Set(to State, err error) (StateChange, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state == to || t.state == StateClosed {
		return StateChange{}, false
	}
	c := StateChange{From: t.state, To: to, Err: err, At: time.Now()}
	t.state = to
	for ch, stop := range t.watchers {
		offer(ch, c)
		if to == StateClosed {
			stop()
			close(ch)
			delete(t.watchers, ch)
		}
	}
	return c, true
}

// offer sends c on ch without blocking, dropping the oldest unread change
// when ch is full. The caller holds t.mu, so no other sender races it.
func offer(ch chan StateChange, c StateChange) {
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

// Watch implements Broker.WatchState.
func (t *StateTracker) Watch(ctx context.Context) <-chan StateChange {
	ch := make(chan StateChange, watchBuffer)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state == StateClosed || ctx.Err() != nil {
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
