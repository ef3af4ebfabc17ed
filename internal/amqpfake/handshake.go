package amqpfake

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"time"
)

// protocolHeader is what an AMQP 0-9-1 client sends first.
const protocolHeader = "AMQP\x00\x00\x09\x01"

// handshakeTimeout bounds each connection's handshake so that a client that
// stalls mid-handshake cannot hold a goroutine forever (Close also ends it).
const handshakeTimeout = 10 * time.Second

// serverProperties returns the server-properties table of connection.start.
func serverProperties() map[string]any {
	return map[string]any{
		"product":     "amqpfake",
		"version":     "0.0.0",
		"platform":    "Go",
		"information": "scripted AMQP 0-9-1 test server",
		"capabilities": map[string]any{
			"publisher_confirms":     true,
			"basic.nack":             true,
			"consumer_cancel_notify": true,
			"connection.blocked":     true,
		},
	}
}

// handshake runs the connection negotiation up to and including open-ok,
// and makes the connection available to Accept just before open-ok.
func (c *Conn) handshake() error {
	_ = c.nc.SetDeadline(time.Now().Add(handshakeTimeout))
	defer func() { _ = c.nc.SetDeadline(time.Time{}) }()

	hdr := make([]byte, len(protocolHeader))
	if _, err := io.ReadFull(c.br, hdr); err != nil {
		return fmt.Errorf("%w: reading protocol header: %w", ErrClosed, err)
	}
	if !bytes.Equal(hdr, []byte(protocolHeader)) {
		// The spec's answer to an unsupported protocol: our header, then close.
		_ = c.write([]byte(protocolHeader))
		return fmt.Errorf("%w: unsupported protocol header %q", ErrClosed, hdr)
	}

	start := newMethod(connectionStart)
	start.octet(0) // version-major
	start.octet(9) // version-minor
	if err := start.table(serverProperties()); err != nil {
		return err
	}
	start.longstr("PLAIN AMQPLAIN")
	start.longstr("en_US")
	if err := c.write(appendFrame(nil, frameMethod, 0, start.b)); err != nil {
		return err
	}

	d, err := c.expect(connectionStartOk)
	if err != nil {
		return err
	}
	c.clientProps = d.table()
	c.mechanism = d.shortstr()
	_ = d.longstr() // response: any credentials are accepted
	_ = d.shortstr()
	if d.err != nil {
		return fmt.Errorf("%w: connection.start-ok: %w", ErrClosed, d.err)
	}

	tune := newMethod(connectionTune)
	tune.short(c.srv.opts.ChannelMax)
	tune.long(c.srv.opts.FrameMax)
	tune.short(uint16(min((c.srv.opts.Heartbeat+time.Second-1)/time.Second, math.MaxUint16)))
	if err := c.write(appendFrame(nil, frameMethod, 0, tune.b)); err != nil {
		return err
	}

	if d, err = c.expect(connectionTuneOk); err != nil {
		return err
	}
	c.channelMax = d.short()
	c.frameMax = d.long()
	c.heartbeat = time.Duration(d.short()) * time.Second
	if d.err != nil {
		return fmt.Errorf("%w: connection.tune-ok: %w", ErrClosed, d.err)
	}

	if d, err = c.expect(connectionOpen); err != nil {
		return err
	}
	c.vhost = d.shortstr()
	if d.err != nil {
		return fmt.Errorf("%w: connection.open: %w", ErrClosed, d.err)
	}
	// Queue the connection for Accept before the client can see open-ok, so
	// that connections dialled one after another are accepted in that order.
	c.srv.enqueue(c)
	openOk := newMethod(connectionOpenOk)
	openOk.shortstr("") // reserved (known-hosts)
	return c.write(appendFrame(nil, frameMethod, 0, openOk.b))
}

// expect reads frames until a channel-0 method arrives, skipping heartbeats,
// and returns a decoder positioned at its arguments if it is want.
func (c *Conn) expect(want methodID) (*decoder, error) {
	for {
		f, err := readFrame(c.br)
		if err != nil {
			return nil, fmt.Errorf("%w: handshake, waiting for %v: %w", ErrClosed, want, err)
		}
		if f.typ == frameHeartbeat {
			continue
		}
		if f.typ != frameMethod || f.channel != 0 {
			return nil, fmt.Errorf("%w: handshake, waiting for %v: frame type %d on channel %d", ErrClosed, want, f.typ, f.channel)
		}
		d := newDecoder(f.payload)
		got := d.method()
		switch got {
		case want:
			return d, nil
		case connectionClose:
			_ = c.write(appendFrame(nil, frameMethod, 0, newMethod(connectionCloseOk).b))
			return nil, fmt.Errorf("%w: client closed the connection during the handshake", ErrClosed)
		}
		return nil, fmt.Errorf("%w: handshake, waiting for %v: got method %v", ErrClosed, want, got)
	}
}
