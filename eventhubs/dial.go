package eventhubs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"

	"github.com/coder/websocket"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
	"github.com/isobroker/broker/internal/amqpws"
)

// transport names how connections are made, for the logs.
func (c *Config) transport() string {
	switch {
	case c.WebSockets && c.UseDevelopmentEmulator:
		return "ws"
	case c.WebSockets:
		return "wss"
	case c.UseDevelopmentEmulator:
		return "tcp"
	}
	return "tls"
}

// tlsConfig is TLSConfig (or TLS 1.2+ with the system roots) with the
// namespace's host as the server name unless one is set.
func (c *Config) tlsConfig() *tls.Config {
	tc := c.TLSConfig.Clone()
	if tc == nil {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if tc.ServerName == "" {
		tc.ServerName = c.serverName()
	}
	return tc
}

// dial opens the byte stream AMQP runs on: TCP to addr, TLS over it
// unless UseDevelopmentEmulator, or a WebSocket over either. ctx bounds it
// all; the connection returned does not depend on ctx.
func (b *Broker) dial(ctx context.Context, addr string) (net.Conn, error) {
	if b.cfg.WebSockets {
		return b.dialWebSocket(ctx, addr)
	}
	raw, err := b.dialTCP(ctx, addr)
	if err != nil || b.cfg.UseDevelopmentEmulator {
		return raw, err
	}
	return handshakeTLS(ctx, raw, b.cfg.tlsConfig())
}

// dialTCP opens a TCP connection to addr with Config.Dialer or a
// net.Dialer.
func (b *Broker) dialTCP(ctx context.Context, addr string) (net.Conn, error) {
	if d := b.cfg.Dialer; d != nil {
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err == nil && nc == nil {
			err = errors.New("Config.Dialer returned neither a connection nor an error")
		}
		return nc, err
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// handshakeTLS runs a client handshake on raw, closing raw when it fails.
func handshakeTLS(ctx context.Context, raw net.Conn, tc *tls.Config) (net.Conn, error) {
	tlsConn := tls.Client(raw, tc)
	if err := tlsConn.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, err
	}
	return tlsConn, nil
}

// dialWebSocket opens AMQP over a WebSocket: an HTTP/1.1 upgrade of a
// connection to addr (TLS unless UseDevelopmentEmulator), for the URL
// ws[s]://<namespace>/$servicebus/websocket, subprotocol AMQPWSB10. The
// HTTP client is this call's own (no pool, no proxy, no redirects), so
// nothing outlives a failed attempt and nothing is shared.
func (b *Broker) dialWebSocket(ctx context.Context, addr string) (net.Conn, error) {
	scheme := "wss"
	if b.cfg.UseDevelopmentEmulator {
		scheme = "ws"
	}
	u := scheme + "://" + b.cfg.Namespace + amqpws.Path
	var mu sync.Mutex
	var raws []net.Conn // every socket dialed, closed if the upgrade fails
	dialRaw := func(ctx context.Context) (net.Conn, error) {
		nc, err := b.dialTCP(ctx, addr)
		if err == nil {
			mu.Lock()
			raws = append(raws, nc)
			mu.Unlock()
		}
		return nc, err
	}
	tc := b.cfg.tlsConfig()
	tc.NextProtos = []string{"http/1.1"} // an upgrade is an HTTP/1.1 exchange
	tr := &http.Transport{
		// The URL names the namespace (the Host header, and the server
		// name via tc); the socket goes to addr.
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dialRaw(ctx) },
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			raw, err := dialRaw(ctx)
			if err != nil {
				return nil, err
			}
			return handshakeTLS(ctx, raw, tc)
		},
		Proxy:                  nil,
		DisableCompression:     true,
		MaxResponseHeaderBytes: 64 << 10,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient:   client,
		Subprotocols: []string{amqpws.Subprotocol},
	})
	if err != nil {
		mu.Lock()
		for _, nc := range raws {
			_ = nc.Close()
		}
		mu.Unlock()
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, upgradeRefused(addr, resp.StatusCode, err)
		}
		return nil, err
	}
	if p := ws.Subprotocol(); p != amqpws.Subprotocol {
		_ = ws.CloseNow()
		return nil, driver.MarkFatal(&Error{Op: "connect", Entity: addr,
			Description: fmt.Sprintf("the WebSocket endpoint did not accept the subprotocol %s (it chose %q): it does not serve AMQP", amqpws.Subprotocol, p),
			sentinel:    broker.ErrUnavailable, act: actFatal})
	}
	return amqpws.NetConn(ws), nil
}

// upgradeRefused classifies a WebSocket upgrade answered with another HTTP
// status than 101: a server error (5xx), 408 and 429 may pass and are
// retryable; anything else — a client error (wrong endpoint or path, a
// proxy wanting credentials), a redirect, a plain 200 from a server that
// does not speak WebSockets — needs a configuration change and is fatal.
func upgradeRefused(addr string, status int, cause error) error {
	e := &Error{Op: "connect", Entity: addr,
		Description: fmt.Sprintf("WebSocket upgrade at %s refused with HTTP %d %s", amqpws.Path, status, http.StatusText(status)),
		sentinel:    broker.ErrUnavailable, cause: cause, act: actReconnect}
	if status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests {
		e.act = actFatal
		return driver.MarkFatal(e)
	}
	return driver.MarkRetryable(e)
}
