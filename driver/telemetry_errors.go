package driver

import (
	"context"
	"errors"

	"github.com/isobroker/broker"
)

// ErrorType is the low-cardinality error.type of err: the name of the
// broker sentinel it wraps ("closed", "nacked", "timeout"...), or
// "_OTHER".
func ErrorType(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, broker.ErrClosed):
		return "closed"
	case errors.Is(err, broker.ErrNacked):
		return "nacked"
	case errors.Is(err, broker.ErrUnroutable):
		return "unroutable"
	case errors.Is(err, broker.ErrBlocked):
		return "blocked"
	case errors.Is(err, broker.ErrBusy):
		return "busy"
	case errors.Is(err, broker.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, broker.ErrUnauthorized):
		return "unauthorized"
	case errors.Is(err, broker.ErrNotFound):
		return "not_found"
	case errors.Is(err, broker.ErrMessageTooLarge):
		return "message_too_large"
	case errors.Is(err, broker.ErrInvalidOption):
		return "invalid_option"
	case errors.Is(err, broker.ErrTopicRequired), errors.Is(err, broker.ErrNilMessage):
		return "invalid_message"
	case errors.Is(err, broker.ErrOwnershipLost):
		return "ownership_lost"
	case errors.Is(err, broker.ErrUnsupported):
		return "unsupported"
	}
	return "_OTHER"
}

// handlerErrorType is a handler error's error.type: what ErrorType says,
// "handler_error" for the user's own errors.
func handlerErrorType(err error) string {
	if t := ErrorType(err); t != "_OTHER" {
		return t
	}
	return "handler_error"
}
