package rabbit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
	"github.com/isobroker/broker/internal/tlsfail"
)

// wireErr is a classified error of the server or the network. Its text is
// ours (what failed, the server's reason, never a secret); it unwraps to
// the broker sentinel and to the client's own error — an *amqp.Error, a
// net.Error, a TLS verification error — so that errors.As reaches it.
type wireErr struct {
	msg             string
	sentinel, cause error
}

func (e *wireErr) Error() string   { return e.msg }
func (e *wireErr) Unwrap() []error { return []error{e.sentinel, e.cause} }

// wire builds a *wireErr for cause: the text is format with args, then
// the sentinel's.
func wire(cause, sentinel error, format string, args ...any) error {
	return &wireErr{msg: fmt.Sprintf(format, args...) + ": " + sentinel.Error(), sentinel: sentinel, cause: cause}
}

// wireError maps an error from amqp091-go or the network onto the broker
// sentinels and the retryable/fatal classification. what says what failed
// ("dial amqp://u:***@h:5672/"); the result never contains secrets because
// neither the server's reply text nor net errors carry the password.
func wireError(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	var ae *amqp.Error
	if errors.As(err, &ae) {
		reason := ae.Reason
		switch {
		case ae == amqp.ErrCredentials || ae == amqp.ErrSASL ||
			(ae.Code == amqp.AccessRefused && strings.Contains(strings.ToLower(reason), "login")):
			return driver.MarkFatal(wire(err, broker.ErrUnauthorized, "%s: credentials refused (%d %s)", what, ae.Code, reason))
		case ae == amqp.ErrVhost:
			return driver.MarkFatal(wire(err, broker.ErrUnauthorized, "%s: vhost refused (%s)", what, reason))
		case ae.Code == amqp.AccessRefused:
			return driver.MarkFatal(wire(err, broker.ErrUnauthorized, "%s: access refused (%s)", what, reason))
		case ae.Code == amqp.NotAllowed && strings.Contains(reason, "vhost") && strings.Contains(reason, "not found"):
			return driver.MarkFatal(wire(err, broker.ErrNotFound, "%s: %s", what, reason))
		case ae.Code == amqp.NotAllowed && strings.Contains(reason, "refused"):
			return driver.MarkFatal(wire(err, broker.ErrUnauthorized, "%s: %s", what, reason))
		case ae.Code == amqp.NotFound:
			return driver.MarkFatal(wire(err, broker.ErrNotFound, "%s: %s", what, reason))
		case ae.Code == amqp.ContentTooLarge ||
			(ae.Code == amqp.PreconditionFailed && strings.Contains(reason, "max size")):
			return driver.MarkFatal(wire(err, broker.ErrMessageTooLarge, "%s: %s", what, reason))
		case ae.Code == amqp.PreconditionFailed:
			return driver.MarkFatal(wire(err, broker.ErrInvalidOption, "%s: %s", what, reason))
		case ae.Code == amqp.ResourceLocked:
			return driver.MarkFatal(wire(err, broker.ErrUnavailable, "%s: %s (a queue used exclusively by another connection)", what, reason))
		}
		return driver.MarkRetryable(wire(err, broker.ErrUnavailable, "%s: %s (%d)", what, reason, ae.Code))
	}
	if reason := tlsfail.Reason(err); reason != "" {
		// Retrying cannot help until the TLS configuration changes.
		return driver.MarkFatal(wire(err, broker.ErrUnavailable, "%s: %s: %v", what, reason, err))
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, net.ErrClosed) {
		return driver.MarkRetryable(wire(err, broker.ErrUnavailable, "%s: %v", what, err))
	}
	return driver.MarkRetryable(wire(err, broker.ErrUnavailable, "%s: %v", what, err))
}

// isFatal reports whether a (re)connect failure needs outside action.
func isFatal(err error) bool {
	return errors.Is(err, broker.ErrUnauthorized) || errors.Is(err, broker.ErrNotFound) ||
		errors.Is(err, broker.ErrInvalidOption)
}

// serverSent reports whether err is a reply of the server (as opposed to
// a local failure such as a timeout that amqp091 also reports as *Error).
func serverSent(err error) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && ae.Server
}

// errorText renders a connection or channel close reason for logs.
func errorText(e *amqp.Error) string {
	if e == nil {
		return "closed normally"
	}
	return fmt.Sprintf("%d %s (server=%v recover=%v)", e.Code, e.Reason, e.Server, e.Recover)
}
