package eventhubs_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobroker/broker/eventhubs/emulator"
)

// unresolvable is a namespace host that no resolver answers (RFC 6761
// reserves .invalid): a connection can only reach the emulator through a
// custom endpoint.
const unresolvable = "isobroker-ns.servicebus.invalid"

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool // trusts only this CA
}

func newCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "isobroker test CA " + t.Name()},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// serverCert issues a server certificate for the given DNS names (IP
// addresses become IP SANs).
func (ca *testCA) serverCert(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key}
}

// clientTLS trusts only ca.
func (ca *testCA) clientTLS() *tls.Config {
	return &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS12}
}

// handshakes records the server name (SNI) of every TLS handshake a
// server saw.
type handshakes struct {
	mu    sync.Mutex
	names []string
}

// serverTLS serves cert and records each client hello's server name.
func (h *handshakes) serverTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			h.mu.Lock()
			h.names = append(h.names, hello.ServerName)
			h.mu.Unlock()
			return nil, nil
		},
	}
}

func (h *handshakes) seen() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.names...)
}

// checkAll fails t unless at least min handshakes were seen, every one
// with server name want.
func (h *handshakes) checkAll(t testing.TB, min int, want string) {
	t.Helper()
	got := h.seen()
	if len(got) < min {
		t.Errorf("server saw %d TLS handshakes, want at least %d", len(got), min)
	}
	for i, n := range got {
		if n != want {
			t.Errorf("TLS handshake %d: client sent server name %q, want %q", i, n, want)
		}
	}
}

// emulatorLog is an emulator's debug log, for checking what it saw.
type emulatorLog struct{ logBuffer }

func (l *emulatorLog) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(&l.logBuffer, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// values returns attribute key of every line whose message is msg, in
// order (the text handler writes `msg="…"` and `key=value`).
func (l *emulatorLog) values(msg, key string) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		if !strings.Contains(line, "msg="+quoteIfNeeded(msg)+" ") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, key+"="); ok {
				out = append(out, v)
			}
		}
	}
	return out
}

func quoteIfNeeded(s string) string {
	if strings.Contains(s, " ") {
		return fmt.Sprintf("%q", s)
	}
	return s
}

// checkNamespaceSeen fails t unless the emulator saw the namespace ns in
// every open frame's hostname (wantHost) and every put-token audience
// (scheme://ns/…) — what a custom endpoint must leave unchanged.
func (l *emulatorLog) checkNamespaceSeen(t testing.TB, wantHost, audiencePrefix string) {
	t.Helper()
	hosts := l.values("connection open", "hostname")
	if len(hosts) == 0 {
		t.Errorf("emulator logged no connection open")
	}
	for _, h := range hosts {
		if h != wantHost {
			t.Errorf("open frame hostname %q, want %q", h, wantHost)
		}
	}
	auds := l.values("put-token accepted", "audience")
	if len(auds) == 0 {
		t.Errorf("emulator logged no accepted put-token")
	}
	for _, a := range auds {
		if !strings.HasPrefix(a, audiencePrefix) {
			t.Errorf("token audience %q, want it to start with %q", a, audiencePrefix)
		}
	}
}

// tlsEmulator starts an emulator that serves TLS with a certificate for
// names, issued by a new CA; h records the handshakes. cfg's other fields
// are kept.
func tlsEmulator(t testing.TB, cfg emulator.Config, h *handshakes, names ...string) (*emulator.Emulator, *testCA) {
	t.Helper()
	ca := newCA(t)
	cfg.TLSConfig = h.serverTLS(ca.serverCert(t, names...))
	return startEmulator(t, cfg), ca
}

// connString is a connection string for namespace (host[:port]) with e's
// key; emulator adds UseDevelopmentEmulator=true.
func connString(e *emulator.Emulator, namespace, hub string, plain bool) string {
	s := fmt.Sprintf("Endpoint=sb://%s/;SharedAccessKeyName=%s;SharedAccessKey=%s", namespace, e.KeyName(), e.Key())
	if hub != "" {
		s += ";EntityPath=" + hub
	}
	if plain {
		s += ";UseDevelopmentEmulator=true"
	}
	return s
}

// portOf is the port of a host:port address.
func portOf(t testing.TB, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// slowWrites delays every write on the connections it dials by delay, as
// a far-away service delays every frame's effect.
type slowWrites struct{ delay time.Duration }

func (s slowWrites) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return slowConn{Conn: c, delay: s.delay}, nil
}

type slowConn struct {
	net.Conn
	delay time.Duration
}

func (c slowConn) Write(p []byte) (int, error) {
	time.Sleep(c.delay)
	return c.Conn.Write(p)
}
