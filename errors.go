package broker

import (
	"context"
	"errors"
)

// Sentinel errors. Adapters wrap them with %w, so test with errors.Is.
var (
	// ErrClosed: the Broker or Subscription was closed. Not retryable on
	// this instance.
	ErrClosed = errors.New("broker: closed")
	// ErrTopicRequired: Publish or Subscribe was given an empty topic.
	ErrTopicRequired = errors.New("broker: topic is required")
	// ErrNilMessage: Publish was given a nil *Message.
	ErrNilMessage = errors.New("broker: nil message")
	// ErrNilHandler: Subscribe was given a nil Handler.
	ErrNilHandler = errors.New("broker: nil handler")
	// ErrMessageTooLarge: a message exceeds the broker's size limit. It is
	// returned before anything of the call is sent.
	ErrMessageTooLarge = errors.New("broker: message too large")
	// ErrInvalidOption: an option, URL or connection string is malformed or
	// not supported by this broker.
	ErrInvalidOption = errors.New("broker: invalid option")
	// ErrUnsupported: the broker cannot do what was asked (see
	// Capabilities).
	ErrUnsupported = errors.New("broker: not supported")
	// ErrUnauthorized: the credentials were refused.
	ErrUnauthorized = errors.New("broker: unauthorized")
	// ErrNotFound: the topic, hub, vhost or partition does not exist.
	ErrNotFound = errors.New("broker: not found")
	// ErrUnroutable: the message reached no queue (RabbitMQ mandatory
	// publish returned it). Retryable once a consumer has bound a queue.
	ErrUnroutable = errors.New("broker: message unroutable")
	// ErrOwnershipLost: another consumer took over the partition (Event
	// Hubs link stolen by a higher or equal owner level).
	ErrOwnershipLost = errors.New("broker: ownership lost")

	// ErrUnavailable: the connection is down or being re-established.
	// Retryable.
	ErrUnavailable = errors.New("broker: unavailable")
	// ErrBlocked: the server blocked publishers (RabbitMQ memory or disk
	// alarm). Retryable once the alarm clears.
	ErrBlocked = errors.New("broker: blocked by server")
	// ErrNacked: the server refused to take responsibility for a message
	// (RabbitMQ basic.nack). Retryable.
	ErrNacked = errors.New("broker: message nacked by server")
	// ErrBusy: the server asked the client to back off (server-busy,
	// throttling). Retryable.
	ErrBusy = errors.New("broker: server busy")
)

// retryableSentinels are the sentinels IsRetryable answers true for.
func isRetryableSentinel(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrBlocked) ||
		errors.Is(err, ErrNacked) || errors.Is(err, ErrBusy) ||
		errors.Is(err, ErrUnroutable) || errors.Is(err, context.DeadlineExceeded)
}

// IsRetryable reports whether the operation that returned err may succeed
// if tried again on the same Broker (perhaps after a delay). Errors that
// carry their own classification (a Retryable() bool method, as
// driver.MarkRetryable and driver.MarkFatal give them) decide for themselves; otherwise the
// sentinels ErrUnavailable, ErrBlocked, ErrNacked, ErrBusy, ErrUnroutable
// and context.DeadlineExceeded are retryable, and everything else —
// ErrClosed, bad input, unauthorized, not found, context.Canceled — is not.
// An error that wraps ErrUnauthorized is never retryable, whatever else it
// wraps or how it was marked: retrying refused credentials cannot help and
// may lock the account.
func IsRetryable(err error) bool {
	if err == nil || errors.Is(err, ErrUnauthorized) {
		return false
	}
	var c interface{ Retryable() bool }
	if errors.As(err, &c) {
		return c.Retryable()
	}
	return isRetryableSentinel(err)
}

// MessageError is the error of one message of a Publish call: the server
// refused it (ErrNacked), returned it (ErrUnroutable), or the message was
// not sent. Index is the message's position in the call's msgs; ID is its
// Message.ID. Publish returns the first such error of the call (wrapped);
// take it with errors.As. Unwrap gives the cause, so errors.Is(err,
// ErrNacked) works through it.
type MessageError struct {
	Index int
	ID    string
	Err   error
}

func (e *MessageError) Error() string { return e.Err.Error() }
func (e *MessageError) Unwrap() error { return e.Err }
