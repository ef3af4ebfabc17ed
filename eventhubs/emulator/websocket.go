package emulator

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http"

	"github.com/coder/websocket"

	"github.com/isobroker/broker/internal/amqpws"
)

// newWebSocketServer builds the HTTP server of Config.WebSocketAddr. It
// speaks HTTP/1.1 only: a WebSocket upgrade is an HTTP/1.1 exchange.
func (e *Emulator) newWebSocketServer() *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+amqpws.Path, e.serveWebSocket)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "AMQP over WebSockets is served at GET "+amqpws.Path, http.StatusNotFound)
	})
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: e.cfg.HandshakeTimeout, // also bounds the TLS handshake
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){}, // no HTTP/2
	}
}

// serveWebSockets runs the WebSocket listener until Close.
func (e *Emulator) serveWebSockets() {
	defer e.wg.Done()
	ln := e.wsLn
	if t := e.cfg.TLSConfig; t != nil {
		t = t.Clone()
		t.NextProtos = []string{"http/1.1"}
		ln = tls.NewListener(ln, t)
	}
	if err := e.ws.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		e.log.Warn("WebSocket listener failed", "err", err)
	}
}

// serveWebSocket upgrades one request offering AMQPWSB10 (or "amqp", which
// the service accepts as well) and serves the AMQP connection it carries
// until that ends, exactly as a connection accepted on Addr.
func (e *Emulator) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	if !amqpws.Offers(r.Header) {
		http.Error(w, "the WebSocket subprotocol "+amqpws.Subprotocol+" (or "+amqpws.AltSubprotocol+") is required", http.StatusBadRequest)
		return
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		http.Error(w, "the emulator is closing", http.StatusServiceUnavailable)
		return
	}
	e.wg.Add(1) // before Close can wait: it sets closed under mu first
	e.mu.Unlock()
	defer e.wg.Done()
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols: amqpws.Subprotocols(),
		// Clients are programs, not pages: no Origin to check.
		InsecureSkipVerify: true,
	})
	if err != nil {
		e.log.Info("WebSocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	attrs := []any{"remote", r.RemoteAddr, "host", r.Host, "subprotocol", ws.Subprotocol()}
	if r.TLS != nil {
		attrs = append(attrs, "tls_server_name", r.TLS.ServerName)
	}
	e.log.Debug("WebSocket accepted", attrs...)
	if c := e.register(amqpws.NetConn(ws)); c != nil {
		c.serve()
	}
}
