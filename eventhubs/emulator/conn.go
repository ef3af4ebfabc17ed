package emulator

// One client connection: the conn type, its serve sequence (handshake,
// reader, loop, teardown), the loop that owns all protocol state, and the
// dispatch of each frame. The connection's other jobs are beside it:
// handshake.go (protocol headers, SASL, open), session.go (begin, end),
// links.go (attach, flow, detach), transfer.go (deliveries both ways),
// housekeeping.go (heartbeats, idle closes, token expiry) and writer.go
// (the socket's write side).

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/isobroker/broker/internal/amqp10"
)

// Protocol constants of the server side.
const (
	sessionWindow   = 5000 // incoming window granted to each session, in transfer frames
	handleMax       = 4095
	channelMax      = 4095
	linkCredit      = 500 // credit granted to client senders
	saslMaxFrame    = 64 << 10
	writeHighWater  = 4 << 20 // stop pumping events above this many queued bytes
	writeLowWater   = 1 << 20
	writeHardLimit  = 64 << 20    // a peer that lets this much pile up is dropped
	maxReplies      = 1024        // queued RPC replies per reply link
	closeGrace      = time.Second // wait for the peer's close after sending ours
	writeTimeout    = time.Minute
	maxEventsPerRun = 64
	batchFormat     = 0x80013700
)

// claim is a token accepted on $cbs.
type claim struct {
	path   string
	expiry time.Time
}

// readResult is one frame (or the error that ended reading) from the reader
// goroutine.
type readResult struct {
	f   amqp10.Frame
	err error
}

// conn serves one client connection. The loop goroutine owns all protocol
// state; the reader and writer goroutines only move bytes; other
// goroutines talk to it through post and notify.
type conn struct {
	e   *Emulator
	id  uint64
	nc  net.Conn
	log *slog.Logger
	out *writer

	wake    chan struct{}
	inboxMu sync.Mutex
	inbox   []func(*conn)

	// loop-owned state
	peerMaxFrame  uint32
	peerIdle      time.Duration
	hostname      string
	containerID   string
	sessions      map[uint16]*session
	lastRecv      time.Time
	lastActivity  time.Time
	lastHeartbeat time.Time
	plainAuth     bool
	claims        []claim
	closing       bool
	closeDeadline time.Time
	finished      bool
	subs          map[*partition]int
	timers        map[*time.Timer]struct{}
}

func newConn(e *Emulator, nc net.Conn) *conn {
	id := e.nextConn.Add(1)
	return &conn{
		e:        e,
		id:       id,
		nc:       nc,
		log:      e.log.With("conn", id, "remote", nc.RemoteAddr().String()),
		wake:     make(chan struct{}, 1),
		sessions: map[uint16]*session{},
		subs:     map[*partition]int{},
		timers:   map[*time.Timer]struct{}{},
	}
}

// notify wakes the loop; it never blocks.
func (c *conn) notify() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// post runs f on the connection's loop; it never blocks. Functions posted
// after the loop ended are dropped.
func (c *conn) post(f func(*conn)) {
	c.inboxMu.Lock()
	c.inbox = append(c.inbox, f)
	c.inboxMu.Unlock()
	c.notify()
}

// runInbox runs the functions posted since its last run.
func (c *conn) runInbox() {
	c.inboxMu.Lock()
	fs := c.inbox
	c.inbox = nil
	c.inboxMu.Unlock()
	for _, f := range fs {
		if c.finished {
			return
		}
		f(c)
	}
}

// serve runs the connection from its handshake to its close.
func (c *conn) serve() {
	defer c.e.removeConn(c)
	c.log.Debug("connection accepted")
	br := bufio.NewReaderSize(c.nc, 32<<10)
	if err := c.handshake(br); err != nil {
		c.log.Info("connection handshake failed", "err", err)
		_ = c.nc.Close()
		return
	}
	c.log.Info("connection open", "container_id", c.containerID, "hostname", c.hostname,
		"peer_max_frame", c.peerMaxFrame, "peer_idle_timeout", c.peerIdle)

	stop := make(chan struct{})
	frames := make(chan readResult)
	readerDone := make(chan struct{})
	fr := amqp10.NewFrameReader(br, c.e.cfg.MaxFrameSize)
	go func() {
		defer close(readerDone)
		for {
			typ, ch, body, err := fr.ReadRaw()
			var f amqp10.Frame
			if err == nil {
				f, err = amqp10.DecodeFrame(typ, ch, body)
			}
			select {
			case frames <- readResult{f, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	c.out = newWriter(c)
	go c.out.run()

	c.loop(frames)

	c.teardown()
	c.out.finish()
	t := time.NewTimer(closeGrace)
	select {
	case <-c.out.done:
	case <-t.C:
	case <-c.e.ctx.Done():
	}
	t.Stop()
	_ = c.nc.Close()
	<-c.out.done
	close(stop)
	<-readerDone
	c.log.Info("connection closed")
}

// loop handles frames, posted functions and housekeeping ticks until the
// connection is finished.
func (c *conn) loop(frames <-chan readResult) {
	tick := time.NewTicker(c.tickInterval())
	defer tick.Stop()
	done := c.e.ctx.Done()
	for !c.finished {
		select {
		case r := <-frames:
			c.lastRecv = time.Now()
			if r.err != nil {
				c.onReadError(r.err)
				continue
			}
			c.handleFrame(r.f)
			c.pumpAll()
		case <-c.wake:
			c.runInbox()
			c.pumpAll()
		case now := <-tick.C:
			c.housekeeping(now)
		case <-c.out.failed:
			c.log.Info("connection write failed", "err", c.out.error())
			c.finished = true
		case <-done:
			done = nil
			c.closeWith(CondConnectionForced, "The service is shutting down.")
		}
	}
}

// onReadError ends the connection on a read error.
func (c *conn) onReadError(err error) {
	var fe *amqp10.FrameError
	switch {
	case errors.As(err, &fe):
		c.log.Warn("connection framing error", "condition", string(fe.Condition), "err", fe.Err)
		c.closeWith(string(fe.Condition), fe.Err.Error())
		c.finished = true // the stream cannot be trusted any more
	case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
		if !c.closing {
			c.log.Info("connection dropped by peer")
		}
		c.finished = true
	default:
		c.log.Info("connection read failed", "err", err)
		c.finished = true
	}
}

// newError is an AMQP error with cond and desc, or nil when cond is empty.
func newError(cond, desc string) *amqp10.Error {
	if cond == "" {
		return nil
	}
	return &amqp10.Error{Condition: amqp10.Symbol(cond), Description: desc}
}

// closeWith sends close with an error and waits for the peer's close.
func (c *conn) closeWith(cond, desc string) {
	if c.closing || c.finished {
		return
	}
	c.log.Info("closing connection", "condition", cond, "description", desc)
	c.send(0, &amqp10.Close{Error: newError(cond, desc)}, nil)
	c.closing = true
	c.closeDeadline = time.Now().Add(closeGrace)
	c.teardown()
}

// handleFrame dispatches one frame: connection frames here, session and
// link frames to their session.
func (c *conn) handleFrame(f amqp10.Frame) {
	if f.Type != amqp10.FrameAMQP {
		c.closeWith(CondFramingError, "SASL frame after the SASL layer")
		c.finished = true
		return
	}
	if f.Body == nil {
		return // heartbeat
	}
	c.lastActivity = time.Now()
	if c.closing {
		if _, ok := f.Body.(*amqp10.Close); ok {
			c.finished = true
		}
		return
	}
	switch b := f.Body.(type) {
	case *amqp10.Open:
		c.closeWith(CondNotAllowed, "open received twice")
		return
	case *amqp10.Begin:
		c.onBegin(f.Channel, b)
		return
	case *amqp10.Close:
		if b.Error != nil {
			c.log.Info("peer closed connection with error", "condition", string(b.Error.Condition), "description", b.Error.Description)
		} else {
			c.log.Debug("peer closed connection")
		}
		c.send(0, &amqp10.Close{}, nil)
		c.teardown()
		c.finished = true
		return
	}
	s := c.sessions[f.Channel]
	if s == nil {
		c.closeWith(CondNotAllowed, fmt.Sprintf("frame %T on channel %d without a session", f.Body, f.Channel))
		return
	}
	if s.ending {
		if _, ok := f.Body.(*amqp10.End); ok {
			delete(c.sessions, s.ch)
		}
		return
	}
	if _, ok := f.Body.(*amqp10.End); ok && s.staleEnd {
		s.staleEnd = false // the answer to the replaced session's end
		return
	}
	switch b := f.Body.(type) {
	case *amqp10.Attach:
		c.onAttach(s, b)
	case *amqp10.Flow:
		c.onFlow(s, b)
	case *amqp10.Transfer:
		c.onTransfer(s, b, f.Payload)
	case *amqp10.Disposition:
		// The server's deliveries are pre-settled, or the client asked for
		// unsettled and its dispositions are accepted and ignored (see
		// sendMessage): nothing to track.
	case *amqp10.Detach:
		c.onDetach(s, b)
	case *amqp10.End:
		c.endSession(s, "", "")
		delete(c.sessions, s.ch)
	}
}

// teardown releases all links (receiver registrations, subscriptions,
// timers) without sending anything.
func (c *conn) teardown() {
	for _, s := range c.sessions {
		for _, l := range s.links {
			c.releaseLink(l)
		}
	}
	for p := range c.subs {
		p.unsubscribe(c)
	}
	c.subs = map[*partition]int{}
	for t := range c.timers {
		t.Stop()
	}
	c.timers = map[*time.Timer]struct{}{}
}
