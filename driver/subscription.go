package driver

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"

	"github.com/isobroker/broker"
)

// Subscription is the lifecycle every adapter's subscription shares; the
// adapter embeds a *Subscription and adds how it receives and settles.
// It implements broker.Subscription's Close, Done and Err:
//
//   - it stops once, for the first cause (Stop); Err reports that cause
//     after Done, except nil when the user's Close came first;
//   - the Subscribe ctx ending stops it with ctx.Err();
//   - Done is closed when every goroutine started with Go has returned;
//   - Close stops it and waits by its ctx, cancelling the handlers'
//     context when that ctx ends first; a second Close returns ErrClosed;
//   - Call runs the handler under the handler context (cancelled when the
//     Subscribe ctx ends, or a Close gives up waiting), turning a panic
//     into an error.
//
// Sequence: NewSubscription, Gate.Track, then Go for the goroutines the
// subscription runs and Start once; or Abandon when the Subscribe fails
// before Start.
type Subscription struct {
	prefix   string // the adapter's name, for error texts
	topic    string
	log      *slog.Logger
	gate     *Gate        // set by Gate.Track
	ins      *Instruments // set by Instrument; nil: none
	insGroup string       // consumer group of the process spans

	subscribeCtx   context.Context
	handlerCtx     context.Context
	cancelHandlers context.CancelFunc
	stopCtx        context.Context // cancelled by Stop
	cancelStop     context.CancelFunc
	stopHook       func() bool // the Subscribe ctx's AfterFunc, once started

	wg   sync.WaitGroup
	done chan struct{}

	mu         sync.Mutex
	stopped    bool
	err        error
	userClosed bool
	active     int           // handler calls between Begin and End
	idle       chan struct{} // closed once stopped and active == 0
}

// NewSubscription returns the lifecycle of a subscription made by a
// Subscribe call with ctx, on topic, for the adapter named prefix
// ("rabbit"), logging through log.
func NewSubscription(ctx context.Context, prefix, topic string, log *slog.Logger) *Subscription {
	s := &Subscription{
		prefix: prefix, topic: topic, log: log,
		subscribeCtx: ctx,
		done:         make(chan struct{}),
		idle:         make(chan struct{}),
	}
	s.handlerCtx, s.cancelHandlers = context.WithCancel(ctx)
	s.stopCtx, s.cancelStop = context.WithCancel(context.Background())
	return s
}

// Instrument makes Call trace and measure handler calls with in (nil:
// not at all); consumerGroup is the messaging.consumer.group.name of
// those calls: the group as the server knows it ("" for none), which may
// differ from the Delivery's Group (Event Hubs reads a subscription
// without a Group through its default consumer group). Call it before
// Start.
func (s *Subscription) Instrument(in *Instruments, consumerGroup string) {
	s.ins, s.insGroup = in, consumerGroup
}

// HandlerContext is the context handlers get: it ends when the Subscribe
// ctx ends or when a Close stops waiting for handlers.
func (s *Subscription) HandlerContext() context.Context { return s.handlerCtx }

// StopContext ends when the subscription stops: receives, attaches and
// retry waits of the adapter run under it.
func (s *Subscription) StopContext() context.Context { return s.stopCtx }

// Stopping is closed when the subscription stops.
func (s *Subscription) Stopping() <-chan struct{} { return s.stopCtx.Done() }

// IsStopping reports whether the subscription has stopped.
func (s *Subscription) IsStopping() bool { return s.stopCtx.Err() != nil }

// Topic is the subscription's topic.
func (s *Subscription) Topic() string { return s.topic }

// Go runs f as one of the subscription's goroutines: Done waits for it.
// Call it before Start, or from a goroutine started by Go while that one
// still runs.
func (s *Subscription) Go(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Start arms the Subscribe ctx (its end stops the subscription) and,
// once every goroutine started with Go has returned, releases the
// contexts, leaves the gate, runs onEnd (if not nil) and closes Done.
// Call it once.
func (s *Subscription) Start(onEnd func()) {
	s.stopHook = context.AfterFunc(s.subscribeCtx, func() { s.Stop(s.subscribeCtx.Err()) })
	go func() {
		s.wg.Wait()
		if err := s.subscribeCtx.Err(); err != nil {
			s.Stop(err) // goroutines may see the ctx before the AfterFunc runs
		}
		s.stopHook()
		s.end(onEnd)
	}()
}

// Abandon ends a subscription that never started (its Subscribe failed):
// it stops it, waits for goroutines already started with Go, and releases
// everything Start would have. Err reports cause.
func (s *Subscription) Abandon(cause error) {
	s.Stop(cause)
	s.wg.Wait()
	s.end(nil)
}

func (s *Subscription) end(onEnd func()) {
	s.cancelHandlers()
	s.cancelStop()
	if s.gate != nil {
		s.gate.untrack(s)
	}
	if onEnd != nil {
		onEnd()
	}
	close(s.done)
}

// Stop makes the subscription take no more messages; its goroutines watch
// Stopping and return. The first cause is what Err reports (unless the
// user's Close came first). Later calls do nothing. It never blocks.
func (s *Subscription) Stop(cause error) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	if !s.userClosed {
		s.err = cause
	}
	if s.active == 0 {
		close(s.idle)
	}
	s.mu.Unlock()
	s.cancelStop()
}

// Begin registers a handler call about to run, for adapters whose Broker
// Close waits with UntilHandlersIdle; false once stopped (leave the
// message unsettled: the adapter's teardown returns it to the broker).
// Every true must be matched by End, after the message is settled.
func (s *Subscription) Begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	s.active++
	return true
}

// HandlersIdle is closed once the subscription has stopped and no
// handler call registered by Begin is running.
func (s *Subscription) HandlersIdle() <-chan struct{} { return s.idle }

// End ends a handler call registered by Begin.
func (s *Subscription) End() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active--
	if s.stopped && s.active == 0 {
		close(s.idle)
	}
}

// Call runs h on d under the handler context and returns its error; a
// panic is logged with its stack and returned as an error. Under
// instrumentation (Instrument) the handler's ctx carries the process span,
// whose parent is the trace context found in d's headers; the adapter ends
// it with the returned Processing's Settled or End once it has settled the
// message. Without, the Processing does nothing and costs nothing.
func (s *Subscription) Call(h broker.Handler, d *broker.Delivery) (Processing, error) {
	if s.ins == nil {
		return Processing{}, s.call(s.handlerCtx, h, d)
	}
	ctx, p := s.ins.startProcess(s.handlerCtx, d, s.insGroup)
	err := s.call(ctx, h, d)
	p.handled(err)
	return p, err
}

func (s *Subscription) call(ctx context.Context, h broker.Handler, d *broker.Delivery) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("handler panicked", "topic", s.topic, "group", d.Group, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("%s: handler panicked: %v", s.prefix, r)
		}
	}()
	return h(ctx, d)
}

// Wait waits until the subscription has ended or ctx ends; then it
// cancels the handlers' context and returns an error wrapping ctx.Err().
func (s *Subscription) Wait(ctx context.Context) error {
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		s.cancelHandlers()
		return fmt.Errorf("handlers of %q still running: %w", s.topic, ctx.Err())
	}
}

// WaitHandlers waits, once the subscription has stopped, until no handler
// call registered by Begin is running, or ctx ends; then it cancels the
// handlers' context and returns an error wrapping ctx.Err().
func (s *Subscription) WaitHandlers(ctx context.Context) error {
	select {
	case <-s.idle:
		return nil
	case <-ctx.Done():
		s.cancelHandlers()
		return fmt.Errorf("handlers of %q still running: %w", s.topic, ctx.Err())
	}
}

// WaitEnded is for the end of an adapter's Close that waited with
// UntilHandlersIdle and has closed its connections: it waits until the
// subscription has ended; once ctx has ended it waits only if no handler
// is running (a handler that ignores its cancelled context is the one
// thing a Close does not wait for).
func (s *Subscription) WaitEnded(ctx context.Context) {
	select {
	case <-s.done:
		return
	case <-ctx.Done():
	}
	select {
	case <-s.idle:
		<-s.done
	default:
	}
}

// Close implements broker.Subscription: it stops the subscription and
// waits until it has ended or ctx ends (then it cancels the handlers'
// context and returns an error wrapping ctx.Err()). It returns nil after
// a clean stop and ErrClosed when called again.
func (s *Subscription) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.userClosed {
		s.mu.Unlock()
		return fmt.Errorf("%s: subscription close: %w", s.prefix, broker.ErrClosed)
	}
	s.userClosed = true
	s.mu.Unlock()
	s.Stop(nil)
	if err := s.Wait(ctx); err != nil {
		return fmt.Errorf("%s: subscription close: %w", s.prefix, err)
	}
	return nil
}

// Done is closed when the subscription has ended for any reason and its
// goroutines, handlers included, have returned.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err is nil while the subscription runs, and after a Close that came
// before any other end; otherwise the cause it stopped for: the Subscribe
// ctx's error, an error wrapping broker.ErrClosed when the Broker closed,
// or the adapter's fatal error.
func (s *Subscription) Err() error {
	select {
	case <-s.done:
	default:
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
