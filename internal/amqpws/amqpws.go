// Package amqpws carries AMQP 1.0 over WebSockets the way Azure Event Hubs
// and Service Bus accept it: the AMQP byte stream in binary WebSocket
// messages (the OASIS AMQP WebSocket Binding), negotiated with the
// subprotocol AMQPWSB10 at the path /$servicebus/websocket. The adapter
// (client side) and the emulator (server side) share it.
package amqpws

import (
	"context"
	"net"
	"net/http"
	"strings"

	"github.com/coder/websocket"
)

const (
	// Subprotocol is the WebSocket subprotocol of the AMQP WebSocket
	// Binding 1.0, which the .NET, Java, JavaScript and Python SDKs offer.
	Subprotocol = "AMQPWSB10"
	// AltSubprotocol is the subprotocol the Go SDK's WebSocket example and
	// live test offer; the service accepts it too.
	AltSubprotocol = "amqp"
	// Path is where the service serves AMQP over WebSockets.
	Path = "/$servicebus/websocket"
)

// Subprotocols are the subprotocols a server accepts, in its order of
// preference.
func Subprotocols() []string { return []string{Subprotocol, AltSubprotocol} }

// NetConn returns ws as a net.Conn: writes are sent as binary messages,
// reads return the bytes of the binary messages received, as one stream.
//
// Close closes the underlying connection at once, without the WebSocket
// close handshake. AMQP has its own close exchange, done before the socket
// is closed (or the peer is gone), and coder/websocket's handshake waits up
// to 10 s for a silent peer — a wait a second Close cannot cut short — which
// would leave closing unbounded.
func NetConn(ws *websocket.Conn) net.Conn {
	return &conn{Conn: websocket.NetConn(context.Background(), ws, websocket.MessageBinary), ws: ws}
}

type conn struct {
	net.Conn
	ws *websocket.Conn
}

func (c *conn) Close() error {
	err := c.ws.CloseNow()
	_ = c.Conn.Close() // stops its deadline timers; the socket is closed already
	return err
}

// Offers reports whether the handshake request h lists one of
// Subprotocols among its Sec-WebSocket-Protocol tokens.
func Offers(h http.Header) bool {
	for _, v := range h.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			for _, want := range Subprotocols() {
				if strings.EqualFold(strings.TrimSpace(p), want) {
					return true
				}
			}
		}
	}
	return false
}
