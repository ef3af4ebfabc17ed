package driver

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/isobroker/broker"
)

// startSub returns a tracked, started subscription whose one goroutine
// runs until the subscription stops, calling h once per value sent on in.
func startSub(t *testing.T, g *Gate, ctx context.Context, h broker.Handler, in <-chan string) *Subscription {
	t.Helper()
	s := NewSubscription(ctx, "test", "topic", slog.New(slog.DiscardHandler))
	if !g.Track(s) {
		t.Fatal("Track refused an open gate")
	}
	s.Go(func() {
		for {
			select {
			case <-s.Stopping():
				return
			case id := <-in:
				if !s.Begin() {
					return
				}
				_, _ = s.Call(h, &broker.Delivery{Message: &broker.Message{ID: id}})
				s.End()
			}
		}
	})
	s.Start(nil)
	return s
}

func TestGateRefusesAfterClose(t *testing.T) {
	g := NewGate()
	if !g.Enter() {
		t.Fatal("Enter on an open gate = false")
	}
	g.Leave()
	if !g.Close() {
		t.Fatal("first Close = false")
	}
	if g.Close() {
		t.Error("second Close = true, want false (the adapter returns ErrClosed)")
	}
	if g.Enter() {
		t.Error("Enter after Close = true")
	}
	if !g.IsClosing() {
		t.Error("IsClosing after Close = false")
	}
	select {
	case <-g.Closing():
	default:
		t.Error("Closing not closed after Close")
	}
	s := NewSubscription(context.Background(), "test", "topic", slog.New(slog.DiscardHandler))
	if g.Track(s) {
		t.Error("Track after Close = true")
	}
	s.Abandon(broker.ErrClosed)
	select {
	case <-s.Done():
	default:
		t.Error("an abandoned subscription is not done")
	}
	if !errors.Is(s.Err(), broker.ErrClosed) {
		t.Errorf("Err of a subscription abandoned with ErrClosed = %v", s.Err())
	}
}

func TestShutdownWaitsForCallsByContext(t *testing.T) {
	g := NewGate()
	if !g.Enter() {
		t.Fatal("Enter refused")
	}
	g.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := g.Shutdown(ctx, "test", UntilEnded)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a call still in flight = %v, want DeadlineExceeded", err)
	}
	// Once the call leaves, a second drain finishes at once.
	g.Leave()
	if _, err := g.Shutdown(context.Background(), "test", UntilEnded); err != nil {
		t.Errorf("Shutdown after the call left = %v", err)
	}
}

func TestShutdownStopsSubscriptionsWithErrClosed(t *testing.T) {
	g := NewGate()
	in := make(chan string)
	subs := []*Subscription{
		startSub(t, g, context.Background(), func(context.Context, *broker.Delivery) error { return nil }, in),
		startSub(t, g, context.Background(), func(context.Context, *broker.Delivery) error { return nil }, in),
	}
	g.Close()
	got, err := g.Shutdown(context.Background(), "test", UntilEnded)
	if err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if len(got) != len(subs) {
		t.Fatalf("Shutdown returned %d subscriptions, want %d", len(got), len(subs))
	}
	for i, s := range subs {
		select {
		case <-s.Done():
		default:
			t.Errorf("subscription %d not done after Shutdown(UntilEnded)", i)
		}
		if !errors.Is(s.Err(), broker.ErrClosed) {
			t.Errorf("subscription %d Err = %v, want ErrClosed", i, s.Err())
		}
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("first Close after the broker closed = %v, want nil", err)
		}
		if !errors.Is(s.Err(), broker.ErrClosed) {
			t.Errorf("Err changed by a later Close: %v", s.Err())
		}
	}
	if n := len(g.subs); n != 0 {
		t.Errorf("%d ended subscriptions still tracked", n)
	}
}

func TestShutdownCancelsStuckHandlersByContext(t *testing.T) {
	g := NewGate()
	in := make(chan string)
	started := make(chan struct{})
	sawCancel := make(chan struct{})
	release := make(chan struct{})
	s := startSub(t, g, context.Background(), func(ctx context.Context, _ *broker.Delivery) error {
		close(started)
		<-ctx.Done()
		close(sawCancel)
		<-release // ignores its ctx after that: truly stuck
		return nil
	}, in)
	in <- "m"
	<-started
	g.Close()
	for _, w := range []Wait{UntilHandlersIdle, UntilEnded} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err := g.Shutdown(ctx, "test", w)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown(%d) with a stuck handler = %v, want DeadlineExceeded", w, err)
		}
	}
	select {
	case <-sawCancel:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's ctx was not cancelled when the Close ctx ended")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	s.WaitEnded(ctx) // a handler still runs: returns without waiting for it
	select {
	case <-s.Done():
		t.Fatal("done while its handler still runs")
	default:
	}
	close(release)
	<-s.Done()
}

func TestSubscribeContextEndStopsSubscription(t *testing.T) {
	g := NewGate()
	ctx, cancel := context.WithCancel(context.Background())
	s := startSub(t, g, ctx, func(context.Context, *broker.Delivery) error { return nil }, make(chan string))
	cancel()
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("subscription still running after its Subscribe ctx ended")
	}
	if !errors.Is(s.Err(), context.Canceled) {
		t.Errorf("Err = %v, want context.Canceled", s.Err())
	}
}

func TestCloseOnceThenErrClosed(t *testing.T) {
	g := NewGate()
	s := startSub(t, g, context.Background(), func(context.Context, *broker.Delivery) error { return nil }, make(chan string))
	if s.Err() != nil {
		t.Errorf("Err while running = %v", s.Err())
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if s.Err() != nil {
		t.Errorf("Err after the user's Close = %v, want nil", s.Err())
	}
	if err := s.Close(context.Background()); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
	s.Stop(errors.New("late cause")) // after the end: changes nothing
	if s.Err() != nil {
		t.Errorf("Err after a late Stop = %v, want nil", s.Err())
	}
}

func TestCallTurnsPanicIntoError(t *testing.T) {
	g := NewGate()
	in := make(chan string)
	errs := make(chan error, 1)
	s := NewSubscription(context.Background(), "test", "topic", slog.New(slog.DiscardHandler))
	g.Track(s)
	s.Go(func() {
		<-in
		_, err := s.Call(func(context.Context, *broker.Delivery) error { panic("boom") }, &broker.Delivery{Message: &broker.Message{}})
		errs <- err
		<-s.Stopping()
	})
	s.Start(nil)
	in <- "m"
	err := <-errs
	if err == nil || err.Error() != "test: handler panicked: boom" {
		t.Errorf("Call of a panicking handler = %v", err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Errorf("Close = %v", err)
	}
}

func TestTrackRacesClose(t *testing.T) {
	// Whatever the interleaving, a subscription is either refused or
	// stopped by Shutdown: none is left running after a Close.
	for range 200 {
		g := NewGate()
		var wg sync.WaitGroup
		subs := make(chan *Subscription, 1)
		wg.Go(func() {
			s := NewSubscription(context.Background(), "test", "topic", slog.New(slog.DiscardHandler))
			if !g.Track(s) {
				s.Abandon(broker.ErrClosed)
				subs <- s
				return
			}
			s.Go(func() { <-s.Stopping() })
			s.Start(nil)
			subs <- s
		})
		g.Close()
		if _, err := g.Shutdown(context.Background(), "test", UntilEnded); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		s := <-subs
		select {
		case <-s.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("a subscription tracked during Close is still running")
		}
	}
}
