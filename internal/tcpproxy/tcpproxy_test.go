package tcpproxy_test

import (
	"bufio"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/isobroker/broker/internal/tcpproxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer echoes every line back until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(c, c) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, bufio.NewReader(c)
}

// echo sends a line and reads it back, reporting any failure.
func echo(c net.Conn, r *bufio.Reader, line string) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return err
	}
	got, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if got != line+"\n" {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// Sever cuts the connections of its own proxy, and only those; the
// proxy then forwards new connections again at once.
func TestSeverIsPerProxy(t *testing.T) {
	upstream := echoServer(t)
	p1, err := tcpproxy.Start(upstream)
	if err != nil {
		t.Fatal(err)
	}
	defer p1.Close()
	p2, err := tcpproxy.Start(upstream)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	c1, r1 := dial(t, p1.Addr())
	c2, r2 := dial(t, p2.Addr())
	for _, x := range []struct {
		c net.Conn
		r *bufio.Reader
	}{{c1, r1}, {c2, r2}} {
		if err := echo(x.c, x.r, "before"); err != nil {
			t.Fatalf("echo before Sever: %v", err)
		}
	}

	if n := p1.Sever(); n != 1 {
		t.Fatalf("Sever closed %d connections, want 1", n)
	}
	_ = c1.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r1.ReadByte(); err == nil {
		t.Fatal("a severed connection still reads")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("a severed connection was left open (read timed out instead of ending)")
	}
	if err := echo(c2, r2, "other proxy"); err != nil {
		t.Fatalf("the other proxy's connection broke: %v", err)
	}
	c3, r3 := dial(t, p1.Addr())
	if err := echo(c3, r3, "after"); err != nil {
		t.Fatalf("new connection after Sever: %v", err)
	}
	if n := p1.Sever(); n != 1 {
		t.Fatalf("second Sever closed %d connections, want 1", n)
	}
}

// Close ends every connection and every goroutine of the proxy (the leak
// check in TestMain).
func TestClose(t *testing.T) {
	upstream := echoServer(t)
	p, err := tcpproxy.Start(upstream)
	if err != nil {
		t.Fatal(err)
	}
	c, r := dial(t, p.Addr())
	if err := echo(c, r, "x"); err != nil {
		t.Fatal(err)
	}
	p.Close()
	p.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadByte(); err == nil {
		t.Fatal("connection still open after Close")
	}
}
