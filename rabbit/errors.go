package rabbit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/internal/tlsfail"
)

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
			return broker.MarkFatal(fmt.Errorf("%s: credentials refused (%d %s): %w", what, ae.Code, reason, broker.ErrUnauthorized))
		case ae == amqp.ErrVhost:
			return broker.MarkFatal(fmt.Errorf("%s: vhost refused (%s): %w", what, reason, broker.ErrUnauthorized))
		case ae.Code == amqp.AccessRefused:
			return broker.MarkFatal(fmt.Errorf("%s: access refused (%s): %w", what, reason, broker.ErrUnauthorized))
		case ae.Code == amqp.NotAllowed && strings.Contains(reason, "vhost") && strings.Contains(reason, "not found"):
			return broker.MarkFatal(fmt.Errorf("%s: %s: %w", what, reason, broker.ErrNotFound))
		case ae.Code == amqp.NotAllowed && strings.Contains(reason, "refused"):
			return broker.MarkFatal(fmt.Errorf("%s: %s: %w", what, reason, broker.ErrUnauthorized))
		case ae.Code == amqp.NotFound:
			return broker.MarkFatal(fmt.Errorf("%s: %s: %w", what, reason, broker.ErrNotFound))
		case ae.Code == amqp.ContentTooLarge ||
			(ae.Code == amqp.PreconditionFailed && strings.Contains(reason, "max size")):
			return broker.MarkFatal(fmt.Errorf("%s: %s: %w", what, reason, broker.ErrMessageTooLarge))
		case ae.Code == amqp.PreconditionFailed:
			return broker.MarkFatal(fmt.Errorf("%s: %s: %w", what, reason, broker.ErrInvalidOption))
		case ae.Code == amqp.ResourceLocked:
			return broker.MarkFatal(fmt.Errorf("%s: %s (a queue used exclusively by another connection): %w", what, reason, broker.ErrUnavailable))
		}
		return broker.MarkRetryable(fmt.Errorf("%s: %s (%d): %w", what, reason, ae.Code, broker.ErrUnavailable))
	}
	if reason := tlsfail.Reason(err); reason != "" {
		// Retrying cannot help until the TLS configuration changes.
		return broker.MarkFatal(fmt.Errorf("%s: %s: %v: %w", what, reason, err, broker.ErrUnavailable))
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, net.ErrClosed) {
		return broker.MarkRetryable(fmt.Errorf("%s: %v: %w", what, err, broker.ErrUnavailable))
	}
	return broker.MarkRetryable(fmt.Errorf("%s: %v: %w", what, err, broker.ErrUnavailable))
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
