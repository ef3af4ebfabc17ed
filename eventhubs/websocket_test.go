package eventhubs_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
	"github.com/isobroker/broker/internal/testenv"
)

// wsNetworks are the two WebSocket networks the tests run on: ws (plain,
// UseDevelopmentEmulator) and wss (TLS, certificate for localhost).
var wsNetworks = []struct {
	name   string
	secure bool
}{{"ws", false}, {"wss", true}}

// wsEmulator starts an emulator with a WebSocket listener (TLS when
// secure) and returns it with a dialFunc that reaches it over
// WebSockets only: the namespace is the WebSocket listener's address.
func wsEmulator(t *testing.T, cfg emulator.Config, secure bool, hs *handshakes) (*emulator.Emulator, dialFunc) {
	t.Helper()
	cfg.WebSocketAddr = "127.0.0.1:0"
	if !secure {
		e := startEmulator(t, cfg)
		return e, func(t *testing.T, logs *logBuffer) *eventhubs.Broker {
			return openCS(t, connString(e, e.WebSocketAddr(), "", true), logs, eventhubs.WithWebSockets())
		}
	}
	e, ca := tlsEmulator(t, cfg, hs, "localhost")
	ns := "localhost:" + portOf(t, e.WebSocketAddr())
	return e, func(t *testing.T, logs *logBuffer) *eventhubs.Broker {
		return openCS(t, connString(e, ns, "", false), logs, eventhubs.WithWebSockets(), eventhubs.WithTLSConfig(ca.clientTLS()))
	}
}

// TestWebSocketEndToEnd: over ws and wss, the adapter reads hub
// properties, publishes and receives with only the emulator's WebSocket
// address known to it; the emulator accepted a WebSocket for each broker
// (with the namespace as Host, and as SNI over wss), and each broker
// logged its connection as one over WebSockets.
func TestWebSocketEndToEnd(t *testing.T) {
	for _, n := range wsNetworks {
		t.Run(n.name, func(t *testing.T) {
			var hs handshakes
			elog := &emulatorLog{}
			e, dial := wsEmulator(t, emulator.Config{Logger: elog.logger()}, n.secure, &hs)
			hub := newHub(t, e, 2)
			var logs []*logBuffer
			roundTrip(t, hub, 2, func(t *testing.T, l *logBuffer) *eventhubs.Broker {
				logs = append(logs, l)
				return dial(t, l)
			})
			for i, l := range logs {
				if c := l.count("connection open", "transport="+n.name); c != 1 {
					t.Errorf("broker %d logged %d connection opens over %s, want 1:\n%s", i, c, n.name, l)
				}
			}
			hosts := elog.values("WebSocket accepted", "host")
			if len(hosts) != 2 {
				t.Errorf("emulator accepted %d WebSockets, want 2", len(hosts))
			}
			wantHost := e.WebSocketAddr()
			if n.secure {
				wantHost = "localhost:" + portOf(t, e.WebSocketAddr())
				hs.checkAll(t, 2, "localhost")
			}
			for _, h := range hosts {
				if h != wantHost {
					t.Errorf("WebSocket Host %q, want %q", h, wantHost)
				}
			}
			elog.checkNamespaceSeen(t, wantHost, map[bool]string{false: "amqp://", true: "amqps://"}[n.secure]+wantHost+"/")
		})
	}
}

// TestWebSocketIdleClose: TestIdleClose's recovery over ws and wss: the
// service-like idle close of a WebSocket-borne connection is recovered
// lazily, exactly once, and a subscriber keeps receiving across a forced
// close.
func TestWebSocketIdleClose(t *testing.T) {
	for _, n := range wsNetworks {
		t.Run(n.name, func(t *testing.T) {
			if n.secure {
				testenv.Slow(t, "a second idle-close cycle; ws covers WebSockets and TestTLSIdleClose covers TLS")
			}
			var hs handshakes
			e, dial := wsEmulator(t, idleEmulator, n.secure, &hs)
			hub := newHub(t, e, 2)
			idleCloseRecovery(t, e, hub, dial)
			if n.secure {
				hs.checkAll(t, 4, "localhost")
			}
		})
	}
}

// TestWebSocketUpgradeRefused: an endpoint that answers the upgrade with
// an HTTP error, or upgrades without the AMQP subprotocol, fails Open
// with an error that says so; a client error (404) or a missing
// subprotocol needs another configuration and is not retryable, a
// server error (503) is.
func TestWebSocketUpgradeRefused(t *testing.T) {
	cases := []struct {
		name      string
		handler   http.HandlerFunc
		want      string
		retryable bool
	}{
		{"not-found", http.NotFound, "refused with HTTP 404 Not Found", false},
		{"unavailable", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}, "refused with HTTP 503 Service Unavailable", true},
		{"plain-http", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("hello")) }, "refused with HTTP 200 OK", false},
		{"no-subprotocol", func(w http.ResponseWriter, r *http.Request) {
			ws, err := websocket.Accept(w, r, nil) // chooses no subprotocol
			if err == nil {
				_ = ws.CloseNow()
			}
		}, "did not accept the subprotocol AMQPWSB10", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var mu sync.Mutex
			var paths []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				paths = append(paths, r.URL.Path+" "+r.Header.Get("Sec-WebSocket-Protocol"))
				mu.Unlock()
				c.handler(w, r)
			}))
			defer srv.Close()
			addr := strings.TrimPrefix(srv.URL, "http://")
			_, err := eventhubs.Open(ctxT(t, 10*time.Second), eventhubs.Config{
				Namespace: addr, KeyName: "k", Key: "secret", UseDevelopmentEmulator: true, WebSockets: true, Logger: discard(),
			})
			if err == nil {
				t.Fatal("open succeeded")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
			if broker.IsRetryable(err) != c.retryable {
				t.Errorf("retryable = %v, want %v: %v", broker.IsRetryable(err), c.retryable, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(paths) != 1 || paths[0] != "/$servicebus/websocket AMQPWSB10" {
				t.Errorf("requests %q, want one for /$servicebus/websocket offering AMQPWSB10", paths)
			}
		})
	}
}

// TestWebSocketURLParameter: the eventhubs:// URL form's websockets
// parameter selects WebSockets (and the config's String says so); a
// value that is not a boolean is refused, naming the parameter.
func TestWebSocketURLParameter(t *testing.T) {
	e := startEmulator(t, emulator.Config{WebSocketAddr: "127.0.0.1:0"})
	hub := newHub(t, e, 1)
	base := "eventhubs://" + url.UserPassword(e.KeyName(), e.Key()).String() + "@" + e.WebSocketAddr() + "/" + hub + "?emulator=true&websockets="
	logs := &logBuffer{}
	b, err := eventhubs.OpenURL(ctxT(t, 10*time.Second), base+"true", eventhubs.WithLogger(logs.logger()), eventhubs.WithName(t.Name()))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	if err := b.Publish(ctxT(t, 10*time.Second), hub, &broker.Message{ID: "x"}); err != nil {
		t.Fatal(err)
	}
	if n := logs.count("connection open", "transport=ws"); n != 1 {
		t.Errorf("logged %d connection opens over ws, want 1:\n%s", n, logs)
	}
	if n := logs.count("broker open", "websockets=true"); n != 1 {
		t.Errorf("the config logged at open does not say websockets=true:\n%s", logs)
	}
	_, err = eventhubs.OpenURL(ctxT(t, 10*time.Second), base+"maybe", eventhubs.WithLogger(discard()), eventhubs.WithName(t.Name()))
	if !errors.Is(err, broker.ErrInvalidOption) || !strings.Contains(err.Error(), "websockets") {
		t.Errorf("websockets=maybe: %v, want ErrInvalidOption naming websockets", err)
	}
}
