package broker

import (
	"fmt"
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
