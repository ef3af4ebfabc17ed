package eventhubs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/Azure/go-amqp"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
)

func TestClassify(t *testing.T) {
	link := func(cond string) error { return &amqp.LinkError{RemoteErr: &amqp.Error{Condition: amqp.ErrCond(cond)}} }
	conn := func(cond string) error { return &amqp.ConnError{RemoteErr: &amqp.Error{Condition: amqp.ErrCond(cond)}} }
	cases := []struct {
		err       error
		act       action
		sentinel  error
		retryable bool
	}{
		{conn(condConnectionForced), actReconnect, broker.ErrUnavailable, true},
		{&amqp.ConnError{}, actReconnect, broker.ErrUnavailable, true},
		{link(condDetachForced), actRelink, broker.ErrUnavailable, true},
		{link(string(amqp.ErrCondTransferLimitExceeded)), actRelink, broker.ErrUnavailable, true},
		{link(condServerBusy), actRetry, broker.ErrBusy, true},
		{link(condTimeout), actRetry, broker.ErrBusy, true},
		{link(condStolen), actStolen, broker.ErrOwnershipLost, false},
		{link(condUnauthorized), actFatal, broker.ErrUnauthorized, false},
		{link(condNotFound), actFatal, broker.ErrNotFound, false},
		{link(condMessageSizeExceeded), actFatal, broker.ErrMessageTooLarge, false},
		{link(string(amqp.ErrCondResourceLimitExceeded)), actFatal, broker.ErrBusy, false},
		{link(condEntityDisabled), actFatal, broker.ErrNotFound, false},
		{link(string(amqp.ErrCondInternalError)), actReconnect, broker.ErrUnavailable, true},
		{link("com.example:unknown"), actReconnect, broker.ErrUnavailable, true},
		{&amqp.Error{Condition: amqp.ErrCond(condServerBusy)}, actRetry, broker.ErrBusy, true},
		{fmt.Errorf("read: %w", io.EOF), actReconnect, broker.ErrUnavailable, true},
		{statusError("management", "hub", 404, "no"), actFatal, broker.ErrNotFound, false},
		{statusError("management", "hub", 503, "busy"), actRetry, broker.ErrBusy, true},
		{statusError("put-token", "hub", 401, "no"), actFatal, broker.ErrUnauthorized, false},
		// The peer's protocol complaints are recoverable: a new link, a
		// new session or a new connection fixes them, never the caller.
		{link(string(amqp.ErrCondNotAllowed)), actRelink, broker.ErrUnavailable, true},
		{link("amqp:session:unattached-handle"), actRelink, broker.ErrUnavailable, true},
		{conn(string(amqp.ErrCondNotAllowed)), actReconnect, broker.ErrUnavailable, true},
		{conn("amqp:connection:framing-error"), actReconnect, broker.ErrUnavailable, true},
		{conn(string(amqp.ErrCondDecodeError)), actReconnect, broker.ErrUnavailable, true},
		{&amqp.SessionError{RemoteErr: &amqp.Error{Condition: "amqp:session:window-violation"}}, actRelink, broker.ErrUnavailable, true},
		{&amqp.SessionError{RemoteErr: &amqp.Error{Condition: amqp.ErrCondNotAllowed}}, actRelink, broker.ErrUnavailable, true},
		// A delivery rejected for its content stays the caller's problem.
		{&amqp.Error{Condition: amqp.ErrCondDecodeError}, actFatal, broker.ErrInvalidOption, false},
		// TLS failures that only a configuration change fixes are fatal.
		{fmt.Errorf("dial: %w", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), actFatal, broker.ErrUnavailable, false},
		{fmt.Errorf("dial: %w", x509.HostnameError{Host: "h", Certificate: &x509.Certificate{}}), actFatal, broker.ErrUnavailable, false},
	}
	for _, c := range cases {
		werr := wrapErr("op", "entity", c.err)
		act, _ := classify(werr)
		if act != c.act || !errors.Is(werr, c.sentinel) || broker.IsRetryable(werr) != c.retryable {
			t.Errorf("%v: action %v, Is(%v) %v, retryable %v; want %v, true, %v",
				c.err, act, c.sentinel, errors.Is(werr, c.sentinel), broker.IsRetryable(werr), c.act, c.retryable)
		}
	}
	if act, _ := classify(fmt.Errorf("x: %w", context.DeadlineExceeded)); act != actContext {
		t.Errorf("deadline: %v", act)
	}
	fatal := driver.MarkFatal(fmt.Errorf("too big: %w", broker.ErrMessageTooLarge))
	if act, _ := classify(fatal); act != actFatal || wrapErr("op", "e", fatal) != fatal {
		t.Errorf("an already classified fatal error is reclassified")
	}
}
