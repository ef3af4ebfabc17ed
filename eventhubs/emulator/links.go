package emulator

// Links: their kinds and state, attach (the Event Hubs checks of an
// attach are eventhubs.go's setupIncoming and setupOutgoing), flow (the
// session window a flow carries, link credit, drain and echo), and detach
// by either side.

import (
	"fmt"
	"time"

	"github.com/isobroker/broker/internal/amqp10"
)

// linkKind classifies a link by what the client does on it.
type linkKind int

const (
	kindRefused       linkKind = iota // refused attach awaiting the client's detach
	kindCBSRequest                    // client sends put-token requests
	kindCBSReply                      // client receives put-token replies
	kindMgmtRequest                   // client sends management requests
	kindMgmtReply                     // client receives management replies
	kindEventSender                   // client sends events
	kindEventReceiver                 // client receives events
)

func (k linkKind) isEntity() bool { return k == kindEventSender || k == kindEventReceiver }

// weSend reports whether the server is the sending end of the link.
func (k linkKind) weSend() bool {
	return k == kindCBSReply || k == kindMgmtReply || k == kindEventReceiver
}

// link is one attached link; all fields are owned by the connection loop.
type link struct {
	id         uint64
	s          *session
	name       string
	handle     uint32
	kind       linkKind
	address    string // entity address: a sender's target, a receiver's source
	replyAddr  string // reply links: the client's target address
	detached   bool   // the server sent its detach
	lastActive time.Time

	// client sends, server receives
	deliveryCount uint32
	credit        uint32
	inc           *incoming
	hub           *hub
	part          *partition // nil: the hub picks

	// server sends, client receives
	sndCount  uint32
	sndCredit uint32
	unsettled bool // the client asked for snd-settle-mode unsettled
	drain     bool
	replies   [][]byte
	cursor    int64
	rset      *receiverSet
	subscribe *partition
	// runtimeMetric: the client asked for the partition's last-enqueued
	// values on every event (see capRuntimeMetric).
	runtimeMetric bool
}

// onAttach answers the client's attach, or refuses it.
func (c *conn) onAttach(s *session, a *amqp10.Attach) {
	if a.Handle > s.handleMax {
		c.endSession(s, CondNotAllowed, fmt.Sprintf("handle %d exceeds handle-max %d", a.Handle, s.handleMax))
		return
	}
	if _, ok := s.links[a.Handle]; ok {
		c.endSession(s, CondHandleInUse, fmt.Sprintf("handle %d is in use", a.Handle))
		return
	}
	l := &link{id: c.e.nextLink.Add(1), s: s, name: a.Name, handle: a.Handle, lastActive: time.Now()}
	reply := &amqp10.Attach{
		Name: a.Name, Handle: a.Handle, Role: !a.Role,
		SndSettleMode: a.SndSettleMode, RcvSettleMode: a.RcvSettleMode,
		Source: a.Source, Target: a.Target,
	}
	if a.Role == amqp10.RoleSender {
		if a.Target == nil {
			c.refuseAttach(s, a, CondInvalidField, "a sender link needs a target")
			return
		}
		if cond, desc := c.setupIncoming(l, a); cond != "" {
			c.refuseAttach(s, a, cond, desc)
			return
		}
		reply.MaxMessageSize = c.e.cfg.MaxMessageSize
	} else {
		if a.Source == nil {
			c.refuseAttach(s, a, CondInvalidField, "a receiver link needs a source")
			return
		}
		if cond, desc := c.setupOutgoing(l, a); cond != "" {
			c.refuseAttach(s, a, cond, desc)
			return
		}
		reply.InitialDeliveryCount = amqp10.Ptr(uint32(0))
		l.unsettled = a.SndSettleMode != nil && *a.SndSettleMode == amqp10.SndUnsettled
		reply.MaxMessageSize = c.e.cfg.MaxMessageSize
		if l.runtimeMetric {
			reply.OfferedCapabilities = []amqp10.Symbol{capRuntimeMetric}
		}
	}
	s.links[a.Handle] = l
	c.send(s.ch, reply, nil)
	c.log.Debug("link attached", "link", l.name, "address", l.address, "server_sends", l.kind.weSend())
	if !l.kind.weSend() {
		l.credit = linkCredit
		c.sendLinkFlow(l, false)
	}
}

// refuseAttach answers an attach with null terminus and a closing detach.
func (c *conn) refuseAttach(s *session, a *amqp10.Attach, cond, desc string) {
	c.log.Info("refusing attach", "link", a.Name, "condition", cond, "description", desc)
	c.send(s.ch, &amqp10.Attach{Name: a.Name, Handle: a.Handle, Role: !a.Role}, nil)
	c.send(s.ch, &amqp10.Detach{Handle: a.Handle, Closed: true, Error: newError(cond, desc)}, nil)
	s.links[a.Handle] = &link{s: s, name: a.Name, handle: a.Handle, kind: kindRefused, detached: true}
}

// sendLinkFlow sends l's flow state with the session's.
func (c *conn) sendLinkFlow(l *link, echo bool) {
	f := c.sessionFlow(l.s)
	f.Handle = amqp10.Ptr(l.handle)
	f.Echo = echo
	if l.kind.weSend() {
		f.DeliveryCount = amqp10.Ptr(l.sndCount)
		f.LinkCredit = amqp10.Ptr(l.sndCredit)
		f.Drain = l.drain
	} else {
		f.DeliveryCount = amqp10.Ptr(l.deliveryCount)
		f.LinkCredit = amqp10.Ptr(l.credit)
	}
	c.send(l.s.ch, f, nil)
}

// onFlow takes the peer's session window and, for a link, its credit:
// the server's sending links pump and answer a drain.
func (c *conn) onFlow(s *session, f *amqp10.Flow) {
	var nii uint32
	if f.NextIncomingID != nil {
		nii = *f.NextIncomingID
	}
	s.remoteIncomingWindow = nii + f.IncomingWindow - s.nextOutgoingID
	if f.Handle == nil {
		if f.Echo {
			c.send(s.ch, c.sessionFlow(s), nil)
		}
		return
	}
	l := s.links[*f.Handle]
	if l == nil {
		c.endSession(s, CondUnattachedHandle, fmt.Sprintf("flow for unattached handle %d", *f.Handle))
		return
	}
	if l.detached {
		return
	}
	if !l.kind.weSend() {
		if f.Echo {
			c.sendLinkFlow(l, false)
		}
		return
	}
	var dc, lc uint32
	if f.DeliveryCount != nil {
		dc = *f.DeliveryCount
	}
	if f.LinkCredit != nil {
		lc = *f.LinkCredit
	}
	l.sndCredit = dc + lc - l.sndCount
	if int32(l.sndCredit) < 0 {
		l.sndCredit = 0
	}
	l.drain = f.Drain
	c.pump(l)
	if l.drain {
		// Use up the remaining credit and report it, even when none is
		// left: the receiver waits for this flow to finish its drain.
		l.sndCount += l.sndCredit
		l.sndCredit = 0
		c.sendLinkFlow(l, false)
		l.drain = false
	} else if f.Echo {
		c.sendLinkFlow(l, false)
	}
}

// onDetach forgets a link the client detached, answering unless the
// server detached it first.
func (c *conn) onDetach(s *session, d *amqp10.Detach) {
	l := s.links[d.Handle]
	if l == nil {
		c.endSession(s, CondUnattachedHandle, fmt.Sprintf("detach of unattached handle %d", d.Handle))
		return
	}
	delete(s.links, d.Handle)
	if d.Error != nil {
		c.log.Info("peer detached link with error", "link", l.name, "condition", string(d.Error.Condition), "description", d.Error.Description)
	}
	if l.detached {
		return
	}
	c.releaseLink(l)
	c.send(s.ch, &amqp10.Detach{Handle: d.Handle, Closed: true}, nil)
	c.log.Debug("link detached by peer", "link", l.name, "address", l.address)
}

// releaseLink drops the link's registrations with shared state.
func (c *conn) releaseLink(l *link) {
	if l.rset != nil {
		l.rset.unregister(l.id)
		l.rset = nil
	}
	if p := l.subscribe; p != nil {
		l.subscribe = nil
		if c.subs[p]--; c.subs[p] <= 0 {
			delete(c.subs, p)
			p.unsubscribe(c)
		}
	}
	l.inc = nil
	l.replies = nil
}

// detachLink detaches l from the server side with an error; the link stays
// known until the client answers.
func (c *conn) detachLink(l *link, cond, desc string) {
	if l.detached {
		return
	}
	c.log.Info("detaching link", "link", l.name, "address", l.address, "condition", cond, "description", desc)
	l.detached = true
	c.releaseLink(l)
	c.send(l.s.ch, &amqp10.Detach{Handle: l.handle, Closed: true, Error: newError(cond, desc)}, nil)
}

// detachMatching detaches every link for which match is true.
func (c *conn) detachMatching(match func(*link) bool, cond, desc string) {
	if c.closing {
		return
	}
	for _, s := range c.sessions {
		if s.ending {
			continue
		}
		for _, l := range s.links {
			if !l.detached && match(l) {
				c.detachLink(l, cond, desc)
			}
		}
	}
}
