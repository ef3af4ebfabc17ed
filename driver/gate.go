package driver

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/isobroker/broker"
)

// Gate is the Broker lifecycle every adapter shares: it admits calls
// (Enter/Leave), tracks running subscriptions, and carries out the part of
// Close that is the same everywhere — refuse new work at once, stop the
// subscriptions, and wait by the Close ctx for their handlers and for the
// calls already admitted. What an adapter must tear down afterwards
// (connections, sessions, its own goroutines) stays in the adapter.
//
// Create it with NewGate; it is safe for concurrent use.
type Gate struct {
	closing chan struct{} // closed by Close

	mu      sync.Mutex
	closed  bool
	active  int           // admitted calls that have not left
	drained chan struct{} // closed when active drops to 0 after Close
	subs    map[*Subscription]struct{}
}

// NewGate returns an open gate.
func NewGate() *Gate {
	return &Gate{closing: make(chan struct{}), subs: make(map[*Subscription]struct{})}
}

// Enter admits a call (a Publish, a Subscribe that is setting up). It
// returns false once Close has begun: the caller then returns an error
// wrapping broker.ErrClosed. Every true must be matched by one Leave.
// It never blocks on anything but the gate's own lock.
func (g *Gate) Enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.active++
	return true
}

// Leave ends a call admitted by Enter.
func (g *Gate) Leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.active--
	if g.active == 0 && g.drained != nil {
		close(g.drained)
		g.drained = nil
	}
}

// Closing is closed when Close begins.
func (g *Gate) Closing() <-chan struct{} { return g.closing }

// IsClosing reports whether Close has begun.
func (g *Gate) IsClosing() bool {
	select {
	case <-g.closing:
		return true
	default:
		return false
	}
}

// Track registers a subscription that has not started yet, so that the
// Broker's Close stops it. It returns false once Close has begun (the
// adapter then abandons the subscription and returns ErrClosed). A tracked
// subscription leaves the gate by itself when it ends; after a true
// return the adapter must call Start or Abandon on it.
func (g *Gate) Track(s *Subscription) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.subs[s] = struct{}{}
	s.gate = g
	return true
}

func (g *Gate) untrack(s *Subscription) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.subs, s)
}

// Close begins the Broker's Close: from now on Enter and Track return
// false and Closing is closed. It returns false when Close had already
// begun (the adapter's Close then returns ErrClosed). It does not wait:
// Shutdown does.
func (g *Gate) Close() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.closed = true
	close(g.closing)
	return true
}

// Wait says what Shutdown waits for.
type Wait int

const (
	// UntilEnded waits until each subscription has ended (Done closed):
	// for adapters whose subscriptions wind down without help once
	// stopped.
	UntilEnded Wait = iota
	// UntilHandlersIdle waits only until no handler of a stopped
	// subscription is running, for adapters whose subscription goroutines
	// end only once the adapter has closed its connections (it then waits
	// with Subscription.WaitEnded).
	UntilHandlersIdle
)

// Shutdown is the shared middle of a Broker's Close, after Close: it stops
// every tracked subscription (their Err then reports an error wrapping
// broker.ErrClosed), waits for them as w says, then waits until every
// admitted call has left — all bounded by ctx. When ctx ends first the
// handlers' contexts are cancelled and the error wraps ctx.Err(); it names
// every wait that did not finish (errors joined). It returns the
// subscriptions it stopped, for the adapter's own teardown.
func (g *Gate) Shutdown(ctx context.Context, prefix string, w Wait) ([]*Subscription, error) {
	g.mu.Lock()
	subs := make([]*Subscription, 0, len(g.subs))
	for s := range g.subs {
		subs = append(subs, s)
	}
	var drained chan struct{}
	n := g.active
	if n > 0 {
		drained = make(chan struct{})
		g.drained = drained
	}
	g.mu.Unlock()

	cause := fmt.Errorf("%s: subscription: %w", prefix, broker.ErrClosed)
	for _, s := range subs {
		s.Stop(cause)
	}
	var errs []error
	for _, s := range subs {
		var err error
		if w == UntilHandlersIdle {
			err = s.WaitHandlers(ctx)
		} else {
			err = s.Wait(ctx)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if drained != nil {
		select {
		case <-drained:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("%d call(s) still in flight: %w", n, ctx.Err()))
		}
	}
	return subs, errors.Join(errs...)
}
