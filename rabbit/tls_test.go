package rabbit_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/internal/rabbitnode"
	"github.com/isobroker/broker/rabbit"
)

// TestTLS: amqps against a node with a TLS listener, configured once from
// the URL's query (cacertfile, server_name_indication) and once through
// Config.TLSConfig; an untrusted server certificate is refused.
func TestTLS(t *testing.T) {
	leakCheck(t)
	dir := t.TempDir()
	caPEM, certPEM, keyPEM := makeCerts(t)
	for name, data := range map[string][]byte{"ca.pem": caPEM, "cert.pem": certPEM, "key.pem": keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	n := rabbitnode.StartT(t, rabbitnode.Options{Name: "tls", Config: fmt.Sprintf(`
listeners.ssl.1 = 127.0.0.1:%d
ssl_options.cacertfile = %s
ssl_options.certfile = %s
ssl_options.keyfile = %s
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
`, port, filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))})
	_ = n
	ctx := ctxFor(t, time.Minute)
	base := fmt.Sprintf("amqps://guest:guest@127.0.0.1:%d/", port)

	roundTrip := func(t *testing.T, b *rabbit.Broker) {
		t.Helper()
		topic := brokertest.RandomName("tls")
		got := make(chan string, 1)
		if _, err := b.Subscribe(ctx, topic, func(_ context.Context, d *broker.Delivery) error { got <- d.ID; return nil }); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(ctx, topic, &broker.Message{ID: "secure"}); err != nil {
			t.Fatal(err)
		}
		select {
		case id := <-got:
			if id != "secure" {
				t.Errorf("got %s", id)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("not delivered over TLS")
		}
	}
	t.Run("URLQuery", func(t *testing.T) {
		b := open(t, base+"?cacertfile="+filepath.Join(dir, "ca.pem")+"&server_name_indication=localhost")
		roundTrip(t, b)
	})
	t.Run("ConfigTLS", func(t *testing.T) {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		b := open(t, base, rabbit.WithTLSConfig(&tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}))
		roundTrip(t, b)
	})
	t.Run("Untrusted", func(t *testing.T) {
		_, err := rabbit.OpenURL(ctx, base, rabbit.WithLogger(testLogger()))
		if err == nil {
			t.Fatal("connected without trusting the server's certificate")
		}
		t.Logf("untrusted server: %v", err)
		if !errors.Is(err, broker.ErrUnavailable) || broker.IsRetryable(err) {
			t.Errorf("untrusted server: want a fatal ErrUnavailable, got %v (retryable %v)", err, broker.IsRetryable(err))
		}
	})
}

// makeCerts returns a CA certificate and a server certificate for
// localhost / 127.0.0.1 signed by it, with the server's key, all PEM.
func makeCerts(t *testing.T) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "isobroker test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
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
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}
