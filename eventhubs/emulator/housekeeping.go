package emulator

// Housekeeping: what the connection loop does on each tick — the end of a
// close the peer has not answered within closeGrace, heartbeats, the
// heartbeat timeout, the service's idle close of a connection without event
// links, the idle detach of event links, and the detach of event links
// whose token has expired.

import (
	"fmt"
	"time"
)

// tickInterval is how often housekeeping runs.
func (c *conn) tickInterval() time.Duration {
	d := time.Second
	consider := func(x time.Duration) {
		if x > 0 && x < d {
			d = x
		}
	}
	consider(c.peerIdle / 4)
	consider(c.e.cfg.IdleTimeout / 5)
	consider(c.e.cfg.LinkIdleTimeout / 5)
	consider(c.e.cfg.HeartbeatTimeout / 5)
	return max(d, 5*time.Millisecond)
}

// housekeeping runs on every tick of the loop.
func (c *conn) housekeeping(now time.Time) {
	if c.closing {
		if now.After(c.closeDeadline) {
			c.finished = true
		}
		return
	}
	hb := 15 * time.Second
	if c.peerIdle > 0 {
		hb = min(hb, c.peerIdle/2)
	}
	if now.Sub(c.lastHeartbeat) >= hb {
		c.lastHeartbeat = now
		c.out.enqueue(emptyFrame())
	}
	if to := c.e.cfg.HeartbeatTimeout; to > 0 && now.Sub(c.lastRecv) > to {
		c.closeWith(CondResourceLimitExceeded, fmt.Sprintf("local-idle-timeout expired: nothing received for %d ms", to.Milliseconds()))
		return
	}
	if to := c.e.cfg.IdleTimeout; to > 0 && now.Sub(c.lastActivity) >= to && !c.hasEntityLinks() {
		c.closeWith(CondConnectionForced, c.trackedDescription(fmt.Sprintf(
			"The connection was inactive for more than the allowed %d milliseconds and is closed by container '%s'.",
			to.Milliseconds(), c.containerIDForErrors())))
		return
	}
	if to := c.e.cfg.LinkIdleTimeout; to > 0 {
		c.detachMatching(func(l *link) bool {
			return l.kind.isEntity() && now.Sub(l.lastActive) >= to
		}, CondLinkDetachForced, c.trackedDescription(fmt.Sprintf(
			"The link is force detached. Code: ServerError. Details: AmqpMessageConsumer.IdleTimerExpired: Idle timeout: %s.", to)))
	}
	c.detachUnauthorized()
}

// hasEntityLinks reports whether any event link is attached.
func (c *conn) hasEntityLinks() bool {
	for _, s := range c.sessions {
		for _, l := range s.links {
			if l.kind.isEntity() && !l.detached {
				return true
			}
		}
	}
	return false
}

// detachUnauthorized detaches the event links no unexpired token covers.
// As on the service, an event link lives only as long as a token covering
// its entity: the client must put a fresh one on $cbs before the last
// expires. (The description is the emulator's own wording.)
func (c *conn) detachUnauthorized() {
	var expired []string
	c.detachMatching(func(l *link) bool {
		if l.kind.isEntity() && !c.authorized(l.address) {
			expired = append(expired, l.address)
			return true
		}
		return false
	}, CondUnauthorizedAccess, c.trackedDescription(
		"Unauthorized access. The token authorizing this link has expired; put a new token on $cbs before the old one expires."))
	if len(expired) > 0 {
		c.log.Info("links detached: token expired", "addresses", expired)
	}
}

// containerIDForErrors is the container-id the service's error texts name.
func (c *conn) containerIDForErrors() string { return fmt.Sprintf("%s-%d", c.e.cfg.Namespace, c.id) }

// emptyFrame is a heartbeat: an AMQP frame without a body.
func emptyFrame() []byte { return []byte{0, 0, 0, 8, 2, 0, 0, 0} }
