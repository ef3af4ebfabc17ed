package eventhubs_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
)

// tlsListener serves TLS handshakes with a self-signed certificate for
// "localhost" and returns its address and certificate.
func tlsListener(t *testing.T) (string, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	return ln.Addr().String(), cert
}

// TestTLSFailuresAreFatalAndNamed: a certificate the client does not
// trust, or one for another host name, cannot be fixed by retrying: Open
// fails at once, not retryable, naming the reason.
func TestTLSFailuresAreFatalAndNamed(t *testing.T) {
	addr, cert := tlsListener(t)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	cases := map[string]struct {
		tls  *tls.Config
		want string
	}{
		"untrusted":  {&tls.Config{ServerName: "localhost"}, "server certificate not trusted"},
		"wrong-host": {&tls.Config{RootCAs: pool, ServerName: "other.example"}, "not valid for this host name"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := eventhubs.Open(ctxT(t, 20*time.Second), eventhubs.Config{
				Namespace: addr, KeyName: "k", Key: "secret", TLSConfig: c.tls,
				Logger: slog.New(slog.DiscardHandler),
			})
			if err == nil {
				t.Fatal("open succeeded")
			}
			if broker.IsRetryable(err) {
				t.Errorf("retryable: %v", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not name %q", err, c.want)
			}
		})
	}
}
