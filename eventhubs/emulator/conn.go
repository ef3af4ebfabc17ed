package emulator

import (
	"bufio"
	"context"
	"crypto/subtle"
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

// handshake runs the protocol header, SASL and open exchange.
func (c *conn) handshake(br *bufio.Reader) error {
	stopAfter := context.AfterFunc(c.e.ctx, func() { _ = c.nc.SetDeadline(time.Now()) })
	defer stopAfter()
	if err := c.nc.SetDeadline(time.Now().Add(c.e.cfg.HandshakeTimeout)); err != nil {
		return fmt.Errorf("set deadline: %w", err)
	}
	amqpHeader := amqp10.ProtocolHeader{ID: amqp10.ProtoAMQP, Major: 1}
	saslHeader := amqp10.ProtocolHeader{ID: amqp10.ProtoSASL, Major: 1}
	hdr, err := amqp10.ReadProtocolHeader(br)
	if err != nil {
		if errors.Is(err, amqp10.ErrBadProtocolHeader) {
			// Answer with the header we support, then close (spec 2.2).
			_, _ = c.nc.Write(amqpHeader.Bytes())
		}
		return err
	}
	if hdr.ID == amqp10.ProtoSASL && hdr.Major == 1 && hdr.Minor == 0 && hdr.Revision == 0 {
		if err := c.sasl(br, saslHeader); err != nil {
			return err
		}
		if hdr, err = amqp10.ReadProtocolHeader(br); err != nil {
			if errors.Is(err, amqp10.ErrBadProtocolHeader) {
				_, _ = c.nc.Write(amqpHeader.Bytes())
			}
			return err
		}
	}
	if hdr != amqpHeader {
		_, _ = c.nc.Write(amqpHeader.Bytes())
		return fmt.Errorf("%w: unsupported protocol header %v", amqp10.ErrBadProtocolHeader, hdr)
	}
	if _, err := c.nc.Write(amqpHeader.Bytes()); err != nil {
		return fmt.Errorf("write protocol header: %w", err)
	}
	fr := amqp10.NewFrameReader(br, c.e.cfg.MaxFrameSize)
	var open *amqp10.Open
	for open == nil {
		f, err := fr.ReadFrame()
		if err != nil {
			var fe *amqp10.FrameError
			if errors.As(err, &fe) {
				c.writeOpenAndClose(string(fe.Condition), fe.Err.Error())
			}
			return fmt.Errorf("reading open: %w", err)
		}
		if f.Body == nil {
			continue
		}
		o, ok := f.Body.(*amqp10.Open)
		if !ok || f.Type != amqp10.FrameAMQP || f.Channel != 0 {
			c.writeOpenAndClose(CondNotAllowed, "expected an open frame")
			return fmt.Errorf("expected open, got %T", f.Body)
		}
		open = o
	}
	if open.MaxFrameSize < amqp10.MinMaxFrameSize {
		c.writeOpenAndClose(CondInvalidField, "max-frame-size below 512")
		return fmt.Errorf("peer max-frame-size %d below 512", open.MaxFrameSize)
	}
	c.peerMaxFrame = min(open.MaxFrameSize, 1<<24)
	c.peerIdle = time.Duration(open.IdleTimeout) * time.Millisecond
	c.hostname, c.containerID = open.Hostname, open.ContainerID
	b, err := amqp10.AppendFrame(nil, amqp10.FrameAMQP, 0, c.ourOpen(), nil)
	if err != nil {
		return err
	}
	if _, err := c.nc.Write(b); err != nil {
		return fmt.Errorf("write open: %w", err)
	}
	if c.e.ctx.Err() != nil {
		return ErrClosed
	}
	if err := c.nc.SetDeadline(time.Time{}); err != nil {
		return fmt.Errorf("clear deadline: %w", err)
	}
	now := time.Now()
	c.lastRecv, c.lastActivity, c.lastHeartbeat = now, now, now
	return nil
}

func (c *conn) ourOpen() *amqp10.Open {
	o := &amqp10.Open{
		ContainerID:  fmt.Sprintf("%s-%d", c.e.cfg.Namespace, c.id),
		MaxFrameSize: c.e.cfg.MaxFrameSize,
		ChannelMax:   channelMax,
		Properties: amqp10.Map{
			{Key: amqp10.Symbol("product"), Value: "isobroker-eventhubs-emulator"},
		},
	}
	if c.e.cfg.HeartbeatTimeout > 0 {
		o.IdleTimeout = uint32(c.e.cfg.HeartbeatTimeout / time.Millisecond)
	}
	return o
}

// writeOpenAndClose answers a failed open exchange during the handshake.
func (c *conn) writeOpenAndClose(cond, desc string) {
	b, err := amqp10.AppendFrame(nil, amqp10.FrameAMQP, 0, c.ourOpen(), nil)
	if err == nil {
		b, err = amqp10.AppendFrame(b, amqp10.FrameAMQP, 0, &amqp10.Close{Error: &amqp10.Error{Condition: amqp10.Symbol(cond), Description: desc}}, nil)
	}
	if err == nil {
		_, _ = c.nc.Write(b)
	}
}

// sasl runs the SASL layer: ANONYMOUS always succeeds (authorization then
// happens through CBS), PLAIN checks a shared access key name and key.
func (c *conn) sasl(br *bufio.Reader, hdr amqp10.ProtocolHeader) error {
	b := hdr.Bytes()
	b, err := amqp10.AppendFrame(b, amqp10.FrameSASL, 0, &amqp10.SASLMechanisms{Mechanisms: []amqp10.Symbol{"ANONYMOUS", "PLAIN"}}, nil)
	if err != nil {
		return err
	}
	if _, err := c.nc.Write(b); err != nil {
		return fmt.Errorf("write sasl mechanisms: %w", err)
	}
	f, err := amqp10.NewFrameReader(br, saslMaxFrame).ReadFrame()
	if err != nil {
		return fmt.Errorf("reading sasl-init: %w", err)
	}
	init, ok := f.Body.(*amqp10.SASLInit)
	if !ok {
		return fmt.Errorf("expected sasl-init, got %T", f.Body)
	}
	code := amqp10.SASLAuth
	switch init.Mechanism {
	case "ANONYMOUS":
		code = amqp10.SASLOk
	case "PLAIN":
		if c.checkPlain(init.InitialResponse) {
			code = amqp10.SASLOk
			c.plainAuth = true
		}
	}
	b, err = amqp10.AppendFrame(nil, amqp10.FrameSASL, 0, &amqp10.SASLOutcome{Result: code}, nil)
	if err != nil {
		return err
	}
	if _, err := c.nc.Write(b); err != nil {
		return fmt.Errorf("write sasl outcome: %w", err)
	}
	if code != amqp10.SASLOk {
		return fmt.Errorf("sasl %s authentication failed", init.Mechanism)
	}
	c.log.Debug("sasl complete", "mechanism", string(init.Mechanism))
	return nil
}

func (c *conn) checkPlain(resp []byte) bool {
	// authzid NUL authcid NUL passwd
	var parts [][]byte
	start := 0
	for i, ch := range resp {
		if ch == 0 {
			parts = append(parts, resp[start:i])
			start = i + 1
		}
	}
	parts = append(parts, resp[start:])
	if len(parts) != 3 {
		return false
	}
	key, ok := c.e.keys[string(parts[1])]
	return ok && subtle.ConstantTimeCompare(key, parts[2]) == 1
}

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
		// The server sends only pre-settled deliveries; nothing to track.
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
