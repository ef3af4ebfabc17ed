package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
)

// writeCert writes a CA-signed certificate for 127.0.0.1 and its key as
// PEM files and returns their paths and a pool trusting the CA.
func writeCert(t *testing.T) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cmd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(ca)
	return certFile, keyFile, roots
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunTLSAndWebSockets: with -tls-cert/-tls-key and -websocket-addr,
// the printed connection string (no UseDevelopmentEmulator) works as is
// for the adapter over amqps, and the logged WebSocket address works over
// wss; a certificate without its key, or an unreadable file, is refused.
func TestRunTLSAndWebSockets(t *testing.T) {
	certFile, keyFile, roots := writeCert(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	stderr := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-hubs", "orders:2", "-tls-cert", certFile, "-tls-key", keyFile,
			"-websocket-addr", "127.0.0.1:0"}, pw, stderr)
		_ = pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	var lines []string
	for len(lines) < 2 && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if len(lines) != 2 {
		t.Fatalf("output %q", lines)
	}
	cs := lines[1]
	if strings.Contains(cs, "UseDevelopmentEmulator") || !strings.HasSuffix(cs, ";EntityPath=orders") {
		t.Fatalf("connection string of a TLS emulator: %q", cs)
	}
	m := regexp.MustCompile(`msg="emulator listening for WebSockets" .*addr=(\S+) tls=true`).FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("no WebSocket listener logged:\n%s", stderr)
	}
	wsCS := regexp.MustCompile(`sb://[^/;]+`).ReplaceAllString(cs, "sb://"+m[1])
	for name, c := range map[string]struct {
		cs   string
		opts []eventhubs.Option
	}{
		"amqps": {cs, nil},
		"wss":   {wsCS, []eventhubs.Option{eventhubs.WithWebSockets()}},
	} {
		t.Run(name, func(t *testing.T) {
			opts := append([]eventhubs.Option{eventhubs.WithTLSConfig(&tls.Config{RootCAs: roots}), eventhubs.WithLogger(slog.New(slog.DiscardHandler))}, c.opts...)
			octx, ocancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer ocancel()
			b, err := eventhubs.OpenURL(octx, c.cs, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close(context.Background())
			if err := b.Publish(octx, "orders", &broker.Message{ID: name}); err != nil {
				t.Fatal(err)
			}
		})
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return")
	}

	for _, args := range [][]string{
		{"-tls-cert", certFile},
		{"-tls-key", keyFile},
		{"-tls-cert", filepath.Join(t.TempDir(), "missing.pem"), "-tls-key", keyFile},
	} {
		if err := run(context.Background(), append([]string{"-addr", "127.0.0.1:0"}, args...), io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "tls") {
			t.Errorf("%q: err = %v, want a tls error", args, err)
		}
	}
}
