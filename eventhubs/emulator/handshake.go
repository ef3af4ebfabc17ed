package emulator

// The connection's handshake, before the loop starts: the protocol
// headers, the SASL layer (ANONYMOUS, and PLAIN against the namespace's
// keys) and the open exchange, all under Config.HandshakeTimeout.

import (
	"bufio"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	"github.com/isobroker/broker/internal/amqp10"
)

// handshake runs the protocol header, SASL and open exchange.
func (c *conn) handshake(br *bufio.Reader) error {
	stopAfter := context.AfterFunc(c.e.ctx, func() { _ = c.nc.SetDeadline(time.Now()) })
	defer stopAfter()
	if err := c.nc.SetDeadline(time.Now().Add(c.e.cfg.HandshakeTimeout)); err != nil {
		return fmt.Errorf("set deadline: %w", err)
	}
	amqpHeader := amqp10.ProtocolHeader{ID: amqp10.ProtoAMQP, Major: 1}
	saslHeader := amqp10.ProtocolHeader{ID: amqp10.ProtoSASL, Major: 1}
	hdr, err := amqp10.ReadProtocolHeader(br)
	if err != nil {
		if errors.Is(err, amqp10.ErrBadProtocolHeader) {
			// Answer with the header we support, then close (spec 2.2).
			_, _ = c.nc.Write(amqpHeader.Bytes())
		}
		return err
	}
	if hdr.ID == amqp10.ProtoSASL && hdr.Major == 1 && hdr.Minor == 0 && hdr.Revision == 0 {
		if err := c.sasl(br, saslHeader); err != nil {
			return err
		}
		if hdr, err = amqp10.ReadProtocolHeader(br); err != nil {
			if errors.Is(err, amqp10.ErrBadProtocolHeader) {
				_, _ = c.nc.Write(amqpHeader.Bytes())
			}
			return err
		}
	}
	if hdr != amqpHeader {
		_, _ = c.nc.Write(amqpHeader.Bytes())
		return fmt.Errorf("%w: unsupported protocol header %v", amqp10.ErrBadProtocolHeader, hdr)
	}
	if _, err := c.nc.Write(amqpHeader.Bytes()); err != nil {
		return fmt.Errorf("write protocol header: %w", err)
	}
	fr := amqp10.NewFrameReader(br, c.e.cfg.MaxFrameSize)
	var open *amqp10.Open
	for open == nil {
		f, err := fr.ReadFrame()
		if err != nil {
			var fe *amqp10.FrameError
			if errors.As(err, &fe) {
				c.writeOpenAndClose(string(fe.Condition), fe.Err.Error())
			}
			return fmt.Errorf("reading open: %w", err)
		}
		if f.Body == nil {
			continue
		}
		o, ok := f.Body.(*amqp10.Open)
		if !ok || f.Type != amqp10.FrameAMQP || f.Channel != 0 {
			c.writeOpenAndClose(CondNotAllowed, "expected an open frame")
			return fmt.Errorf("expected open, got %T", f.Body)
		}
		open = o
	}
	if open.MaxFrameSize < amqp10.MinMaxFrameSize {
		c.writeOpenAndClose(CondInvalidField, "max-frame-size below 512")
		return fmt.Errorf("peer max-frame-size %d below 512", open.MaxFrameSize)
	}
	c.peerMaxFrame = min(open.MaxFrameSize, 1<<24)
	c.peerIdle = time.Duration(open.IdleTimeout) * time.Millisecond
	c.hostname, c.containerID = open.Hostname, open.ContainerID
	b, err := amqp10.AppendFrame(nil, amqp10.FrameAMQP, 0, c.ourOpen(), nil)
	if err != nil {
		return err
	}
	if _, err := c.nc.Write(b); err != nil {
		return fmt.Errorf("write open: %w", err)
	}
	if c.e.ctx.Err() != nil {
		return ErrClosed
	}
	if err := c.nc.SetDeadline(time.Time{}); err != nil {
		return fmt.Errorf("clear deadline: %w", err)
	}
	now := time.Now()
	c.lastRecv, c.lastActivity, c.lastHeartbeat = now, now, now
	return nil
}

func (c *conn) ourOpen() *amqp10.Open {
	o := &amqp10.Open{
		ContainerID:  fmt.Sprintf("%s-%d", c.e.cfg.Namespace, c.id),
		MaxFrameSize: c.e.cfg.MaxFrameSize,
		ChannelMax:   channelMax,
		Properties: amqp10.Map{
			{Key: amqp10.Symbol("product"), Value: "isobroker-eventhubs-emulator"},
		},
	}
	if c.e.cfg.HeartbeatTimeout > 0 {
		o.IdleTimeout = uint32(c.e.cfg.HeartbeatTimeout / time.Millisecond)
	}
	return o
}

// writeOpenAndClose answers a failed open exchange during the handshake.
func (c *conn) writeOpenAndClose(cond, desc string) {
	b, err := amqp10.AppendFrame(nil, amqp10.FrameAMQP, 0, c.ourOpen(), nil)
	if err == nil {
		b, err = amqp10.AppendFrame(b, amqp10.FrameAMQP, 0, &amqp10.Close{Error: &amqp10.Error{Condition: amqp10.Symbol(cond), Description: desc}}, nil)
	}
	if err == nil {
		_, _ = c.nc.Write(b)
	}
}

// sasl runs the SASL layer: ANONYMOUS always succeeds (authorization then
// happens through CBS), PLAIN checks a shared access key name and key.
func (c *conn) sasl(br *bufio.Reader, hdr amqp10.ProtocolHeader) error {
	b := hdr.Bytes()
	b, err := amqp10.AppendFrame(b, amqp10.FrameSASL, 0, &amqp10.SASLMechanisms{Mechanisms: []amqp10.Symbol{"ANONYMOUS", "PLAIN"}}, nil)
	if err != nil {
		return err
	}
	if _, err := c.nc.Write(b); err != nil {
		return fmt.Errorf("write sasl mechanisms: %w", err)
	}
	f, err := amqp10.NewFrameReader(br, saslMaxFrame).ReadFrame()
	if err != nil {
		return fmt.Errorf("reading sasl-init: %w", err)
	}
	init, ok := f.Body.(*amqp10.SASLInit)
	if !ok {
		return fmt.Errorf("expected sasl-init, got %T", f.Body)
	}
	code := amqp10.SASLAuth
	switch init.Mechanism {
	case "ANONYMOUS":
		code = amqp10.SASLOk
	case "PLAIN":
		if c.checkPlain(init.InitialResponse) {
			code = amqp10.SASLOk
			c.plainAuth = true
		}
	}
	b, err = amqp10.AppendFrame(nil, amqp10.FrameSASL, 0, &amqp10.SASLOutcome{Result: code}, nil)
	if err != nil {
		return err
	}
	if _, err := c.nc.Write(b); err != nil {
		return fmt.Errorf("write sasl outcome: %w", err)
	}
	if code != amqp10.SASLOk {
		return fmt.Errorf("sasl %s authentication failed", init.Mechanism)
	}
	c.log.Debug("sasl complete", "mechanism", string(init.Mechanism))
	return nil
}

func (c *conn) checkPlain(resp []byte) bool {
	// authzid NUL authcid NUL passwd
	var parts [][]byte
	start := 0
	for i, ch := range resp {
		if ch == 0 {
			parts = append(parts, resp[start:i])
			start = i + 1
		}
	}
	parts = append(parts, resp[start:])
	if len(parts) != 3 {
		return false
	}
	key, ok := c.e.keys[string(parts[1])]
	return ok && subtle.ConstantTimeCompare(key, parts[2]) == 1
}
