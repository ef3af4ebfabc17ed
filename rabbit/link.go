package rabbit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
)

// Recovery design.
//
// amqp091-go (since v1.12) can recover connections by itself
// (amqp.Config.Recovery). We deliberately do not use it: it dials one URL
// only, waits a fixed ~5 s between a small number of attempts, logs through
// the package-wide amqp091 Logger (process-global state shared by every
// instance), and while it runs it holds a connection lock that makes
// Connection.CloseDeadline wait for the whole retry loop — an unbounded
// Close. It also re-opens channels under the same *amqp.Channel values,
// which would mix confirm sequence numbers of the old and new connection
// in our per-channel confirm bookkeeping.
//
// Instead each broker instance runs its own supervisor per connection (a
// "link"): when the connection dies it reconnects with exponential backoff
// and jitter, trying every configured host in turn, logs every step through
// the instance's slog.Logger, and builds a fresh session (connection,
// channels, writers) each time. Publishers re-send unconfirmed messages on
// the new session, and subscriptions redeclare their topology and resume
// consuming.

// linkRole names what a connection is used for.
type linkRole string

const (
	rolePublish linkRole = "publish"
	roleConsume linkRole = "consume"
)

// link is one supervised AMQP connection of a Broker: the current session
// and the supervisor goroutine that replaces it when it dies.
type link struct {
	b    *Broker
	role linkRole
	log  *slog.Logger

	mu      sync.Mutex
	cur     *session      // nil while down
	ready   chan struct{} // closed when cur is set; replaced when cur dies
	lastErr error         // why the last connect attempt or session failed
	next    int           // index of the endpoint to try first
	gen     uint64
	up      bool // a session was installed once

	superDone chan struct{} // closed when the supervisor has returned
}

func newLink(b *Broker, role linkRole) *link {
	return &link{
		b:     b,
		role:  role,
		log:   b.log.With("connection", string(role)),
		ready: make(chan struct{}),
	}
}

// session returns the live session, waiting for recovery until ctx ends or
// the broker closes. The error wraps ErrClosed, or ErrUnavailable with
// ctx's error and the last connection failure.
func (l *link) session(ctx context.Context) (*session, error) {
	for {
		l.mu.Lock()
		s, ready, last := l.cur, l.ready, l.lastErr
		l.mu.Unlock()
		if s != nil && !s.isDead() {
			return s, nil
		}
		select {
		case <-ready:
		case <-l.b.gate.Closing():
			return nil, broker.ErrClosed
		case <-ctx.Done():
			if last != nil {
				return nil, fmt.Errorf("%w while the connection is down (last error: %v): %w", broker.ErrUnavailable, last, ctx.Err())
			}
			return nil, fmt.Errorf("%w while the connection is down: %w", broker.ErrUnavailable, ctx.Err())
		}
	}
}

// current returns the live session or nil, without waiting.
func (l *link) current() *session {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur
}

// lastError is why the link last failed to connect or lost its session.
func (l *link) lastError() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastErr
}

// connected reports whether the link has a live session.
func (l *link) connected() bool {
	s := l.current()
	return s != nil && !s.isDead()
}

// install makes s the current session and wakes waiters.
func (l *link) install(s *session) {
	l.mu.Lock()
	l.cur = s
	l.lastErr = nil
	l.up = true
	close(l.ready)
	l.mu.Unlock()
	l.b.updateState(nil)
}

// lost forgets s if it is the current session; a no-op otherwise.
func (l *link) lost(s *session, err error) {
	l.mu.Lock()
	if l.cur != s {
		l.mu.Unlock()
		return
	}
	l.cur = nil
	l.ready = make(chan struct{})
	l.lastErr = err
	l.mu.Unlock()
	l.b.updateState(err)
}

// everUp reports whether the link was ever connected.
func (l *link) everUp() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.up
}

// start runs the supervisor. first is the already installed initial
// session; nil makes the supervisor dial the first connection itself.
func (l *link) start(first *session) {
	l.superDone = make(chan struct{})
	l.b.wg.Add(1)
	go func() {
		defer l.b.wg.Done()
		defer close(l.superDone)
		l.supervise(first)
	}()
}

// waitSupervisor waits until the supervisor returned (after the broker was
// killed).
func (l *link) waitSupervisor() { <-l.superDone }

// healthySession is how long a session must live for its loss to restart
// the backoff. One that dies sooner (a server that accepts and then drops
// the connection, a message the server refuses with a connection error)
// counts as a failed attempt: the next dial waits its backoff step.
const healthySession = time.Second

// supervise keeps the link connected until the broker is killed.
func (l *link) supervise(s *session) {
	attempt := 1 // the backoff step of the next wait
	for {
		if s == nil {
			s = l.reconnect(attempt)
			if s == nil {
				return // broker killed
			}
			select {
			case <-l.b.killed:
				s.kill(time.Now())
				return
			default:
			}
			l.install(s)
		}
		select {
		case <-s.dead:
		case <-l.b.killed:
			return
		}
		err := s.deathErr()
		up := time.Since(s.openedAt)
		l.log.Warn("rabbit: connection lost", "host", s.ep.redacted, "err", err, "up", up.Round(time.Millisecond))
		l.lost(s, err)
		s = nil
		if up >= healthySession {
			attempt = 1
			continue
		}
		// Died right after it opened: back off before the next dial.
		wait := driver.BackoffDelay(l.b.cfg.Backoff, attempt)
		l.log.Warn("rabbit: connection died right after it opened; backing off", "up", up.Round(time.Millisecond), "wait", wait.Round(time.Millisecond))
		if !l.sleep(wait) {
			return
		}
		attempt++
	}
}

// sleep waits d; false when the broker was killed first.
func (l *link) sleep(d time.Duration) bool {
	return driver.Sleep(d, l.b.killed)
}

// reconnect dials until a session opens or the broker is killed. Each round
// tries every endpoint once, starting with the one that worked last; rounds
// are separated by Config.Backoff's delays, starting at step attempt.
func (l *link) reconnect(step int) *session {
	begin := time.Now()
	eps := l.b.cfg.endpoints
	attempt := 0
	for round := 1; ; round++ {
		l.mu.Lock()
		first := l.next
		l.mu.Unlock()
		for i := range eps {
			attempt++
			idx := (first + i) % len(eps)
			s, err := l.dial(l.b.lifeCtx, idx)
			if err == nil {
				l.log.Info("rabbit: connected", "host", s.ep.redacted, "attempt", attempt,
					"downtime", time.Since(begin).Round(time.Millisecond))
				return s
			}
			select {
			case <-l.b.killed:
				return nil
			default:
			}
			l.mu.Lock()
			l.lastErr = err
			l.mu.Unlock()
			l.log.Warn("rabbit: reconnect attempt failed", "host", eps[idx].redacted, "attempt", attempt,
				"elapsed", time.Since(begin).Round(time.Millisecond), "err", err)
		}
		wait := driver.BackoffDelay(l.b.cfg.Backoff, step+round-1)
		l.log.Info("rabbit: backing off before next reconnect round", "round", round, "wait", wait.Round(time.Millisecond))
		if !l.sleep(wait) {
			return nil
		}
	}
}

// connectOnce tries every endpoint once, in order, for Open, and stops at
// the first fatal failure.
func (l *link) connectOnce(ctx context.Context) (*session, error) {
	var errs []error
	for i := range l.b.cfg.endpoints {
		s, err := l.dial(ctx, i)
		if err == nil {
			return s, nil
		}
		errs = append(errs, err)
		if isFatal(err) || ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	// Every host failed: the error names each host's cause, and is
	// classified by the most specific one — a server's refusal (refused
	// credentials, an unknown vhost, an untrusted certificate) over a host
	// that could not be reached.
	err := errors.Join(errs...)
	for _, e := range errs {
		if !broker.IsRetryable(e) {
			return nil, driver.MarkFatal(err)
		}
	}
	return nil, driver.MarkRetryable(err)
}

// deadlineConn gives every Write a deadline, so that a peer that stops
// reading (a stalled proxy, a server that blocked the connection) makes the
// write fail after WriteTimeout instead of blocking forever. A deadline set
// from outside (amqp091's CloseDeadline, our kill) is honoured when earlier.
type deadlineConn struct {
	net.Conn
	timeout time.Duration

	mu  sync.Mutex
	ext time.Time // write deadline set through SetDeadline/SetWriteDeadline
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	d := time.Now().Add(c.timeout)
	c.mu.Lock()
	if !c.ext.IsZero() && c.ext.Before(d) {
		d = c.ext
	}
	err := c.Conn.SetWriteDeadline(d)
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *deadlineConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ext = t
	return c.Conn.SetDeadline(t)
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ext = t
	return c.Conn.SetWriteDeadline(t)
}

// session is one AMQP connection and everything opened on it.
type session struct {
	l        *link
	gen      uint64
	ep       endpoint
	conn     *amqp.Connection
	raw      *deadlineConn
	openedAt time.Time

	dead    chan struct{} // closed when the connection is gone
	deadMu  sync.Mutex
	deadErr error

	// blocked is the server's connection.blocked state.
	bmu       sync.Mutex
	blocked   bool
	blockWhy  string
	unblocked chan struct{} // closed when blocked becomes false

	// publish role
	pool   []atomic.Pointer[pubChannel] // PublishChannels slots; the first `opened` are open (or being replaced)
	opened atomic.Int32
	grow   chan struct{} // wantChannel → topology goroutine
	rr     atomic.Uint32
	topo   chan topoReq

	declMu   sync.Mutex
	declared map[string]struct{}
}

func (s *session) isDead() bool {
	select {
	case <-s.dead:
		return true
	default:
		return false
	}
}

func (s *session) deathErr() error {
	s.deadMu.Lock()
	defer s.deadMu.Unlock()
	return s.deadErr
}

// dial opens a session to endpoint idx: TCP (and TLS), AMQP handshake,
// and for the publish role the confirm-mode channel pool. It obeys ctx and
// DialTimeout; on failure nothing is left open.
func (l *link) dial(ctx context.Context, idx int) (*session, error) {
	cfg := l.b.cfg
	ep := cfg.endpoints[idx]
	begin := time.Now()
	// ownBound: DialTimeout, not the caller's deadline, is what ends this
	// attempt if it runs out of time.
	outer := ctx
	callerDL, hasDL := outer.Deadline()
	ownBound := !hasDL || callerDL.After(begin.Add(cfg.DialTimeout))
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	l.log.Debug("rabbit: dialing", "host", ep.redacted)

	var (
		rawMu  sync.Mutex
		raw    *deadlineConn
		gaveUp bool
	)
	acfg := amqp.Config{
		Heartbeat: cfg.Heartbeat,
		Locale:    "en_US",
		Properties: amqp.Table{
			"product":         "isobroker",
			"connection_name": fmt.Sprintf("isobroker %s (%s)", cfg.Name, l.role),
		},
		Dial: func(network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{KeepAlive: 15 * time.Second}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			dc := &deadlineConn{Conn: c, timeout: cfg.WriteTimeout}
			dl, _ := ctx.Deadline()
			_ = dc.SetDeadline(dl) // handshake deadline; amqp091 clears it once open
			rawMu.Lock()
			raw = dc
			if gaveUp {
				_ = c.Close()
			}
			rawMu.Unlock()
			return dc, nil
		},
	}
	if ep.tls != nil {
		acfg.TLSClientConfig = ep.tls.Clone()
	}
	// Make the handshake fail at once when ctx ends.
	stop := context.AfterFunc(ctx, func() {
		rawMu.Lock()
		defer rawMu.Unlock()
		gaveUp = true
		if raw != nil {
			_ = raw.SetDeadline(time.Now())
		}
	})
	conn, err := amqp.DialConfig(ep.url, acfg)
	aborted := !stop()
	what := "rabbit: dial " + ep.redacted
	if err == nil && aborted {
		_ = conn.CloseDeadline(time.Now())
		err = ctx.Err()
	}
	if err != nil {
		rawMu.Lock()
		if raw != nil {
			_ = raw.Close() // amqp091 leaves the socket open on some handshake errors
		}
		rawMu.Unlock()
		switch cerr := expired(ctx); {
		case cerr == nil || serverSent(err):
			err = wireError(what, err)
		case ownBound && outer.Err() == nil:
			// The server did not answer within DialTimeout: not the
			// caller's deadline, which still has time, and worth a retry.
			err = driver.MarkRetryable(fmt.Errorf("%s: %w: no connection within DialTimeout (%v): %v",
				what, broker.ErrUnavailable, cfg.DialTimeout, err))
		default:
			err = wireError(what, fmt.Errorf("%w (%v)", cerr, err))
		}
		l.log.Debug("rabbit: dial failed", "host", ep.redacted, "err", err, "took", time.Since(begin).Round(time.Millisecond))
		return nil, err
	}
	l.mu.Lock()
	l.gen++
	gen := l.gen
	l.next = idx
	l.mu.Unlock()
	s := &session{
		l: l, gen: gen, ep: ep, conn: conn, raw: raw, openedAt: time.Now(),
		dead:      make(chan struct{}),
		unblocked: make(chan struct{}),
		declared:  make(map[string]struct{}),
	}
	close(s.unblocked)
	l.log.Info("rabbit: connection open", "host", ep.redacted, "gen", gen,
		"server", fmt.Sprint(conn.Properties["version"]), "took", time.Since(begin).Round(time.Millisecond))

	// Register every listener before anything can fail, and drain them all
	// in watch (unread Notify* channels deadlock amqp091).
	closes := conn.NotifyClose(make(chan *amqp.Error, 1))
	blocks := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	l.b.wg.Add(1)
	go func() {
		defer l.b.wg.Done()
		s.watch(closes, blocks)
	}()

	if l.role == rolePublish {
		// Channel RPCs know no context: a server that stalls now is cut
		// off when ctx ends, which fails them.
		stopPool := context.AfterFunc(ctx, func() { _ = raw.Close() })
		err := s.openPool(ctx)
		if !stopPool() && err == nil {
			err = ctx.Err()
		}
		if err != nil {
			s.kill(time.Now())
			if cerr := expired(ctx); cerr != nil && !serverSent(err) {
				err = fmt.Errorf("%w (%v)", cerr, err)
			}
			return nil, wireError(what+": open publishing channels", err)
		}
		s.topo = make(chan topoReq)
		l.b.wg.Add(1)
		go func() {
			defer l.b.wg.Done()
			s.topology()
		}()
	}
	return s, nil
}

// expired is ctx's error, or DeadlineExceeded once ctx's deadline has
// passed even if ctx has not noticed yet (a socket deadline set to the
// same instant can fire first).
func expired(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// watch drains the connection's close and blocked notifications until the
// connection is gone, then marks the session dead.
func (s *session) watch(closes chan *amqp.Error, blocks chan amqp.Blocking) {
	for closes != nil || blocks != nil {
		select {
		case e, ok := <-closes:
			if !ok {
				closes = nil
				s.markDead(nil)
				continue
			}
			s.markDead(e)
		case b, ok := <-blocks:
			if !ok {
				blocks = nil
				continue
			}
			s.setBlocked(b)
		}
	}
	s.markDead(nil)
}

// markDead records why the connection ended and marks the session dead.
// Only the watch goroutine calls it.
func (s *session) markDead(e *amqp.Error) {
	s.deadMu.Lock()
	if s.deadErr == nil {
		if e != nil {
			s.deadErr = wireError("rabbit: connection to "+s.ep.redacted+" closed", e)
		} else {
			s.deadErr = fmt.Errorf("rabbit: connection to %s closed: %w", s.ep.redacted, broker.ErrUnavailable)
		}
	}
	err := s.deadErr
	s.deadMu.Unlock()
	if s.isDead() {
		return
	}
	// Forget the session before announcing its death, so that callers
	// woken by dead wait for the next session instead of finding this one.
	s.l.lost(s, err)
	close(s.dead)
	s.l.log.Info("rabbit: connection closed", "host", s.ep.redacted, "gen", s.gen, "reason", errorText(e))
	// A dead connection is no longer blocked.
	s.setBlocked(amqp.Blocking{Active: false})
}

func (s *session) setBlocked(b amqp.Blocking) {
	s.bmu.Lock()
	defer s.bmu.Unlock()
	if b.Active == s.blocked {
		return
	}
	s.blocked = b.Active
	if b.Active {
		s.blockWhy = b.Reason
		s.unblocked = make(chan struct{})
		s.l.log.Warn("rabbit: server blocked publishing", "host", s.ep.redacted, "reason", b.Reason)
	} else {
		close(s.unblocked)
		s.l.log.Info("rabbit: server unblocked publishing", "host", s.ep.redacted)
	}
}

// blockedState returns whether the connection is blocked, why, and a
// channel closed when it is unblocked.
func (s *session) blockedState() (bool, string, <-chan struct{}) {
	s.bmu.Lock()
	defer s.bmu.Unlock()
	return s.blocked, s.blockWhy, s.unblocked
}

// waitUnblocked waits while the server blocks this connection, until ctx
// ends (an error wrapping ErrBlocked and ctx's error) or the session dies
// (errSessionLost).
func (s *session) waitUnblocked(ctx context.Context) error {
	for {
		blocked, why, ch := s.blockedState()
		if !blocked {
			return nil
		}
		select {
		case <-ch:
		case <-s.dead:
			return errSessionLost
		case <-ctx.Done():
			return fmt.Errorf("%w (%s): %w", broker.ErrBlocked, why, ctx.Err())
		}
	}
}

var errSessionLost = errors.New("rabbit: connection lost")

// kill tears the connection down, sending connection.close with deadline
// dl and closing the socket by dl whatever the peer does. It returns once
// the connection is gone.
func (s *session) kill(dl time.Time) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.conn.CloseDeadline(dl)
	}()
	t := time.NewTimer(time.Until(dl) + 50*time.Millisecond)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
	if s.raw != nil {
		_ = s.raw.Close() // unblocks anything still stuck on the socket
	}
	<-done
}

// topoReq asks the topology goroutine to declare an exchange.
type topoReq struct {
	exchange string
	reply    chan error
}

// topology serializes exchange declarations for publishers on one channel
// of its own, reopening it after a channel error, and opens the
// publishing pool's further channels when a Publish asks (growPool). Its
// RPCs, like every channel RPC of amqp091, know no context: a stalled
// server is cut off by the connection's heartbeat and write deadline, and
// a caller waiting for a declaration waits by its own ctx.
func (s *session) topology() {
	var ch *amqp.Channel
	defer func() {
		if ch != nil {
			_ = ch.Close()
		}
	}()
	for {
		select {
		case <-s.dead:
			return
		case <-s.grow:
			s.growPool()
		case req := <-s.topo:
			var err error
			if ch == nil || ch.IsClosed() {
				ch, err = s.conn.Channel()
				if err != nil {
					ch = nil
					req.reply <- wireError("rabbit: open topology channel", err)
					continue
				}
			}
			err = ch.ExchangeDeclare(req.exchange, "topic", true, false, false, false, nil)
			if err != nil {
				err = wireError(fmt.Sprintf("rabbit: declare exchange %q", req.exchange), err)
			}
			req.reply <- err
		}
	}
}

// ensureExchange declares topic's exchange once per session.
func (s *session) ensureExchange(ctx context.Context, topic string) error {
	s.declMu.Lock()
	_, ok := s.declared[topic]
	s.declMu.Unlock()
	if ok {
		return nil
	}
	req := topoReq{exchange: topic, reply: make(chan error, 1)}
	select {
	case s.topo <- req:
	case <-s.dead:
		return errSessionLost
	case <-ctx.Done():
		return s.ctxErr(ctx)
	}
	select {
	case err := <-req.reply:
		if err != nil {
			if s.isDead() {
				return errSessionLost
			}
			return err
		}
	case <-s.dead:
		return errSessionLost
	case <-ctx.Done():
		return s.ctxErr(ctx)
	}
	s.declMu.Lock()
	s.declared[topic] = struct{}{}
	s.declMu.Unlock()
	return nil
}

// forgetDeclared makes the next publish redeclare every exchange (after a
// channel error that may mean one was deleted).
func (s *session) forgetDeclared() {
	s.declMu.Lock()
	clear(s.declared)
	s.declMu.Unlock()
}

// ctxErr is ctx's error, wrapped with ErrBlocked while the server blocks
// the connection (the usual reason a wait outlives its context).
func (s *session) ctxErr(ctx context.Context) error {
	if blocked, why, _ := s.blockedState(); blocked {
		return fmt.Errorf("%w (%s): %w", broker.ErrBlocked, why, ctx.Err())
	}
	return ctx.Err()
}
