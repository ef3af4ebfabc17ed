// Package tlsfail recognises TLS failures that no retry can fix: the
// server's certificate is not trusted, names another host or is invalid,
// or the endpoint does not speak TLS at all. Adapters classify these as
// fatal, with the reason in the error text.
package tlsfail

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
)

// Reason reports why err is a TLS failure that needs a configuration
// change ("server certificate not trusted", …), or "" when it is not one.
func Reason(err error) string {
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	var cve *tls.CertificateVerificationError
	var rh tls.RecordHeaderError
	switch {
	case errors.As(err, &he):
		return "server certificate is not valid for this host name"
	case errors.As(err, &ci):
		return "server certificate is invalid (expired, not yet valid, or not for server use)"
	case errors.As(err, &ua), errors.As(err, &cve):
		return "server certificate not trusted"
	case errors.As(err, &rh):
		return "the endpoint does not speak TLS"
	}
	return ""
}
