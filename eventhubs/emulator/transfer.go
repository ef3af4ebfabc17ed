package emulator

// Deliveries in both directions. Incoming: transfers assembled into
// messages under the session window and link credit, handed over by link
// kind (events, CBS and management requests) and settled with a
// disposition (after any injected fault or delay). Outgoing: the pump sends
// queued RPC replies and partition events, split at the peer's
// max-frame-size and settled unless the client asked otherwise, as far as
// link credit, the peer's window and the write queue allow.

import (
	"fmt"
	"time"

	"github.com/isobroker/broker/internal/amqp10"
)

// incoming is a delivery being assembled from transfer frames.
type incoming struct {
	deliveryID uint32
	settled    bool
	format     uint32
	buf        []byte
	oversize   bool
}

// onTransfer takes one transfer frame: it counts against the session
// window and, as a delivery's first frame, against the link's credit; the
// last frame of a delivery hands it over and settles it.
func (c *conn) onTransfer(s *session, t *amqp10.Transfer, payload []byte) {
	if s.incomingWindow == 0 {
		c.endSession(s, CondWindowViolation, "transfer beyond the session's incoming window")
		return
	}
	s.nextIncomingID++
	s.incomingWindow--
	if s.incomingWindow <= sessionWindow/2 {
		s.incomingWindow = sessionWindow
		c.send(s.ch, c.sessionFlow(s), nil)
	}
	l := s.links[t.Handle]
	if l == nil {
		c.endSession(s, CondUnattachedHandle, fmt.Sprintf("transfer on unattached handle %d", t.Handle))
		return
	}
	if l.detached {
		return
	}
	if l.kind.weSend() {
		c.detachLink(l, CondNotAllowed, "transfer on a link where the server is the sender")
		return
	}
	l.lastActive = time.Now()
	inc := l.inc
	if inc == nil {
		if t.DeliveryID == nil {
			c.detachLink(l, CondNotAllowed, "first transfer of a delivery without delivery-id")
			return
		}
		if l.credit == 0 {
			c.detachLink(l, "amqp:link:transfer-limit-exceeded", "transfer without link credit")
			return
		}
		l.credit--
		l.deliveryCount++
		inc = &incoming{deliveryID: *t.DeliveryID}
		if t.MessageFormat != nil {
			inc.format = *t.MessageFormat
		}
		l.inc = inc
	} else if t.DeliveryID != nil && *t.DeliveryID != inc.deliveryID {
		c.detachLink(l, CondNotAllowed, "delivery-id changed inside a multi-frame delivery")
		return
	}
	if t.Settled != nil && *t.Settled {
		inc.settled = true
	}
	if t.Aborted {
		l.inc = nil
		return
	}
	if !inc.oversize {
		if uint64(len(inc.buf))+uint64(len(payload)) > c.e.cfg.MaxMessageSize {
			inc.oversize, inc.buf = true, nil
		} else {
			inc.buf = append(inc.buf, payload...)
		}
	}
	if t.More {
		return
	}
	l.inc = nil
	var outcome amqp10.DeliveryState = &amqp10.Accepted{}
	if inc.oversize {
		outcome = &amqp10.Rejected{Error: newError(CondMessageSizeExceeded, fmt.Sprintf(
			"The received message (delivery-id:%d, size exceeds %d bytes) exceeds the limit (%d bytes) currently allowed on the link. %s",
			inc.deliveryID, c.e.cfg.MaxMessageSize, c.e.cfg.MaxMessageSize, c.tracking()))}
	} else if tf, ok := c.transferFault(l); ok {
		outcome = nil // settled with no state
		if tf.cond != "" {
			outcome = &amqp10.Rejected{Error: newError(tf.cond, c.trackedDescription(tf.desc))}
		}
	} else if err := c.deliver(l, inc); err != nil {
		outcome = &amqp10.Rejected{Error: err}
	}
	if !inc.settled {
		c.dispose(s, inc.deliveryID, outcome)
	}
	if l.credit < linkCredit/2 && !l.detached {
		l.credit = linkCredit
		c.sendLinkFlow(l, false)
	}
}

// deliver processes a complete incoming message by link kind.
func (c *conn) deliver(l *link, inc *incoming) *amqp10.Error {
	switch l.kind {
	case kindEventSender:
		return c.ingest(l, inc.format, inc.buf)
	case kindCBSRequest, kindMgmtRequest:
		msg, err := amqp10.UnmarshalMessage(inc.buf)
		if err != nil {
			return newError(CondDecodeError, err.Error())
		}
		if l.kind == kindCBSRequest {
			c.handleCBS(msg)
		} else {
			c.handleManagement(msg)
		}
	}
	return nil
}

// transferFault reports the injected fault for a complete transfer on l,
// if it is an event transfer that Faults.FailTransfer chose.
func (c *conn) transferFault(l *link) (transferFault, bool) {
	if l.kind != kindEventSender {
		return transferFault{}, false
	}
	return c.e.faults.countTransfer()
}

// dispose settles an incoming delivery with state (nil: settled with no
// state), after the injected delay if any.
func (c *conn) dispose(s *session, id uint32, state amqp10.DeliveryState) {
	d := &amqp10.Disposition{Role: amqp10.RoleReceiver, First: id, Settled: true, State: state}
	delay := c.e.faults.dispositionDelay()
	if delay <= 0 {
		c.send(s.ch, d, nil)
		return
	}
	var t *time.Timer
	t = time.AfterFunc(delay, func() {
		c.post(func(c *conn) {
			delete(c.timers, t)
			if !c.closing && c.sessions[s.ch] == s && !s.ending {
				c.send(s.ch, d, nil)
			}
		})
	})
	c.timers[t] = struct{}{}
}

// pumpAll sends whatever pending deliveries credit and windows allow.
func (c *conn) pumpAll() {
	if c.closing || c.finished {
		return
	}
	for _, s := range c.sessions {
		if s.ending {
			continue
		}
		for _, l := range s.links {
			if l.kind.weSend() && !l.detached {
				c.pump(l)
			}
		}
	}
}

// framesFor returns how many transfer frames a message of n bytes needs.
func (c *conn) framesFor(n int) uint32 {
	room := int(c.peerMaxFrame) - amqp10.FrameHeaderSize - 64
	return uint32(max(1, (n+room-1)/room))
}

// canSend reports whether l may send a message of n bytes now.
func (c *conn) canSend(l *link, n int) bool {
	return l.sndCredit > 0 && l.s.remoteIncomingWindow >= c.framesFor(n)
}

// pump sends l's pending deliveries as far as its credit, the peer's
// window and the write queue allow.
func (c *conn) pump(l *link) {
	if c.closing || l.detached || l.s.ending {
		return
	}
	switch l.kind {
	case kindCBSReply, kindMgmtReply:
		for len(l.replies) > 0 && c.canSend(l, len(l.replies[0])) {
			c.sendMessage(l, l.replies[0])
			l.replies = l.replies[1:]
		}
	case kindEventReceiver:
		for l.sndCredit > 0 && c.out.pending() < writeHighWater {
			evs := l.subscribe.read(l.cursor, int(min(l.sndCredit, maxEventsPerRun)))
			if len(evs) == 0 {
				return
			}
			var runtimeInfo []byte // taken after the read: never older than its events
			if l.runtimeMetric {
				runtimeInfo = runtimeAnnotations(l.subscribe.info(), time.Now())
			}
			for _, ev := range evs {
				msg := ev.msg
				if runtimeInfo != nil {
					msg = withDeliveryAnnotations(msg, runtimeInfo)
				}
				if !c.canSend(l, len(msg)) || c.out.pending() >= writeHighWater {
					return
				}
				c.sendMessage(l, msg)
				l.cursor = ev.seq + 1
				l.lastActive = time.Now()
			}
		}
	}
}

// sendMessage sends one pre-settled delivery, split at the peer's
// max-frame-size.
func (c *conn) sendMessage(l *link, msg []byte) {
	s := l.s
	id := s.nextDeliveryID
	s.nextDeliveryID++
	tag := []byte{byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}
	first := true
	rest := msg
	for {
		t := &amqp10.Transfer{Handle: l.handle, More: true}
		if first {
			t.DeliveryID, t.DeliveryTag = amqp10.Ptr(id), tag
			// Deliveries are sent settled unless the client insisted on
			// unsettled; its dispositions are then accepted and ignored.
			t.MessageFormat, t.Settled = amqp10.Ptr(uint32(0)), amqp10.Ptr(!l.unsettled)
		}
		perf, err := t.AppendAMQP(nil)
		if err != nil {
			c.log.Error("encoding transfer failed", "err", err)
			c.finished = true
			return
		}
		room := int(c.peerMaxFrame) - amqp10.FrameHeaderSize - len(perf)
		chunk := rest
		if len(chunk) > room {
			chunk = rest[:room]
		} else {
			t.More = false
		}
		rest = rest[len(chunk):]
		c.send(s.ch, t, chunk)
		s.nextOutgoingID++
		s.remoteIncomingWindow--
		first = false
		if !t.More {
			break
		}
	}
	l.sndCount++
	l.sndCredit--
	c.lastActivity = time.Now()
}
