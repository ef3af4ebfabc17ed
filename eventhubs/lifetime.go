package eventhubs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
)

// setupTimeout bounds one attempt at building shared state — a request
// link, or a sender or receiver (put-token, session, attach); a connection
// (dial, TLS, WebSocket upgrade, AMQP open) has Config.DialTimeout, by
// default the same — which runs under the instance's lifetime, not under
// the ctx of the call that needed it. A caller that can wait longer retries
// a failed attempt within its own ctx.
const setupTimeout = 30 * time.Second

// lifetime is what shared state is built under: the instance's context
// (cancelled when Close tears down) and the tracker its goroutines run in.
type lifetime struct {
	ctx context.Context
	wg  *tracker
}

// awaitBuilt runs build on a goroutine of life, bounded by life.ctx and
// setupTimeout, and waits for it by ctx: ctx bounds the caller's wait, never
// the build. A caller cut short gets ctx.Err() at once; what build returns
// after that is handed to discard (when not nil and build succeeded), so
// that nothing half built or orphaned stays behind.
//
// This is the one rule for shared state: go-amqp abandons a session whose
// ctx ends before its Begin is written (and later ends it, which a strict
// peer answers by closing the connection), and returns from a multi-frame
// transfer cut by ctx without aborting it; neither may be left to the
// deadline of whichever caller happened to trigger the work.
func awaitBuilt[T any](ctx context.Context, life lifetime, build func(context.Context) (T, error), discard func(T)) (T, error) {
	type built struct {
		val T
		err error
	}
	done := make(chan built, 1)
	life.wg.Go(func() {
		bctx, cancel := context.WithTimeout(life.ctx, setupTimeout)
		defer cancel()
		v, err := build(bctx)
		done <- built{v, ownDeadline(bctx, life, err, "its setup timeout", setupTimeout)}
	})
	select {
	case r := <-done:
		return r.val, r.err
	case <-ctx.Done():
		var zero T
		if discard != nil {
			life.wg.Go(func() {
				if r := <-done; r.err == nil {
					discard(r.val)
				}
			})
		}
		return zero, ctx.Err()
	}
}

// ownDeadline turns a build cut short by its own bound (not by the
// instance's close) into an error that says so: it wraps
// broker.ErrUnavailable, is retryable, and does not wrap
// context.DeadlineExceeded, which callers and retry loops read as their
// own ctx ending although theirs may have time left.
//
// The build's socket deadlines come from bctx and may fire a moment
// before bctx's own timer, so the bound counts as reached by the clock
// too; only a timeout error is converted, never a refusal that happened
// to come late.
func ownDeadline(bctx context.Context, life lifetime, err error, bound string, d time.Duration) error {
	if err == nil || life.ctx.Err() != nil {
		return err
	}
	var ne net.Error
	if !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &ne) && ne.Timeout()) {
		return err
	}
	if dl, ok := bctx.Deadline(); bctx.Err() == nil && (!ok || time.Now().Before(dl)) {
		return err // a timeout of something else, before the bound
	}
	return driver.MarkRetryable(fmt.Errorf("%w: not done within %s (%v): %v", broker.ErrUnavailable, bound, d, err))
}

// slot holds one lazily built value (a connection, a link) shared by the
// instance's callers. One build runs at a time, under the instance's
// lifetime (see awaitBuilt); every caller — the one that started it
// included — waits for it by its own ctx, and a build whose callers all
// left still completes and is kept for the next one. No lock is held while
// building.
type slot[T comparable] struct {
	timeout  time.Duration // bounds each build; 0: setupTimeout
	bound    string        // names timeout in errors ("" : its setup timeout)
	mu       sync.Mutex
	val      T
	building *flight[T]
}

type flight[T any] struct {
	done chan struct{}
	val  T
	err  error
}

// get returns the held value if valid reports true for it; otherwise it
// starts a build under life, bounded by s.timeout (or joins the one in
// progress) and waits for it until ctx ends. abort ends the wait like ctx does, with errAbort. The
// build's error goes to every caller waiting for it when it fails; it is
// never a caller's ctx error.
func (s *slot[T]) get(ctx context.Context, life lifetime, abort <-chan struct{}, errAbort error, valid func(T) bool, build func(context.Context) (T, error)) (T, error) {
	var zero T
	s.mu.Lock()
	if s.val != zero && valid(s.val) {
		v := s.val
		s.mu.Unlock()
		return v, nil
	}
	f := s.building
	if f == nil {
		f = &flight[T]{done: make(chan struct{})}
		s.building = f
		timeout, bound := s.timeout, s.bound
		if timeout <= 0 {
			timeout = setupTimeout
		}
		if bound == "" {
			bound = "its setup timeout"
		}
		life.wg.Go(func() {
			bctx, cancel := context.WithTimeout(life.ctx, timeout)
			defer cancel()
			v, err := build(bctx)
			err = ownDeadline(bctx, life, err, bound, timeout)
			s.mu.Lock()
			s.building = nil
			f.val, f.err = v, err
			if err == nil {
				s.val = v
			}
			s.mu.Unlock()
			close(f.done)
		})
	}
	s.mu.Unlock()
	select {
	case <-f.done:
		return f.val, f.err
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-abort:
		return zero, errAbort
	}
}

// peek returns the held value (the zero value when none).
func (s *slot[T]) peek() T {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.val
}

// drop forgets v if it is the held value. It reports whether it did.
func (s *slot[T]) drop(v T) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	var zero T
	if v != zero && s.val == v {
		s.val = zero
		return true
	}
	return false
}

// tracker counts goroutines like a sync.WaitGroup, but may gain new ones
// while someone waits, and its wait obeys a ctx.
type tracker struct {
	mu   sync.Mutex
	n    int
	zero chan struct{}
}

// Add adds n goroutines.
func (t *tracker) Add(n int) {
	t.mu.Lock()
	t.n += n
	t.mu.Unlock()
}

// Done marks one goroutine finished.
func (t *tracker) Done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 && t.zero != nil {
		close(t.zero)
		t.zero = nil
	}
}

// Go runs f in a tracked goroutine.
func (t *tracker) Go(f func()) {
	t.Add(1)
	go func() {
		defer t.Done()
		f()
	}()
}

// wait waits until no tracked goroutine runs, or ctx ends.
func (t *tracker) wait(ctx context.Context) error {
	t.mu.Lock()
	if t.n == 0 {
		t.mu.Unlock()
		return nil
	}
	if t.zero == nil {
		t.zero = make(chan struct{})
	}
	ch := t.zero
	t.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
