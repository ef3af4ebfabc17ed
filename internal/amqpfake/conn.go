package amqpfake

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Publish is one basic.publish as the server received it: method, content
// header and every body frame, assembled.
type Publish struct {
	// Channel is the channel the message was published on.
	Channel uint16
	// Tag is the delivery tag the server assigned to the message on its
	// channel, counting from 1 after confirm.select; 0 when the channel is
	// not in confirm mode.
	Tag uint64
	// Exchange and Key are the basic.publish exchange and routing key.
	Exchange, Key string
	// Mandatory is the basic.publish mandatory flag.
	Mandatory bool
	// MessageID and ContentType are the message-id and content-type
	// properties ("" when absent).
	MessageID, ContentType string
	// AppID is the app-id property ("" when absent).
	AppID string
	// Headers is the decoded headers table (nil when absent); see
	// [Conn.NextPublish] for the Go types of its values.
	Headers map[string]any
	// Body is the complete message body.
	Body []byte
}

// Conn is the server side of one client connection, as returned by
// [Server.Accept]. Its methods may be called from any goroutine; every write
// to the socket, by the script or by the server's own replies, is
// serialized, so frames go out in the order the calls are made.
type Conn struct {
	srv *Server
	nc  net.Conn
	br  *bufio.Reader // owned by the connection's serve goroutine

	// Negotiated during the handshake; read-only once Accept returns the Conn.
	clientProps map[string]any
	mechanism   string
	vhost       string
	channelMax  uint16
	frameMax    uint32
	heartbeat   time.Duration

	// mu serializes every write to nc and guards the protocol state below,
	// so that a reply and a scripted frame can never interleave or reorder
	// with the state change that goes with them.
	mu       sync.Mutex
	channels map[uint16]*channelState
	closing  bool  // the server sent connection.close
	closeErr error // what Err reports once that close completes

	// qmu guards what the script reads back.
	qmu    sync.Mutex
	opened []uint16
	pubs   []Publish
	err    error         // why the connection ended; set before done is closed
	pubSig chan struct{} // capacity 1: "pubs may be non-empty"
	done   chan struct{} // closed when the connection has ended
}

// channelState is the server's view of one open channel.
type channelState struct {
	confirm bool
	nextTag uint64
	closing bool // the server sent channel.close and awaits close-ok

	// Content being assembled for a basic.publish.
	pending    *Publish
	haveHeader bool
	bodySize   uint64
}

func newConn(s *Server, nc net.Conn) *Conn {
	return &Conn{
		srv:      s,
		nc:       nc,
		channels: make(map[uint16]*channelState),
		pubSig:   make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
}

// NextPublish returns the next publish the client sent on any channel, in
// wire order, waiting for one if needed. Once the connection has ended and
// every received publish has been returned it fails with [Conn.Err]; it also
// fails with ctx's error.
//
// Header values decode to: bool ('t'), int8 ('b'), uint8 ('B'), int16 ('s'),
// uint16 ('u'), int32 ('I'), uint32 ('i'), int64 ('l'), float32 ('f'),
// float64 ('d'), [Decimal] ('D'), string ('S'), []byte ('x'), []any ('A'),
// time.Time ('T'), map[string]any ('F') and nil ('V').
func (c *Conn) NextPublish(ctx context.Context) (Publish, error) {
	for {
		c.qmu.Lock()
		if len(c.pubs) > 0 {
			p := c.pubs[0]
			c.pubs[0] = Publish{}
			c.pubs = c.pubs[1:]
			more := len(c.pubs) > 0
			c.qmu.Unlock()
			if more {
				signal(c.pubSig)
			}
			return p, nil
		}
		err := c.err
		c.qmu.Unlock()
		if err != nil {
			return Publish{}, err
		}
		select {
		case <-ctx.Done():
			return Publish{}, ctx.Err()
		case <-c.done:
		case <-c.pubSig:
		}
	}
}

// Ack sends basic.ack (60,80) for tag on channel. The tag is not checked
// against what the client published, so that tests can probe how a client
// copes with unknown or repeated tags. On a channel that is not open (the
// client closed it, say) nothing is sent, as RabbitMQ sends nothing on a
// channel after its close: a script may answer a publish its client has
// given up with the channel.
func (c *Conn) Ack(channel uint16, tag uint64, multiple bool) error {
	m := newMethod(basicAck)
	m.longlong(tag)
	m.bit(multiple)
	return c.writeOnOpen(channel, appendFrame(nil, frameMethod, channel, m.b))
}

// Nack sends basic.nack (60,120) with requeue false for tag on channel. Like
// Ack it does not check the tag, and sends nothing on a channel not open.
func (c *Conn) Nack(channel uint16, tag uint64, multiple bool) error {
	m := newMethod(basicNack)
	m.longlong(tag)
	m.bit(multiple)
	m.bit(false) // requeue
	return c.writeOnOpen(channel, appendFrame(nil, frameMethod, channel, m.b))
}

// Confirm is one basic.ack or basic.nack of a [Conn.Confirms] script.
type Confirm struct {
	Tag      uint64
	Multiple bool
	Nack     bool // basic.nack (requeue false) instead of basic.ack
}

// Confirms sends cs on channel in one write, so that the client reads them
// all before anything it does in answer to the first can reach the server
// (a client that closes the channel on a nack, say). Like Ack it sends
// nothing on a channel not open.
func (c *Conn) Confirms(channel uint16, cs ...Confirm) error {
	var b []byte
	for _, cf := range cs {
		m := newMethod(basicAck)
		if cf.Nack {
			m = newMethod(basicNack)
		}
		m.longlong(cf.Tag)
		m.bit(cf.Multiple)
		if cf.Nack {
			m.bit(false) // requeue
		}
		b = appendFrame(b, frameMethod, channel, m.b)
	}
	return c.writeOnOpen(channel, b)
}

// Return sends basic.return (60,50) for p on p.Channel, with p's exchange
// and routing key, followed by a content header carrying p's message-id,
// content-type, app-id and headers and by p's body, split into body frames at the
// frame-max the client negotiated. RabbitMQ sends the return of an
// unroutable mandatory message before its basic.ack; a script reproduces
// that by calling Return and then Ack. Like Ack it sends nothing on a
// channel not open.
func (c *Conn) Return(p Publish, code uint16, text string) error {
	m := newMethod(basicReturn)
	m.short(code)
	m.shortstr(text)
	m.shortstr(p.Exchange)
	m.shortstr(p.Key)
	hdr, err := encodeContentHeader(classBasic, uint64(len(p.Body)), properties{
		ContentType: p.ContentType,
		MessageID:   p.MessageID,
		AppID:       p.AppID,
		Headers:     p.Headers,
	})
	if err != nil {
		return err
	}
	b := appendFrame(nil, frameMethod, p.Channel, m.b)
	b = appendFrame(b, frameHeader, p.Channel, hdr)
	chunk := len(p.Body)
	if c.frameMax > frameOverhead && int(c.frameMax-frameOverhead) < chunk {
		chunk = int(c.frameMax - frameOverhead)
	}
	for body := p.Body; len(body) > 0; body = body[min(chunk, len(body)):] {
		b = appendFrame(b, frameBody, p.Channel, body[:min(chunk, len(body))])
	}
	return c.writeOnOpen(p.Channel, b)
}

// CloseChannel sends channel.close (20,40) with code and text on channel, as
// the broker does on a channel error (e.g. 406 PRECONDITION_FAILED, 404
// NOT_FOUND). Until the client answers close-ok the server, like RabbitMQ,
// discards everything else the client sends on that channel, publishes
// included. It fails if the channel is not open or already closing.
func (c *Conn) CloseChannel(channel uint16, code uint16, text string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.channels[channel]
	if st == nil || st.closing {
		return fmt.Errorf("amqpfake: channel %d is not open", channel)
	}
	st.closing = true
	st.pending = nil
	m := newMethod(channelClose)
	m.short(code)
	m.shortstr(text)
	m.short(0) // class-id
	m.short(0) // method-id
	return c.writeLocked(appendFrame(nil, frameMethod, channel, m.b))
}

// CloseConnection sends connection.close (10,50) with code and text, as the
// broker does on a connection error or shutdown (e.g. 320
// CONNECTION_FORCED). The server then discards everything but the client's
// close-ok, after which it closes the socket; [Conn.Done] is closed then.
func (c *Conn) CloseConnection(code uint16, text string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return fmt.Errorf("amqpfake: connection is already closing")
	}
	return c.closeLocked(code, text, 0, fmt.Errorf("%w by server (%d %s)", ErrClosed, code, text))
}

// Block sends connection.blocked (10,60) with reason, as RabbitMQ does when
// a resource alarm stops publishers.
func (c *Conn) Block(reason string) error {
	m := newMethod(connectionBlocked)
	m.shortstr(reason)
	return c.write(appendFrame(nil, frameMethod, 0, m.b))
}

// Unblock sends connection.unblocked (10,61).
func (c *Conn) Unblock() error {
	return c.write(appendFrame(nil, frameMethod, 0, newMethod(connectionUnblocked).b))
}

// Drop closes the socket without a close handshake, as a network failure
// or a killed broker would.
func (c *Conn) Drop() error {
	err := c.nc.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Channels returns the channels the client has opened so far, in order. A
// channel number that was closed and opened again appears once per open.
func (c *Conn) Channels() []uint16 {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return append([]uint16(nil), c.opened...)
}

// Done returns a channel that is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns nil while the connection is up and, once it has ended, why:
// an error wrapping [ErrClosed], with the client's or server's close reason,
// the protocol violation the server closed the connection for, or the
// socket error.
func (c *Conn) Err() error {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return c.err
}

// FrameMax returns the frame-max the client answered in connection.tune-ok
// (0: no limit).
func (c *Conn) FrameMax() uint32 { return c.frameMax }

// Heartbeat returns the heartbeat interval the client answered in
// connection.tune-ok (0: none).
func (c *Conn) Heartbeat() time.Duration { return c.heartbeat }

// Vhost returns the virtual host the client opened.
func (c *Conn) Vhost() string { return c.vhost }

// ClientProperties returns the client-properties table of connection.start-ok.
// The caller must not modify it.
func (c *Conn) ClientProperties() map[string]any { return c.clientProps }

// write sends b to the client, serialized with every other write.
func (c *Conn) write(b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writeLocked(b)
}

// writeOnOpen sends b, frames of channel, if that channel is open, and
// drops it otherwise.
func (c *Conn) writeOnOpen(channel uint16, b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.channels[channel] == nil {
		return nil
	}
	return c.writeLocked(b)
}

// writeLocked sends b; c.mu must be held.
func (c *Conn) writeLocked(b []byte) error {
	select {
	case <-c.done:
		return c.Err()
	default:
	}
	if _, err := c.nc.Write(b); err != nil {
		return fmt.Errorf("%w: write: %w", ErrClosed, err)
	}
	return nil
}

// closeLocked starts a server-initiated connection close; c.mu must be held.
func (c *Conn) closeLocked(code uint16, text string, cause methodID, err error) error {
	c.closing = true
	c.closeErr = err
	m := newMethod(connectionClose)
	m.short(code)
	m.shortstr(text)
	m.short(cause.class())
	m.short(cause.method())
	return c.writeLocked(appendFrame(nil, frameMethod, 0, m.b))
}

// addPublish queues a fully assembled publish for NextPublish.
func (c *Conn) addPublish(p Publish) {
	c.qmu.Lock()
	c.pubs = append(c.pubs, p)
	c.qmu.Unlock()
	signal(c.pubSig)
}

// addOpened records a channel.open for Channels.
func (c *Conn) addOpened(channel uint16) {
	c.qmu.Lock()
	c.opened = append(c.opened, channel)
	c.qmu.Unlock()
}

// finish records why the connection ended, closes the socket and wakes
// everyone waiting on it.
func (c *Conn) finish(err error) {
	_ = c.nc.Close()
	if err == nil {
		err = ErrClosed
	}
	c.qmu.Lock()
	c.err = err
	c.qmu.Unlock()
	close(c.done)
}
