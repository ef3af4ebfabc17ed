package emulator

// Sessions: their state, begin (including a begin on a channel whose end
// the peer has not answered yet), end by either side, and the session flow
// that refreshes the peer's view of the windows.

import (
	"fmt"

	"github.com/isobroker/broker/internal/amqp10"
)

// session is one session; owned by the connection loop.
type session struct {
	ch                   uint16
	nextIncomingID       uint32
	incomingWindow       uint32
	nextOutgoingID       uint32
	remoteIncomingWindow uint32
	nextDeliveryID       uint32
	handleMax            uint32
	links                map[uint32]*link
	ending               bool // the server sent end
	// staleEnd: this session replaced one the server had ended, whose
	// answering end is still on its way (see onBegin).
	staleEnd bool
}

// onBegin answers the client's begin.
func (c *conn) onBegin(ch uint16, b *amqp10.Begin) {
	if b.RemoteChannel != nil {
		c.closeWith(CondNotAllowed, "begin answering a session the server never began")
		return
	}
	if ch > channelMax {
		c.closeWith(CondFramingError, fmt.Sprintf("channel %d exceeds channel-max %d", ch, channelMax))
		return
	}
	staleEnd := false
	if old, ok := c.sessions[ch]; ok {
		if !old.ending {
			c.closeWith(CondNotAllowed, fmt.Sprintf("channel %d already has a session", ch))
			return
		}
		// The server ended the session on ch and awaits the peer's end,
		// but the peer began a new one there first. go-amqp frees a
		// channel as soon as it reads the server's end, before its
		// session answers it, so a new session can take the channel
		// ahead of that answer. Take it as the old session's end and
		// drop the answer when it comes.
		c.log.Info("session begun on a channel whose end is not yet answered", "channel", ch)
		delete(c.sessions, ch)
		staleEnd = true
	}
	s := &session{
		staleEnd:             staleEnd,
		ch:                   ch,
		nextIncomingID:       b.NextOutgoingID,
		incomingWindow:       sessionWindow,
		remoteIncomingWindow: b.IncomingWindow,
		handleMax:            min(b.HandleMax, handleMax),
		links:                map[uint32]*link{},
	}
	c.sessions[ch] = s
	rc := ch
	c.send(ch, &amqp10.Begin{RemoteChannel: &rc, NextOutgoingID: 0, IncomingWindow: sessionWindow, OutgoingWindow: sessionWindow, HandleMax: s.handleMax}, nil)
	c.log.Debug("session begun", "channel", ch)
}

// endSession detaches all links of s implicitly and, when cond is set,
// ends it with that error (waiting for the peer's end); otherwise it
// answers the peer's end.
func (c *conn) endSession(s *session, cond, desc string) {
	for _, l := range s.links {
		c.releaseLink(l)
	}
	s.links = map[uint32]*link{}
	if cond != "" {
		c.log.Info("ending session", "channel", s.ch, "condition", cond, "description", desc)
		s.ending = true
	}
	c.send(s.ch, &amqp10.End{Error: newError(cond, desc)}, nil)
}

// sessionFlow is a flow that refreshes the peer's view of the session
// windows.
func (c *conn) sessionFlow(s *session) *amqp10.Flow {
	return &amqp10.Flow{
		NextIncomingID: amqp10.Ptr(s.nextIncomingID),
		IncomingWindow: s.incomingWindow,
		NextOutgoingID: s.nextOutgoingID,
		OutgoingWindow: sessionWindow,
	}
}
