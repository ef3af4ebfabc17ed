package emulator_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"
	"github.com/Azure/go-amqp"
	"github.com/coder/websocket"

	"github.com/isobroker/broker/eventhubs/emulator"
	"github.com/isobroker/broker/internal/amqpws"
)

// certFor makes a CA and a server certificate it signed for host; the
// pool trusts the CA.
func certFor(t *testing.T, host string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "emulator test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// sniLog records the server names of the TLS handshakes a config served.
type sniLog struct {
	mu    sync.Mutex
	names []string
}

func (s *sniLog) config(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}, GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		s.mu.Lock()
		s.names = append(s.names, h.ServerName)
		s.mu.Unlock()
		return nil, nil
	}}
}

func (s *sniLog) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.names, ",")
}

// wsClient is an HTTP client of its own for one test (no shared pool).
func wsClient(t *testing.T, roots *x509.CertPool) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func TestTLSConfigNeedsCertificate(t *testing.T) {
	_, err := emulator.New(emulator.Config{TLSConfig: &tls.Config{}})
	if !errors.Is(err, emulator.ErrInvalidConfig) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("New with a TLSConfig without certificate = %v, want ErrInvalidConfig naming the certificate", err)
	}
}

// TestWebSocketListener: the WebSocket listener serves only upgrades at
// /$servicebus/websocket offering AMQPWSB10 or "amqp" (preferring
// AMQPWSB10; 404 elsewhere, 400 without either); an upgraded WebSocket carries an AMQP connection like
// one on Addr, and Close ends it with amqp:connection:forced and leaves no
// goroutine (checked by startEmulator).
func TestWebSocketListener(t *testing.T) {
	e, logs := startEmulator(t, emulator.Config{WebSocketAddr: "127.0.0.1:0", AllowAnonymous: true, Hubs: []emulator.HubConfig{{Name: "wshub", Partitions: 1}}})
	if e.WebSocketAddr() == "" || e.WebSocketAddr() == e.Addr() {
		t.Fatalf("WebSocketAddr %q (Addr %q)", e.WebSocketAddr(), e.Addr())
	}
	base := "http://" + e.WebSocketAddr()
	client := wsClient(t, nil)
	for _, c := range []struct {
		path, proto string
		want        int
	}{
		{"/", amqpws.Subprotocol, http.StatusNotFound},
		{"/$servicebus/other", amqpws.Subprotocol, http.StatusNotFound},
		{amqpws.Path, "", http.StatusBadRequest},
		{amqpws.Path, "mqtt", http.StatusBadRequest},
	} {
		_, resp, err := websocket.Dial(ctxT(t, 5*time.Second), base+c.path, &websocket.DialOptions{HTTPClient: client, Subprotocols: []string{c.proto}})
		if err == nil || resp == nil || resp.StatusCode != c.want {
			code := 0
			if resp != nil {
				code = resp.StatusCode
			}
			t.Errorf("%s with subprotocol %q: status %d (%v), want %d", c.path, c.proto, code, err, c.want)
		}
	}

	for _, offer := range [][]string{{amqpws.AltSubprotocol}, {amqpws.AltSubprotocol, amqpws.Subprotocol}} {
		ws, _, err := websocket.Dial(ctxT(t, 5*time.Second), base+amqpws.Path, &websocket.DialOptions{HTTPClient: client, Subprotocols: offer})
		if err != nil {
			t.Fatalf("offering %q: %v", offer, err)
		}
		if want := offer[len(offer)-1]; ws.Subprotocol() != want {
			t.Errorf("offering %q: negotiated %q, want %q", offer, ws.Subprotocol(), want)
		}
		_ = ws.CloseNow()
	}
	ws, _, err := websocket.Dial(ctxT(t, 5*time.Second), base+amqpws.Path, &websocket.DialOptions{HTTPClient: client, Subprotocols: []string{"other", amqpws.Subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	if ws.Subprotocol() != amqpws.Subprotocol {
		t.Fatalf("negotiated subprotocol %q", ws.Subprotocol())
	}
	conn, err := amqp.NewConn(ctxT(t, 5*time.Second), amqpws.NetConn(ws), &amqp.ConnOptions{SASLType: amqp.SASLTypeAnonymous(), HostName: "ns.example"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sess, err := conn.NewSession(ctxT(t, 5*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	snd, err := sess.NewSender(ctxT(t, 5*time.Second), "wshub", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snd.Send(ctxT(t, 5*time.Second), amqp.NewMessage([]byte("over a websocket")), nil); err != nil {
		t.Fatal(err)
	}
	// The probes above end on their own time (their handshake fails on
	// EOF after the client closed): wait for them to leave the count.
	for deadline := time.Now().Add(5 * time.Second); e.ConnectionCount() != 1 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if e.ConnectionCount() != 1 {
		t.Errorf("ConnectionCount = %d, want 1", e.ConnectionCount())
	}
	if !strings.Contains(logs.String(), "hostname=ns.example") {
		t.Errorf("emulator did not log the open frame's hostname")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-conn.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client connection still open after Close")
	}
	if got := remoteCond(conn.Err()); got != emulator.CondConnectionForced {
		t.Errorf("connection ended with %v, want %s", conn.Err(), emulator.CondConnectionForced)
	}
}

// TestSDKOverTLSAndWebSockets: the official Go SDK works against the
// emulator over amqps (its own TLS dial, ClientOptions.TLSConfig) and over
// wss (ClientOptions.NewWebSocketConn with coder/websocket and the
// subprotocol "amqp", as in the SDK's example), sending SNI with the
// namespace's host, and reads back what it sent.
func TestSDKOverTLSAndWebSockets(t *testing.T) {
	cert, roots := certFor(t, "localhost")
	var snis sniLog
	e, logs := startEmulator(t, emulator.Config{TLSConfig: snis.config(cert), WebSocketAddr: "127.0.0.1:0", Hubs: []emulator.HubConfig{{Name: "sdkhub", Partitions: 2}}})
	tc := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	for _, c := range []struct {
		name, addr, pid string
		ws              bool
	}{{"amqps", e.Addr(), "0", false}, {"wss", e.WebSocketAddr(), "1", true}} {
		t.Run(c.name, func(t *testing.T) {
			_, port, _ := net.SplitHostPort(c.addr)
			cs := fmt.Sprintf("Endpoint=sb://localhost:%s/;SharedAccessKeyName=%s;SharedAccessKey=%s;EntityPath=sdkhub", port, e.KeyName(), e.Key())
			if strings.Contains(e.ConnectionString(""), "UseDevelopmentEmulator") {
				t.Errorf("ConnectionString of a TLS emulator has UseDevelopmentEmulator: %s", e.ConnectionString(""))
			}
			var newWS func(context.Context, azeventhubs.WebSocketConnParams) (net.Conn, error)
			if c.ws {
				client := wsClient(t, roots)
				newWS = func(ctx context.Context, p azeventhubs.WebSocketConnParams) (net.Conn, error) {
					ws, _, err := websocket.Dial(ctx, p.Host, &websocket.DialOptions{HTTPClient: client, Subprotocols: []string{"amqp"}})
					if err != nil {
						return nil, err
					}
					return amqpws.NetConn(ws), nil
				}
			}
			p, err := azeventhubs.NewProducerClientFromConnectionString(cs, "", &azeventhubs.ProducerClientOptions{TLSConfig: tc, NewWebSocketConn: newWS, RetryOptions: fastRetry})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close(context.Background())
			cons, err := azeventhubs.NewConsumerClientFromConnectionString(cs, "", azeventhubs.DefaultConsumerGroup, &azeventhubs.ConsumerClientOptions{TLSConfig: tc, NewWebSocketConn: newWS, RetryOptions: fastRetry})
			if err != nil {
				t.Fatal(err)
			}
			defer cons.Close(context.Background())
			props, err := p.GetEventHubProperties(ctxT(t, 10*time.Second), nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(props.PartitionIDs) != 2 {
				t.Errorf("properties %+v", props)
			}
			pid := c.pid
			sendBatch(t, p, &azeventhubs.EventDataBatchOptions{PartitionID: &pid}, c.name+"-a", c.name+"-b")
			earliest := true
			evs := receive(t, cons, pid, &azeventhubs.PartitionClientOptions{StartPosition: azeventhubs.StartPosition{Earliest: &earliest}}, 2)
			if got := bodies(evs); got != c.name+"-a,"+c.name+"-b" {
				t.Errorf("received %s", got)
			}
		})
	}
	for _, n := range strings.Split(snis.String(), ",") {
		if n != "localhost" {
			t.Errorf("TLS handshakes had server names %s, want only localhost", snis.String())
			break
		}
	}
	if !strings.Contains(logs.String(), `msg="WebSocket accepted"`) || !strings.Contains(logs.String(), "subprotocol=amqp") {
		t.Errorf("the SDK did not come over a WebSocket with subprotocol amqp")
	}
}
