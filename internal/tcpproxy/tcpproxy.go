// Package tcpproxy is a TCP proxy for tests that cut one broker
// instance's connections from outside, as a network fault or the server
// closing them would, without touching any other instance's: each
// instance dials its own Proxy, and Sever closes that proxy's connections
// and no others.
//
// Unlike stopping and restarting a toxiproxy proxy, Sever keeps the
// listener open: the instance may reconnect at once, and no other socket
// can take the port in between. Close ends every goroutine the proxy
// started before it returns, so leak checks need no exception for it.
package tcpproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// dialTimeout bounds one dial of the upstream.
const dialTimeout = 10 * time.Second

// Proxy forwards every connection accepted on Addr to its upstream.
type Proxy struct {
	upstream string
	ln       net.Listener
	ctx      context.Context // ends at Close: bounds the upstream dials
	cancel   context.CancelFunc
	wg       sync.WaitGroup // the accept loop and every connection's goroutines

	mu     sync.Mutex
	closed bool
	pairs  map[*pair]struct{}
}

// pair is one proxied connection: the client's and the upstream's side.
type pair struct {
	client, upstream net.Conn
	once             sync.Once
}

func (p *pair) close() {
	p.once.Do(func() {
		_ = p.client.Close()
		_ = p.upstream.Close()
	})
}

// Start listens on a free loopback port and forwards to upstream
// (host:port).
func Start(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("tcpproxy: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{upstream: upstream, ln: ln, ctx: ctx, cancel: cancel, pairs: make(map[*pair]struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listener, host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Sever closes, on both sides, every connection the proxy has forwarded
// and still holds, and returns how many it closed. The client sees its
// peer close the connection (EOF, or a reset when it writes), and so does
// the upstream. New connections are accepted and forwarded as before; a
// connection whose upstream dial is still under way when Sever is called
// is not counted and survives.
func (p *Proxy) Sever() int {
	p.mu.Lock()
	cut := make([]*pair, 0, len(p.pairs))
	for pr := range p.pairs {
		cut = append(cut, pr)
		delete(p.pairs, pr) // counted once, though its goroutines end later
	}
	p.mu.Unlock()
	for _, pr := range cut {
		pr.close()
	}
	return len(cut)
}

// Close stops accepting, closes every connection and returns once every
// goroutine of the proxy has ended. Calling it again does nothing.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	cut := make([]*pair, 0, len(p.pairs))
	for pr := range p.pairs {
		cut = append(cut, pr)
	}
	p.mu.Unlock()
	p.cancel()
	_ = p.ln.Close()
	for _, pr := range cut {
		pr.close()
	}
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient failure (out of file descriptors): try again
			// shortly rather than spin.
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve dials the upstream for client and copies both ways until either
// side ends, then closes both.
func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	ctx, cancel := context.WithTimeout(p.ctx, dialTimeout)
	var d net.Dialer
	upstream, err := d.DialContext(ctx, "tcp", p.upstream)
	cancel()
	if err != nil {
		_ = client.Close()
		return
	}
	pr := &pair{client: client, upstream: upstream}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		pr.close()
		return
	}
	p.pairs[pr] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.pairs, pr)
		p.mu.Unlock()
	}()

	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(upstream, client)
		pr.close()
	}()
	_, _ = io.Copy(client, upstream)
	pr.close()
	<-done
}
