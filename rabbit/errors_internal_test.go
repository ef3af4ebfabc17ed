package rabbit

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/isobroker/broker"
)

// TestWireErrorKeepsTheClientsError: a classified wire error wraps its
// broker sentinel and still lets errors.As reach the client's own error —
// the server's *amqp.Error with its code, a *net.OpError, a TLS
// verification error — while its text says what failed and why.
func TestWireErrorKeepsTheClientsError(t *testing.T) {
	refused := &amqp.Error{Code: amqp.AccessRefused, Reason: "ACCESS_REFUSED - Login was refused", Server: true}
	notFound := &amqp.Error{Code: amqp.NotFound, Reason: "NOT_FOUND - no queue 'q'", Server: true}
	netErr := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	tlsErr := &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}
	cases := []struct {
		cause     error
		sentinel  error
		retryable bool
		text      string
	}{
		{refused, broker.ErrUnauthorized, false, "credentials refused (403 ACCESS_REFUSED - Login was refused)"},
		{notFound, broker.ErrNotFound, false, "NOT_FOUND - no queue 'q'"},
		{netErr, broker.ErrUnavailable, true, "connection refused"},
		{tlsErr, broker.ErrUnavailable, false, "server certificate not trusted"},
	}
	for _, c := range cases {
		err := wireError("rabbit: dial amqp://u:***@h:5672/", c.cause)
		if !errors.Is(err, c.sentinel) || broker.IsRetryable(err) != c.retryable {
			t.Errorf("%v: Is(%v) %v, retryable %v", err, c.sentinel, errors.Is(err, c.sentinel), broker.IsRetryable(err))
		}
		if !strings.Contains(err.Error(), c.text) || !strings.HasPrefix(err.Error(), "rabbit: dial amqp://u:***@h:5672/") {
			t.Errorf("text %q does not say what failed and %q", err, c.text)
		}
		if !errors.Is(err, c.cause) {
			t.Errorf("%v: the client's error is not reachable", err)
		}
	}
	var ae *amqp.Error
	if err := wireError("x", refused); !errors.As(err, &ae) || ae.Code != amqp.AccessRefused {
		t.Errorf("errors.As does not reach *amqp.Error: %v", ae)
	}
	var oe *net.OpError
	if err := wireError("x", netErr); !errors.As(err, &oe) || oe.Op != "dial" {
		t.Errorf("errors.As does not reach *net.OpError")
	}
}
