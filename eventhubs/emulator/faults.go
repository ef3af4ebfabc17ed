package emulator

import (
	"strings"
	"sync"
	"time"
)

// AMQP and Event Hubs error conditions the emulator sends.
const (
	CondConnectionForced      = "amqp:connection:forced"
	CondFramingError          = "amqp:connection:framing-error"
	CondDecodeError           = "amqp:decode-error"
	CondInternalError         = "amqp:internal-error"
	CondNotFound              = "amqp:not-found"
	CondNotAllowed            = "amqp:not-allowed"
	CondNotImplemented        = "amqp:not-implemented"
	CondInvalidField          = "amqp:invalid-field"
	CondUnauthorizedAccess    = "amqp:unauthorized-access"
	CondResourceLimitExceeded = "amqp:resource-limit-exceeded"
	CondLinkStolen            = "amqp:link:stolen"
	CondLinkDetachForced      = "amqp:link:detach-forced"
	CondMessageSizeExceeded   = "amqp:link:message-size-exceeded"
	CondWindowViolation       = "amqp:session:window-violation"
	CondUnattachedHandle      = "amqp:session:unattached-handle"
	CondHandleInUse           = "amqp:session:handle-in-use"
	CondServerBusy            = "com.microsoft:server-busy"
	CondTimeout               = "com.microsoft:timeout"
	CondArgumentOutOfRange    = "com.microsoft:argument-out-of-range"
	CondArgumentError         = "com.microsoft:argument-error"
)

// Faults injects failures into a running emulator on demand. All methods
// are safe for concurrent use and never block on network I/O.
type Faults struct {
	e *Emulator

	mu         sync.Mutex
	refusals   []refusal
	dispoDelay time.Duration
	transfers  int64           // event transfers received so far
	failing    []transferFault // sorted by at
}

type transferFault struct {
	at         int64 // the transfer count it applies to
	cond, desc string
}

type refusal struct {
	cond, desc string
}

// CloseConnections closes every open connection with
// amqp:connection:forced and description (a service-like text when empty).
// It returns the number of connections told to close.
func (f *Faults) CloseConnections(description string) int {
	return f.CloseConnectionsWith(CondConnectionForced, description)
}

// CloseConnectionsWith closes every open connection with the given error
// condition and description.
func (f *Faults) CloseConnectionsWith(condition, description string) int {
	conns := f.e.connections()
	for _, c := range conns {
		c.post(func(c *conn) {
			desc := description
			if desc == "" {
				desc = c.trackedDescription("The connection was closed by the service (fault injection).")
			}
			c.closeWith(condition, desc)
		})
	}
	return len(conns)
}

// DetachLinks detaches, on every connection, the event links whose address
// (a sender's target or a receiver's source) equals address or starts with
// address + "/", case-insensitively, with the given condition and
// description. Receivers detached this way leave their partition's
// receiver set. It returns the number of connections asked to look.
func (f *Faults) DetachLinks(address, condition, description string) int {
	conns := f.e.connections()
	prefix := strings.ToLower(strings.Trim(address, "/"))
	for _, c := range conns {
		c.post(func(c *conn) {
			c.detachMatching(func(l *link) bool {
				a := strings.ToLower(l.address)
				return l.kind.isEntity() && (a == prefix || strings.HasPrefix(a, prefix+"/"))
			}, condition, description)
		})
	}
	return len(conns)
}

// ExpireTokens ends, on every open connection, every token put so far, as
// if each had reached its expiry: the event links they covered are
// detached with amqp:unauthorized-access at once, as the service does
// when a client renews too late. Tokens put afterwards are unaffected. It
// returns the number of connections told.
func (f *Faults) ExpireTokens() int {
	conns := f.e.connections()
	for _, c := range conns {
		c.post(func(c *conn) {
			c.claims = nil
			c.detachUnauthorized()
		})
	}
	return len(conns)
}

// RefuseNextAttach makes the next attach of an event sender or receiver
// (not $cbs or $management links) fail: the emulator answers with null
// terminus and a detach carrying condition (com.microsoft:server-busy when
// empty). Calls queue up: n calls refuse the next n attaches.
func (f *Faults) RefuseNextAttach(condition, description string) {
	if condition == "" {
		condition = CondServerBusy
	}
	if description == "" {
		description = "The server is busy. Please try again later (fault injection)."
	}
	f.mu.Lock()
	f.refusals = append(f.refusals, refusal{condition, description})
	f.mu.Unlock()
}

// DelayDispositions delays every disposition the emulator sends for
// received events and requests by d (0 restores prompt dispositions).
func (f *Faults) DelayDispositions(d time.Duration) {
	f.mu.Lock()
	f.dispoDelay = d
	f.mu.Unlock()
}

// FailTransfer makes the nth event transfer from now (1 is the next one;
// counted over every connection, requests to $cbs and $management not
// included) fail without storing any of its events: it is settled as
// rejected with condition and description, or, when condition is empty,
// settled with no delivery state at all — an outcome the sender cannot
// tell from success unless it asks for one. Calls add up: each names one
// transfer.
func (f *Faults) FailTransfer(n int, condition, description string) {
	if n < 1 {
		n = 1
	}
	if condition != "" && description == "" {
		description = "The transfer failed (fault injection)."
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	tf := transferFault{at: f.transfers + int64(n), cond: condition, desc: description}
	i := len(f.failing)
	for i > 0 && f.failing[i-1].at > tf.at {
		i--
	}
	f.failing = append(f.failing, transferFault{})
	copy(f.failing[i+1:], f.failing[i:])
	f.failing[i] = tf
}

// countTransfer counts one complete event transfer and returns the fault
// that applies to it, if any.
func (f *Faults) countTransfer() (transferFault, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.transfers++
	if len(f.failing) == 0 || f.failing[0].at != f.transfers {
		return transferFault{}, false
	}
	tf := f.failing[0]
	f.failing = f.failing[1:]
	return tf, true
}

func (f *Faults) takeRefusal() (refusal, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.refusals) == 0 {
		return refusal{}, false
	}
	r := f.refusals[0]
	f.refusals = f.refusals[1:]
	return r, true
}

func (f *Faults) dispositionDelay() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dispoDelay
}
