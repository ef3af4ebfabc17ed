package eventhubs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/Azure/go-amqp"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
	"github.com/isobroker/broker/internal/tlsfail"
)

// Event Hubs error conditions beyond the AMQP ones go-amqp names.
const (
	condServerBusy          = "com.microsoft:server-busy"
	condTimeout             = "com.microsoft:timeout"
	condOperationCancelled  = "com.microsoft:operation-cancelled"
	condEntityDisabled      = "com.microsoft:entity-disabled"
	condArgumentOutOfRange  = "com.microsoft:argument-out-of-range"
	condArgumentError       = "com.microsoft:argument-error"
	condConnectionForced    = string(amqp.ErrCondConnectionForced)
	condDetachForced        = string(amqp.ErrCondDetachForced)
	condStolen              = string(amqp.ErrCondStolen)
	condUnauthorized        = string(amqp.ErrCondUnauthorizedAccess)
	condNotFound            = string(amqp.ErrCondNotFound)
	condMessageSizeExceeded = string(amqp.ErrCondMessageSizeExceeded)
)

// Error is a failure reported by the service or the connection to it. It
// unwraps to the matching broker sentinel (broker.ErrUnauthorized,
// ErrNotFound, ErrMessageTooLarge, ErrBusy, ErrUnavailable,
// ErrOwnershipLost…) and to the underlying go-amqp error, and it is
// classified for broker.IsRetryable. It never holds a key or token.
type Error struct {
	// Op is what failed: "connect", "put-token", "attach", "send",
	// "receive", "management".
	Op string
	// Entity is the address or hub involved, if any.
	Entity string
	// Condition is the AMQP error condition ("amqp:unauthorized-access"),
	// or "" for a network failure.
	Condition string
	// Description is the service's description of the condition.
	Description string

	sentinel error
	cause    error
	act      action
}

// Error describes the failure.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("eventhubs: ")
	b.WriteString(e.Op)
	if e.Entity != "" {
		fmt.Fprintf(&b, " %q", e.Entity)
	}
	b.WriteString(": ")
	if e.Condition != "" {
		b.WriteString(e.Condition)
		if e.Description != "" {
			b.WriteString(" (" + e.Description + ")")
		}
	} else {
		if e.Description != "" {
			b.WriteString(e.Description)
			if e.cause != nil {
				b.WriteString(": ")
			}
		}
		if e.cause != nil {
			b.WriteString(e.cause.Error())
		}
	}
	if e.sentinel != nil {
		b.WriteString(": " + e.sentinel.Error())
	}
	return b.String()
}

// Unwrap returns the broker sentinel and the underlying error.
func (e *Error) Unwrap() []error {
	var out []error
	if e.sentinel != nil {
		out = append(out, e.sentinel)
	}
	if e.cause != nil {
		out = append(out, e.cause)
	}
	return out
}

// action is what recovery does about an error.
type action int

const (
	actFatal     action = iota // surface it
	actRetry                   // back off, retry on the same connection
	actRelink                  // drop the link, attach a new one at once
	actReconnect               // drop the connection, rebuild it
	actStolen                  // ownership lost: end that receiver cleanly
	actContext                 // the caller's ctx ended
)

func (a action) String() string {
	switch a {
	case actFatal:
		return "fatal"
	case actRetry:
		return "retry"
	case actRelink:
		return "relink"
	case actReconnect:
		return "reconnect"
	case actStolen:
		return "ownership-lost"
	case actContext:
		return "context"
	}
	return "unknown"
}

// remote extracts the peer's AMQP error and the level it came at.
func remote(err error) (ae *amqp.Error, level string) {
	var ce *amqp.ConnError
	if errors.As(err, &ce) {
		return ce.RemoteErr, "connection"
	}
	var se *amqp.SessionError
	if errors.As(err, &se) {
		return se.RemoteErr, "session"
	}
	var le *amqp.LinkError
	if errors.As(err, &le) {
		return le.RemoteErr, "link"
	}
	if errors.As(err, &ae) {
		return ae, "delivery"
	}
	return nil, ""
}

// classify decides what recovery does about err and which sentinel it maps
// to.
func classify(err error) (action, error) {
	if err == nil {
		return actFatal, nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return actContext, nil
	}
	var e *Error
	if errors.As(err, &e) && e.sentinel != nil {
		return e.act, e.sentinel
	}
	var c interface{ Retryable() bool }
	if errors.As(err, &c) { // classified already (driver.MarkFatal / MarkRetryable)
		if c.Retryable() {
			return actRetry, nil
		}
		return actFatal, nil
	}
	if tlsfail.Reason(err) != "" {
		return actFatal, broker.ErrUnavailable
	}
	ae, level := remote(err)
	if ae != nil {
		switch {
		case level == "connection":
			// Whatever the peer closed the connection for, a new one is
			// the remedy; the condition is kept for the logs.
			return actReconnect, broker.ErrUnavailable
		case level == "session" || isProtocolCondition(string(ae.Condition)):
			// The peer found the session or link out of step with it: a
			// new session and link fix that.
			return actRelink, broker.ErrUnavailable
		}
	}
	if ae == nil {
		switch level {
		case "connection":
			return actReconnect, broker.ErrUnavailable
		case "session", "link":
			// Closed locally or with the session; a new session and link
			// on a live connection fix it, a dead connection is rebuilt
			// by the connection manager on the next use.
			return actRelink, broker.ErrUnavailable
		}
		var ne net.Error
		if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
			return actReconnect, broker.ErrUnavailable
		}
		return actReconnect, broker.ErrUnavailable
	}
	return actionOf(string(ae.Condition), level), sentinelOf(string(ae.Condition))
}

// isProtocolCondition reports whether cond is the peer saying that a frame
// broke the protocol's rules (a delivery changed mid-transfer, a handle or
// channel it does not know, a window exceeded): state left behind by an
// interrupted operation, which a new link or session clears. It is never
// the caller's input.
func isProtocolCondition(cond string) bool {
	switch cond {
	case string(amqp.ErrCondNotAllowed), "amqp:connection:framing-error", "amqp:illegal-state",
		"amqp:session:window-violation", "amqp:session:errant-link",
		"amqp:session:handle-in-use", "amqp:session:unattached-handle":
		return true
	}
	return false
}

// actionOf is the recovery action for a condition received at level.
func actionOf(cond, level string) action {
	switch cond {
	case condStolen:
		return actStolen
	case condServerBusy, condTimeout, condOperationCancelled:
		return actRetry
	case condDetachForced, string(amqp.ErrCondTransferLimitExceeded):
		if level == "connection" {
			return actReconnect
		}
		return actRelink
	case condConnectionForced, string(amqp.ErrCondInternalError):
		return actReconnect
	case string(amqp.ErrCondResourceLimitExceeded), condMessageSizeExceeded, condUnauthorized,
		condNotFound, condEntityDisabled, condArgumentOutOfRange,
		condArgumentError, string(amqp.ErrCondInvalidField), string(amqp.ErrCondNotImplemented),
		string(amqp.ErrCondDecodeError):
		return actFatal
	}
	if level == "session" {
		return actRelink
	}
	return actReconnect
}

// sentinelOf maps a condition to a broker sentinel.
func sentinelOf(cond string) error {
	switch cond {
	case condUnauthorized:
		return broker.ErrUnauthorized
	case condNotFound, condEntityDisabled:
		return broker.ErrNotFound
	case condMessageSizeExceeded:
		return broker.ErrMessageTooLarge
	case condStolen:
		return broker.ErrOwnershipLost
	case condServerBusy, condTimeout, condOperationCancelled:
		return broker.ErrBusy
	case string(amqp.ErrCondResourceLimitExceeded):
		return broker.ErrBusy // too many receivers: fatal, but a quota, not bad input
	case condArgumentOutOfRange, condArgumentError, string(amqp.ErrCondInvalidField), string(amqp.ErrCondNotImplemented), string(amqp.ErrCondDecodeError):
		return broker.ErrInvalidOption
	}
	return broker.ErrUnavailable
}

// wrapErr turns err into a classified *Error for op on entity. ctx errors
// are returned wrapped as they are, so that errors.Is(err,
// context.DeadlineExceeded) holds.
func wrapErr(op, entity string, err error) error {
	if err == nil {
		return nil
	}
	var already interface{ Retryable() bool }
	if errors.As(err, &already) {
		return err // an *Error, or classified by driver.MarkFatal / MarkRetryable
	}
	act, sentinel := classify(err)
	if act == actContext {
		return fmt.Errorf("eventhubs: %s %q: %w", op, entity, err)
	}
	e := &Error{Op: op, Entity: entity, sentinel: sentinel, cause: err, act: act}
	if reason := tlsfail.Reason(err); reason != "" {
		e.Description = reason
	}
	if ae, _ := remote(err); ae != nil {
		e.Condition, e.Description = string(ae.Condition), ae.Description
	}
	if act == actFatal || act == actStolen {
		return driver.MarkFatal(e)
	}
	return driver.MarkRetryable(e)
}

// statusError builds the error of a failed $cbs or $management request.
func statusError(op, entity string, status int32, desc string) error {
	e := &Error{Op: op, Entity: entity, Condition: fmt.Sprintf("status %d", status), Description: desc, act: actFatal}
	switch {
	case status == 401 || status == 403:
		e.sentinel = broker.ErrUnauthorized
	case status == 404:
		e.sentinel = broker.ErrNotFound
	case status == 408 || status == 503 || status == 500:
		e.sentinel, e.act = broker.ErrBusy, actRetry
		return driver.MarkRetryable(e)
	default:
		e.sentinel = broker.ErrInvalidOption
	}
	return driver.MarkFatal(e)
}

// onLinkError classifies err, received on a link that was attached and
// authorized (a send, a disposition, a receive). The service detaches such
// a link with amqp:unauthorized-access when the token that covered it
// expired — a renewal that came late on a busy machine or a paused
// process — or was revoked; that is recoverable: a new attach puts a fresh
// token first, and a refused put-token or attach is fatal there. Every
// other error is classified as wrapErr does.
func onLinkError(op, entity string, err error) error {
	var le *amqp.LinkError
	if errors.As(err, &le) && le.RemoteErr != nil && string(le.RemoteErr.Condition) == condUnauthorized {
		return driver.MarkRetryable(&Error{Op: op, Entity: entity, Condition: condUnauthorized,
			Description: le.RemoteErr.Description + " (the link's token lapsed; re-authorizing)",
			sentinel:    broker.ErrUnavailable, cause: err, act: actRelink})
	}
	return wrapErr(op, entity, err)
}
