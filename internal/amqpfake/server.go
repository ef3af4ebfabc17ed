package amqpfake

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults offered in connection.tune when [Options] leaves a field zero.
const (
	DefaultChannelMax = 2047
	DefaultFrameMax   = 131072
)

// Options configure a [Server]. The zero value is ready to use.
type Options struct {
	// Heartbeat is the heartbeat interval offered in connection.tune; 0
	// offers none. The wire carries whole seconds, so it is rounded up.
	// Whatever the client negotiates in tune-ok (amqp091-go asks for 10s by
	// default), the server sends heartbeat frames at half that interval.
	Heartbeat time.Duration

	// ChannelMax is the channel-max offered in connection.tune; 0 means
	// DefaultChannelMax.
	ChannelMax uint16

	// FrameMax is the frame-max offered in connection.tune; 0 means
	// DefaultFrameMax. The server splits the bodies it sends at the value
	// the client answers in tune-ok.
	FrameMax uint32
}

// Server is a scripted AMQP 0-9-1 server listening on loopback TCP. Create
// one with [Start] and stop it with [Server.Close].
type Server struct {
	opts Options
	ln   net.Listener
	url  string

	done      chan struct{} // closed by Close
	closeOnce sync.Once
	wg        sync.WaitGroup // accept loop, connection loops, heartbeaters

	names atomic.Uint64 // sequence for generated queue names and consumer tags

	mu     sync.Mutex
	closed bool
	conns  map[*Conn]struct{} // every live connection, handshaken or not

	qmu      sync.Mutex
	ready    []*Conn       // handshaken connections not yet returned by Accept
	readySig chan struct{} // capacity 1: "ready may be non-empty"
}

// Start listens on 127.0.0.1:0 and serves every accepted connection: it
// performs the handshake and then answers the methods a publisher needs by
// itself (see the package documentation). The caller must Close the server.
func Start(opts Options) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("amqpfake: listen: %w", err)
	}
	if opts.ChannelMax == 0 {
		opts.ChannelMax = DefaultChannelMax
	}
	if opts.FrameMax == 0 {
		opts.FrameMax = DefaultFrameMax
	}
	s := &Server{
		opts:     opts,
		ln:       ln,
		url:      "amqp://guest:guest@" + ln.Addr().String() + "/",
		done:     make(chan struct{}),
		conns:    make(map[*Conn]struct{}),
		readySig: make(chan struct{}, 1),
	}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// URL returns the AMQP URL clients dial: "amqp://guest:guest@127.0.0.1:PORT/".
// The server accepts any credentials and any virtual host.
func (s *Server) URL() string { return s.url }

// Addr returns the listener's address, "127.0.0.1:PORT".
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Accept returns the next client connection that has completed the
// handshake, in the order handshakes complete. Connections are served
// whether or not they have been accepted; Accept only hands them to the
// script. It fails with ctx's error or, once Close has been called, with
// [ErrClosed], even if handshaken connections were never accepted.
func (s *Server) Accept(ctx context.Context) (*Conn, error) {
	for {
		select {
		case <-s.done:
			return nil, ErrClosed
		default:
		}
		s.qmu.Lock()
		if len(s.ready) > 0 {
			c := s.ready[0]
			s.ready = s.ready[1:]
			more := len(s.ready) > 0
			s.qmu.Unlock()
			if more {
				signal(s.readySig)
			}
			return c, nil
		}
		s.qmu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.done:
			return nil, ErrClosed
		case <-s.readySig:
		}
	}
}

// Close closes the listener and every connection (abruptly, without a close
// handshake) and waits until all of the server's goroutines have returned.
// It is safe to call more than once; later calls return nil.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.done)
		err = s.ln.Close()
		s.mu.Lock()
		s.closed = true
		conns := make([]*Conn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		for _, c := range conns {
			_ = c.nc.Close()
		}
	})
	s.wg.Wait()
	return err
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return
		}
		c := newConn(s, nc)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = nc.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// enqueue makes a handshaken connection available to Accept.
func (s *Server) enqueue(c *Conn) {
	s.qmu.Lock()
	s.ready = append(s.ready, c)
	s.qmu.Unlock()
	signal(s.readySig)
}

func (s *Server) forget(c *Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// generate returns a server-unique name with the given prefix.
func (s *Server) generate(prefix string) string {
	return fmt.Sprintf("%s%06d", prefix, s.names.Add(1))
}

// signal performs a non-blocking send on a capacity-1 wake-up channel.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// serve runs one connection: handshake, then the frame loop, until the
// socket fails or a close handshake completes.
func (c *Conn) serve() {
	defer c.srv.wg.Done()
	c.br = bufio.NewReader(c.nc)
	err := c.handshake()
	if err == nil {
		if c.heartbeat > 0 {
			c.srv.wg.Add(1)
			go c.heartbeater(c.heartbeat / 2)
		}
		err = c.loop()
	}
	c.finish(err)
	c.srv.forget(c)
}

// heartbeater sends a heartbeat frame every interval until the connection ends.
func (c *Conn) heartbeater(interval time.Duration) {
	defer c.srv.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	hb := appendFrame(nil, frameHeartbeat, 0, nil)
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			if err := c.write(hb); err != nil {
				return
			}
		}
	}
}
