package eventhubs

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
)

const (
	// linkCloseTimeout bounds the background close of a session or link
	// that is being replaced.
	linkCloseTimeout = 5 * time.Second
	// refreshTimeout bounds one token renewal.
	refreshTimeout = 30 * time.Second
	// requestLinkMinIdle and requestLinkMaxIdle bound how long a $cbs
	// or $management request link stays attached after its last call:
	// as long as attaching it took (see rpcLink.keep), so that a burst of
	// calls (the token puts of a subscription's partitions, or of a
	// reconnect) shares one link while waiting for the next call never
	// costs more than attaching a new one would. An idle broker then holds
	// none, which saves the session's and the two links' go-amqp buffers
	// (about 160 KiB) and three goroutines; the official SDK closes its
	// $cbs link right after each use. Short matters: the buffers and
	// stacks a released link leaves behind are reused only by what is
	// allocated after it, so memory left idle grows with this window
	// times the rate of opens (scale benchmark: 1 s cost 17 KiB per idle
	// instance, 10 ms nothing).
	requestLinkMinIdle = 10 * time.Millisecond
	requestLinkMaxIdle = time.Second
	// writeTimeout bounds go-amqp's frame writes that have no ctx.
	writeTimeout = 10 * time.Second
	// product is sent in the open frame's properties.
	product = "isobroker-eventhubs"
)

// closeSessionAsync ends sess in the background, bounded, in wg.
func closeSessionAsync(sess *amqp.Session, wg *tracker) {
	if sess == nil {
		return
	}
	wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), linkCloseTimeout)
		defer cancel()
		_ = sess.Close(ctx)
	})
}

// amqpConn is one AMQP connection of a Broker and everything tied to it:
// the socket, the $cbs and $management request links, the claims to
// renew, and the supervisor goroutine that watches it.
type amqpConn struct {
	b       *Broker
	gen     uint64
	nc      net.Conn
	conn    *amqp.Conn
	created time.Time

	cbs  slot[*rpcLink]
	mgmt slot[*rpcLink]

	lastUse atomic.Int64 // unix nanos of the last request or send

	mu     sync.Mutex
	claims map[string]time.Time // audience → when to renew
	kick   chan struct{}        // wakes the supervisor when claims change
	closed chan struct{}        // closed by shutdown
	once   sync.Once
}

// alive reports whether the connection is still open.
func (c *amqpConn) alive() bool {
	select {
	case <-c.conn.Done():
		return false
	case <-c.closed:
		return false
	default:
		return true
	}
}

func (c *amqpConn) touch() { c.lastUse.Store(time.Now().UnixNano()) }

// connect dials and opens a new connection (generation gen). It blocks
// until ctx ends at the latest.
func (b *Broker) connect(ctx context.Context, gen uint64) (*amqpConn, error) {
	start := time.Now()
	addr := b.cfg.dialAddr()
	nc, err := b.dial(ctx, addr)
	if err != nil {
		return nil, wrapErr("connect", addr, err)
	}
	dialed := time.Since(start)
	conn, err := amqp.NewConn(ctx, nc, &amqp.ConnOptions{
		HostName:     b.cfg.Namespace,
		SASLType:     amqp.SASLTypeAnonymous(),
		MaxFrameSize: 65536,
		MaxSessions:  65535,
		WriteTimeout: writeTimeout,
		Properties: map[string]any{
			"product":    product,
			"platform":   "go",
			"user-agent": product,
		},
	})
	if err != nil {
		_ = nc.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("eventhubs: connect %s: %w", addr, ctx.Err())
		}
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			// go-amqp's socket deadline (ctx's) fired just before ctx did
			return nil, fmt.Errorf("eventhubs: connect %s: %w (%v)", addr, context.DeadlineExceeded, err)
		}
		return nil, wrapErr("connect", addr, err)
	}
	c := &amqpConn{
		b: b, gen: gen, nc: nc, conn: conn, created: time.Now(),
		claims: make(map[string]time.Time),
		kick:   make(chan struct{}, 1),
		closed: make(chan struct{}),
	}
	c.touch()
	b.log.Info("connection open", "conn", gen, "addr", addr, "transport", b.cfg.transport(),
		"dial", dialed, "open", time.Since(start)-dialed, "elapsed", time.Since(start))
	return c, nil
}

// shutdown closes the connection, waiting by ctx; when ctx ends first the
// socket is closed under go-amqp, which then returns promptly.
func (c *amqpConn) shutdown(ctx context.Context) {
	c.once.Do(func() { close(c.closed) })
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.conn.Close()
	}()
	select {
	case <-done:
	case <-ctx.Done():
		_ = c.nc.Close()
		<-done
	}
}

// renewalTime is when a token expiring at expiry, put at now, is renewed:
// five minutes before it expires when it lives longer than ten minutes,
// otherwise half way through its life. A fixed fraction near the end (80 %
// was used before) leaves a short-lived token too little time for the
// renewal's own round trip on a busy machine — a $cbs link attach and a
// put-token — and the service detaches every link the token covered once
// it expires.
func renewalTime(now, expiry time.Time) time.Time {
	life := expiry.Sub(now)
	if life > 10*time.Minute {
		return expiry.Add(-5 * time.Minute)
	}
	return now.Add(life / 2)
}

// supervise watches c until it closes or the broker dies: it renews
// claims before they expire, keeps the connection busy when KeepAlive is
// set, detaches request links left idle (rpcLink.keep), and reports
// the loss.
func (c *amqpConn) supervise() {
	b := c.b
	defer b.wg.Done()
	defer func() {
		b.mu.Lock()
		if !b.dying {
			delete(b.conns, c) // closed: nothing left for Close to shut down
		}
		b.mu.Unlock()
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := c.nextWake()
		timer.Reset(time.Until(next))
		select {
		case <-b.dead:
			return
		case <-c.closed:
			return
		case <-c.conn.Done():
			b.lost(c, c.conn.Err())
			return
		case <-c.kick:
		case <-timer.C:
			c.renewDue()
			c.keepAlive()
			c.releaseIdleRequestLinks()
		}
	}
}

// nextWake is the earliest renewal or keep-alive time.
func (c *amqpConn) nextWake() time.Time {
	next := time.Now().Add(time.Hour)
	if ka := c.b.cfg.KeepAlive; ka > 0 {
		last := time.Unix(0, c.lastUse.Load())
		if t := last.Add(ka); t.Before(next) {
			next = t
		}
	}
	for _, s := range c.requestSlots() {
		if l := s.peek(); l != nil {
			if t, ok := l.idleUntil(); ok && t.Before(next) {
				next = t
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.claims {
		if t.Before(next) {
			next = t
		}
	}
	return next
}

// renewDue puts fresh tokens for the claims due for renewal.
func (c *amqpConn) renewDue() {
	now := time.Now()
	var due []string
	c.mu.Lock()
	for aud, t := range c.claims {
		if !t.After(now) {
			due = append(due, aud)
			delete(c.claims, aud) // putToken records the new renewal time
		}
	}
	c.mu.Unlock()
	for _, aud := range due {
		ctx, cancel := context.WithTimeout(context.Background(), refreshTimeout)
		stop := context.AfterFunc(c.b.deadCtx, cancel)
		err := c.putToken(ctx, aud)
		stop()
		cancel()
		if err != nil {
			if !c.alive() || c.b.isDead() {
				return // a new connection puts new tokens
			}
			retry := 10 * time.Second
			c.b.log.Warn("token renewal failed; retrying", "conn", c.gen, "audience", aud, "retry_in", retry, "err", err)
			c.mu.Lock()
			if _, ok := c.claims[aud]; !ok {
				c.claims[aud] = time.Now().Add(retry)
			}
			c.mu.Unlock()
			continue
		}
		c.b.log.Debug("token renewed", "conn", c.gen, "audience", aud)
	}
}

// keepAlive reads hub properties when the connection has been quiet for
// KeepAlive, so that the service sees traffic.
func (c *amqpConn) keepAlive() {
	ka := c.b.cfg.KeepAlive
	if ka <= 0 || time.Since(time.Unix(0, c.lastUse.Load())) < ka {
		return
	}
	hub := c.b.keepAliveHub()
	if hub == "" {
		c.touch() // nothing to read yet; try again later
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), refreshTimeout)
	defer cancel()
	stop := context.AfterFunc(c.b.deadCtx, cancel)
	defer stop()
	start := time.Now()
	_, err := c.readHub(ctx, hub)
	c.touch()
	if err != nil {
		c.b.log.Warn("keep-alive read failed", "conn", c.gen, "hub", hub, "err", err)
		return
	}
	c.b.log.Debug("keep-alive", "conn", c.gen, "hub", hub, "elapsed", time.Since(start))
}

// requestSlots are the slots of the connection's request links.
func (c *amqpConn) requestSlots() [2]*slot[*rpcLink] { return [2]*slot[*rpcLink]{&c.cbs, &c.mgmt} }

// releaseIdleRequestLinks detaches the request links that no call has
// used for their keep; the next call attaches a new one.
func (c *amqpConn) releaseIdleRequestLinks() {
	for _, s := range c.requestSlots() {
		l := s.peek()
		if l == nil || !l.retireIfIdle(time.Now()) {
			continue
		}
		s.drop(l)
		closeSessionAsync(l.sess, &c.b.wg)
		c.b.log.Debug("request link released after idle", "conn", c.gen, "node", l.addr, "idle", l.keep)
	}
}

// rpc returns the connection's request link to node ($cbs or
// $management), attaching it when there is none, reserved for one call:
// the caller must hand it to releaseRPC when the call is over. It blocks
// until the link is attached, ctx ends or the connection closes.
func (c *amqpConn) rpc(ctx context.Context, node string) (*rpcLink, error) {
	s := &c.cbs
	if node == "$management" {
		s = &c.mgmt
	}
	for {
		l, err := s.get(ctx, c.b.life(), c.closed, broker.ErrUnavailable, (*rpcLink).alive, func(ctx context.Context) (*rpcLink, error) {
			start := time.Now()
			l, err := newRPCLink(ctx, c.conn, node, &c.b.wg)
			if err != nil {
				return nil, err
			}
			c.b.log.Debug("request link attached", "conn", c.gen, "node", node, "elapsed", time.Since(start))
			return l, nil
		})
		if err != nil {
			return nil, err
		}
		if l.acquire() {
			return l, nil
		}
		// retired or dead since get returned it: get builds a new one
	}
}

// releaseRPC ends a call's hold on l and lets the supervisor time l's
// idleness.
func (c *amqpConn) releaseRPC(l *rpcLink) {
	l.release()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// putToken authorizes audience on this connection with a fresh token and
// schedules its renewal. Errors are classified (*Error).
func (c *amqpConn) putToken(ctx context.Context, audience string) error {
	start := time.Now()
	tok, err := c.b.cfg.getToken(ctx, audience)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("eventhubs: put-token %q: %w", audience, ctx.Err())
		}
		return driver.MarkFatal(&Error{Op: "put-token", Entity: audience, Description: "the token source failed", sentinel: broker.ErrUnauthorized, cause: err, act: actFatal})
	}
	l, err := c.rpc(ctx, "$cbs")
	if err != nil {
		return wrapErr("put-token", audience, err)
	}
	defer c.releaseRPC(l)
	expiration := "0"
	if !tok.expiry.IsZero() {
		expiration = strconv.FormatInt(tok.expiry.Unix(), 10)
	}
	c.touch()
	_, status, desc, err := l.call(ctx, c.b.life(), &amqp.Message{
		Value: tok.value,
		ApplicationProperties: map[string]any{
			"operation":  "put-token",
			"type":       tok.typ,
			"name":       audience,
			"expiration": expiration,
		},
	})
	if err != nil {
		return wrapErr("put-token", audience, err)
	}
	if status < 200 || status > 299 {
		return statusError("put-token", audience, status, desc)
	}
	if !tok.expiry.IsZero() {
		c.mu.Lock()
		c.claims[audience] = renewalTime(time.Now(), tok.expiry)
		c.mu.Unlock()
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	c.b.log.Debug("put-token", "conn", c.gen, "audience", audience, "token", tok, "elapsed", time.Since(start))
	return nil
}

// lost records that c closed without Close: log it (info for the
// service's idle close, warn otherwise) and mark the broker reconnecting.
func (b *Broker) lost(c *amqpConn, err error) {
	// Dropped and marked under b.mu, where a rebuild marks its
	// replacement connected: this StateReconnecting never lands after
	// the replacement's StateConnected. The state first: whoever reads
	// the log line then sees the state it reports.
	b.mu.Lock()
	if !b.conn.drop(c) || b.isDead() {
		b.mu.Unlock()
		return
	}
	b.lostAt = time.Now()
	b.state.Set(broker.StateReconnecting, wrapErr("connection", b.cfg.Namespace, err))
	b.mu.Unlock()
	ae, _ := remote(err)
	attrs := []any{"conn", c.gen, "age", time.Since(c.created)}
	level := slog.LevelWarn
	if ae != nil {
		attrs = append(attrs, "condition", string(ae.Condition), "description", ae.Description)
		if string(ae.Condition) == condConnectionForced {
			level = slog.LevelInfo // the service's idle close: normal
		}
	} else if err != nil {
		attrs = append(attrs, "err", err)
	}
	attrs = append(attrs, "reconnect", b.cfg.Reconnect.String())
	b.log.Log(context.Background(), level, "connection closed by peer", attrs...)
	if b.cfg.Reconnect == ReconnectEager {
		b.wg.Go(b.reconnectEagerly)
	}
}

// reconnectEagerly rebuilds the connection with backoff until it succeeds,
// something else rebuilds it, or the broker dies.
func (b *Broker) reconnectEagerly() {
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if !b.sleep(context.Background(), b.backoff(attempt)) {
				return
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		stop := context.AfterFunc(b.deadCtx, cancel)
		_, err := b.getConn(ctx)
		stop()
		cancel()
		if err == nil || b.isDead() {
			return
		}
		if act, _ := classify(err); act == actFatal {
			b.log.Error("eager reconnect gave up", "err", err)
			return
		}
	}
}

// getConn returns the live connection, building one if needed (one
// builder at a time). It obeys ctx and the broker's death.
func (b *Broker) getConn(ctx context.Context) (*amqpConn, error) {
	return b.conn.get(ctx, b.life(), b.dead, broker.ErrClosed, (*amqpConn).alive, func(ctx context.Context) (*amqpConn, error) {
		// A caller may see the connection dead before its supervisor
		// does: report the loss here, before the replacement is
		// connected. Left to the supervisor, it would be reported after
		// the replacement's StateConnected (State stuck at reconnecting
		// on a working connection) or not at all (its drop finds the
		// replacement).
		if old := b.conn.peek(); old != nil {
			select {
			case <-old.conn.Done():
				b.lost(old, old.conn.Err())
			default:
			}
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stop := context.AfterFunc(b.deadCtx, cancel)
		defer stop()
		gen := b.gens.Add(1)
		start := time.Now()
		b.mu.Lock()
		b.attempts++
		attempt := b.attempts
		b.mu.Unlock()
		c, err := b.connect(ctx, gen)
		if err != nil {
			if b.isDead() {
				return nil, fmt.Errorf("eventhubs: connect: %w", broker.ErrClosed)
			}
			if gen > 1 {
				b.log.Warn("reconnect attempt failed", "conn", gen, "attempt", attempt, "elapsed", time.Since(start), "err", err)
			}
			return nil, err
		}
		// Register under the lock that Close takes, so that Close either
		// sees this connection or we see Close.
		b.mu.Lock()
		if b.dying {
			b.mu.Unlock()
			c.shutdown(ctx)
			return nil, fmt.Errorf("eventhubs: connect: %w", broker.ErrClosed)
		}
		b.conns[c] = struct{}{}
		lostAt := b.lostAt
		b.attempts = 0
		b.wg.Add(1)
		// The state first, as in lost: a reader of the log line sees it.
		// Under b.mu, as lost's and invalidate's StateReconnecting.
		b.state.Set(broker.StateConnected, nil)
		b.mu.Unlock()
		go c.supervise()
		if gen > 1 {
			attrs := []any{"conn", gen, "attempt", attempt, "elapsed", time.Since(start)}
			if !lostAt.IsZero() {
				attrs = append(attrs, "since_loss", time.Since(lostAt))
			}
			b.log.Info("reconnected", attrs...)
		}
		return c, nil
	})
}

// invalidate forces a rebuild after an error that condemns the connection
// (a connection-level condition on a link, for example).
func (b *Broker) invalidate(c *amqpConn, err error) {
	if c == nil || !c.alive() {
		return
	}
	b.log.Info("dropping connection after error", "conn", c.gen, "err", err)
	// Out of the slot (and marked, under b.mu as in lost) before it is
	// shut down, so that no caller who sees it dead builds its
	// replacement while it is still the slot's.
	b.mu.Lock()
	if b.conn.drop(c) {
		b.state.Set(broker.StateReconnecting, err)
	}
	b.mu.Unlock()
	b.wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), linkCloseTimeout)
		defer cancel()
		c.shutdown(ctx)
	})
}
