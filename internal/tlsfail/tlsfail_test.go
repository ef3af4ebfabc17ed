package tlsfail_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/isobroker/broker/internal/tlsfail"
)

func TestReason(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("dial: %w", x509.UnknownAuthorityError{}), "server certificate not trusted"},
		{&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, "server certificate not trusted"},
		{&tls.CertificateVerificationError{Err: x509.HostnameError{Host: "h", Certificate: &x509.Certificate{}}}, "server certificate is not valid for this host name"},
		{x509.CertificateInvalidError{Reason: x509.Expired}, "server certificate is invalid (expired, not yet valid, or not for server use)"},
		{tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, "the endpoint does not speak TLS"},
		{io.EOF, ""},
		{errors.New("connection refused"), ""},
		{nil, ""},
	}
	for _, c := range cases {
		if got := tlsfail.Reason(c.err); got != c.want {
			t.Errorf("Reason(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}
