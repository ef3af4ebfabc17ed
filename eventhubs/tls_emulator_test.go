package eventhubs_test

import (
	"crypto/tls"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
)

// TestTLSEndToEnd: against an emulator serving amqps with a certificate
// from a CA made for the test, the adapter (Config.TLSConfig trusting only
// that CA) reads hub properties, publishes and receives; every handshake
// carried the namespace's host as SNI, and the open frames and token
// audiences named the namespace with amqps://.
func TestTLSEndToEnd(t *testing.T) {
	var hs handshakes
	elog := &emulatorLog{}
	e, ca := tlsEmulator(t, emulator.Config{Logger: elog.logger()}, &hs, "localhost")
	ns := "localhost:" + portOf(t, e.Addr())
	hub := newHub(t, e, 2)
	roundTrip(t, hub, 2, func(t *testing.T, logs *logBuffer) *eventhubs.Broker {
		return openCS(t, connString(e, ns, "", false), logs, eventhubs.WithTLSConfig(ca.clientTLS()))
	})
	hs.checkAll(t, 2, "localhost")
	elog.checkNamespaceSeen(t, ns, "amqps://"+ns+"/")
}

// TestTLSVerificationFailsFatally: the emulator's certificate is checked.
// One the client does not trust, or one that does not name the host
// dialed, fails Open at once — not retryable, the reason named, after a
// single handshake (no retry loop) and with no AMQP connection opened.
func TestTLSVerificationFailsFatally(t *testing.T) {
	var hs handshakes
	elog := &emulatorLog{}
	e, ca := tlsEmulator(t, emulator.Config{Logger: elog.logger()}, &hs, "localhost")
	port := portOf(t, e.Addr())
	stranger := newCA(t)
	cases := []struct {
		name, namespace string
		tc              *tls.Config
		want            string
	}{
		{"untrusted", "localhost:" + port, stranger.clientTLS(), "server certificate not trusted"},
		{"system-roots", "localhost:" + port, nil, "server certificate not trusted"},
		{"wrong-host", "127.0.0.1:" + port, ca.clientTLS(), "not valid for this host name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(hs.seen())
			opens := len(elog.values("connection open", "hostname"))
			_, err := eventhubs.Open(ctxT(t, 20*time.Second), eventhubs.Config{
				Namespace: c.namespace, KeyName: e.KeyName(), Key: e.Key(), TLSConfig: c.tc,
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
			if strings.Contains(err.Error(), e.Key()) {
				t.Errorf("error shows the key")
			}
			if n := len(hs.seen()) - before; n != 1 {
				t.Errorf("emulator saw %d TLS handshakes, want 1 (no retry)", n)
			}
			if n := len(elog.values("connection open", "hostname")) - opens; n != 0 {
				t.Errorf("emulator opened %d AMQP connections", n)
			}
		})
	}
}

// TestTLSIdleClose: the idle-close recovery of TestIdleClose over TLS:
// every rebuilt connection is a new TLS handshake with the namespace's
// host as SNI (at least the two first connections and one reconnect of
// each broker).
func TestTLSIdleClose(t *testing.T) {
	var hs handshakes
	e, ca := tlsEmulator(t, idleEmulator, &hs, "localhost")
	ns := "localhost:" + portOf(t, e.Addr())
	hub := newHub(t, e, 2)
	idleCloseRecovery(t, e, hub, func(t *testing.T, logs *logBuffer) *eventhubs.Broker {
		return openCS(t, connString(e, ns, "", false), logs, eventhubs.WithTLSConfig(ca.clientTLS()))
	})
	hs.checkAll(t, 4, "localhost")
}
