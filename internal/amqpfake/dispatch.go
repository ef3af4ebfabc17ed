package amqpfake

import (
	"fmt"
)

// AMQP reply codes the server uses when the client breaks the protocol.
const (
	codeFrameError     = 501
	codeSyntaxError    = 502
	codeCommandInvalid = 503
	codeChannelError   = 504
	codeUnexpected     = 505
	codeNotImplemented = 540
)

// loop reads and handles frames until the connection ends.
func (c *Conn) loop() error {
	for {
		f, err := readFrame(c.br)
		if err != nil {
			c.mu.Lock()
			cause := c.closeErr
			c.mu.Unlock()
			if cause != nil {
				// The server was closing anyway; report why it was.
				return cause
			}
			return fmt.Errorf("%w: read: %w", ErrClosed, err)
		}
		if stop, err := c.handle(f); stop {
			return err
		}
	}
}

// handle processes one frame. It returns stop=true, with the reason, when
// the connection is over.
func (c *Conn) handle(f frame) (stop bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()

	if c.closing {
		return c.handleClosing(f)
	}
	switch {
	case f.typ == frameHeartbeat:
		return false, nil
	case f.typ != frameMethod && f.typ != frameHeader && f.typ != frameBody:
		return c.fail(codeFrameError, fmt.Sprintf("FRAME_ERROR - unknown frame type %d", f.typ), 0)
	case f.channel == 0:
		return c.handleConnection(f)
	default:
		return c.handleChannel(f)
	}
}

// fail closes the connection because the client broke the protocol.
func (c *Conn) fail(code uint16, text string, cause methodID) (bool, error) {
	err := fmt.Errorf("%w: protocol error: %d %s", ErrClosed, code, text)
	if werr := c.closeLocked(code, text, cause, err); werr != nil {
		return true, err
	}
	return false, nil
}

// reply sends a method frame on channel; c.mu must be held.
func (c *Conn) reply(channel uint16, m *encoder) (bool, error) {
	if err := c.writeLocked(appendFrame(nil, frameMethod, channel, m.b)); err != nil {
		return true, err
	}
	return false, nil
}

// handleClosing processes a frame after the server sent connection.close:
// only the close handshake matters now.
func (c *Conn) handleClosing(f frame) (bool, error) {
	if f.typ != frameMethod || f.channel != 0 {
		return false, nil
	}
	switch newDecoder(f.payload).method() {
	case connectionCloseOk:
		return true, c.closeErr
	case connectionClose:
		// Both sides closed at once: answer and finish.
		_, _ = c.reply(0, newMethod(connectionCloseOk))
		return true, c.closeErr
	}
	return false, nil
}

// handleConnection processes a frame on channel 0 after the handshake.
func (c *Conn) handleConnection(f frame) (bool, error) {
	if f.typ != frameMethod {
		return c.fail(codeUnexpected, "UNEXPECTED_FRAME - content frame on channel 0", 0)
	}
	d := newDecoder(f.payload)
	id := d.method()
	switch id {
	case connectionClose:
		code := d.short()
		text := d.shortstr()
		_, _ = c.reply(0, newMethod(connectionCloseOk))
		return true, fmt.Errorf("%w by client (%d %s)", ErrClosed, code, text)
	case connectionUpdSecret:
		return c.reply(0, newMethod(connectionUpdSecOk))
	case connectionCloseOk:
		return false, nil
	}
	return c.fail(codeCommandInvalid, fmt.Sprintf("COMMAND_INVALID - unexpected method %v on channel 0", id), id)
}

// handleChannel processes a frame on a channel other than 0.
func (c *Conn) handleChannel(f frame) (bool, error) {
	st := c.channels[f.channel]
	if st == nil {
		return c.handleNoChannel(f)
	}
	if st.closing {
		// Waiting for channel.close-ok: drop everything else, as RabbitMQ does.
		if f.typ == frameMethod {
			switch newDecoder(f.payload).method() {
			case channelCloseOk:
				delete(c.channels, f.channel)
			case channelClose:
				delete(c.channels, f.channel)
				return c.reply(f.channel, newMethod(channelCloseOk))
			}
		}
		return false, nil
	}
	switch f.typ {
	case frameHeader:
		return c.contentHeader(f, st)
	case frameBody:
		return c.contentBody(f, st)
	}
	if st.pending != nil {
		return c.fail(codeUnexpected, fmt.Sprintf("UNEXPECTED_FRAME - expected content on channel %d, got a method frame", f.channel), basicPublish)
	}
	return c.method(f.channel, st, newDecoder(f.payload))
}

// handleNoChannel processes a frame on a channel that is not open.
func (c *Conn) handleNoChannel(f frame) (bool, error) {
	if f.typ != frameMethod {
		return c.fail(codeChannelError, fmt.Sprintf("CHANNEL_ERROR - content frame on closed channel %d", f.channel), 0)
	}
	d := newDecoder(f.payload)
	switch id := d.method(); id {
	case channelOpen:
		if c.channelMax != 0 && f.channel > c.channelMax {
			return c.fail(codeChannelError, fmt.Sprintf("CHANNEL_ERROR - channel %d above channel-max %d", f.channel, c.channelMax), id)
		}
		c.channels[f.channel] = &channelState{}
		c.addOpened(f.channel)
		m := newMethod(channelOpenOk)
		m.longstr("") // reserved (channel-id)
		return c.reply(f.channel, m)
	case channelClose:
		return c.reply(f.channel, newMethod(channelCloseOk))
	case channelCloseOk:
		return false, nil
	default:
		return c.fail(codeChannelError, fmt.Sprintf("CHANNEL_ERROR - expected 'channel.open' on channel %d, got %v", f.channel, id), id)
	}
}

// method auto-answers a method on an open channel, or starts assembling a
// basic.publish.
func (c *Conn) method(channel uint16, st *channelState, d *decoder) (bool, error) {
	id := d.method()
	var res *encoder // reply, unless the client asked for nowait
	switch id {
	case channelOpen:
		return c.fail(codeChannelError, fmt.Sprintf("CHANNEL_ERROR - second 'channel.open' seen on channel %d", channel), id)
	case channelClose:
		delete(c.channels, channel)
		res = newMethod(channelCloseOk)
	case channelCloseOk, channelFlowOk:
		// Unsolicited; nothing to do.
	case channelFlow:
		active := d.bit()
		res = newMethod(channelFlowOk)
		res.bit(active)

	case exchangeDeclare:
		d.short()    // reserved
		d.shortstr() // exchange
		d.shortstr() // type
		d.bit()      // passive
		d.bit()      // durable
		d.bit()      // auto-delete
		d.bit()      // internal
		nowait := d.bit()
		d.table()
		res = unlessNowait(nowait, exchangeDeclareOk)
	case exchangeDelete:
		d.short()
		d.shortstr()
		d.bit() // if-unused
		res = unlessNowait(d.bit(), exchangeDeleteOk)
	case exchangeBind, exchangeUnbind:
		d.short()
		d.shortstr() // destination
		d.shortstr() // source
		d.shortstr() // routing-key
		nowait := d.bit()
		d.table()
		ok := exchangeBindOk
		if id == exchangeUnbind {
			ok = exchangeUnbindOk
		}
		res = unlessNowait(nowait, ok)

	case queueDeclare:
		d.short()
		name := d.shortstr()
		d.bit() // passive
		d.bit() // durable
		d.bit() // exclusive
		d.bit() // auto-delete
		nowait := d.bit()
		d.table()
		if name == "" {
			name = c.srv.generate("amq.gen-")
		}
		if !nowait {
			res = newMethod(queueDeclareOk)
			res.shortstr(name)
			res.long(0) // message-count
			res.long(0) // consumer-count
		}
	case queueBind:
		d.short()
		d.shortstr() // queue
		d.shortstr() // exchange
		d.shortstr() // routing-key
		nowait := d.bit()
		d.table()
		res = unlessNowait(nowait, queueBindOk)
	case queueUnbind:
		d.short()
		d.shortstr()
		d.shortstr()
		d.shortstr()
		d.table()
		res = newMethod(queueUnbindOk)
	case queuePurge:
		d.short()
		d.shortstr()
		if !d.bit() {
			res = newMethod(queuePurgeOk)
			res.long(0)
		}
	case queueDelete:
		d.short()
		d.shortstr()
		d.bit() // if-unused
		d.bit() // if-empty
		if !d.bit() {
			res = newMethod(queueDeleteOk)
			res.long(0)
		}

	case basicQos:
		d.long()  // prefetch-size
		d.short() // prefetch-count
		d.bit()   // global
		res = newMethod(basicQosOk)
	case basicConsume:
		d.short()
		d.shortstr() // queue
		tag := d.shortstr()
		d.bit() // no-local
		d.bit() // no-ack
		d.bit() // exclusive
		nowait := d.bit()
		d.table()
		if tag == "" {
			tag = c.srv.generate("amq.ctag-")
		}
		if !nowait {
			res = newMethod(basicConsumeOk)
			res.shortstr(tag)
		}
	case basicCancel:
		tag := d.shortstr()
		if !d.bit() {
			res = newMethod(basicCancelOk)
			res.shortstr(tag)
		}
	case basicAck, basicNack, basicReject, basicRecoverAsync:
		// Consumer acknowledgements: the fake never delivers, so nothing to settle.
	case basicRecover:
		d.bit()
		res = newMethod(basicRecoverOk)
	case basicPublish:
		d.short()
		p := &Publish{Channel: channel, Exchange: d.shortstr(), Key: d.shortstr(), Mandatory: d.bit()}
		d.bit() // immediate
		if st.confirm {
			p.Tag = st.nextTag
			st.nextTag++
		}
		st.pending, st.haveHeader, st.bodySize = p, false, 0

	case confirmSelect:
		nowait := d.bit()
		if !st.confirm {
			st.confirm, st.nextTag = true, 1
		}
		res = unlessNowait(nowait, confirmSelectOk)

	case txSelect:
		res = newMethod(txSelectOk)
	case txCommit:
		res = newMethod(txCommitOk)
	case txRollback:
		res = newMethod(txRollbackOk)

	default:
		return c.fail(codeNotImplemented, fmt.Sprintf("NOT_IMPLEMENTED - amqpfake does not implement method %v", id), id)
	}
	if d.err != nil {
		return c.fail(codeSyntaxError, fmt.Sprintf("SYNTAX_ERROR - method %v: %v", id, d.err), id)
	}
	if res == nil {
		return false, nil
	}
	return c.reply(channel, res)
}

// unlessNowait returns the empty-argument reply id, or nil when nowait.
func unlessNowait(nowait bool, id methodID) *encoder {
	if nowait {
		return nil
	}
	return newMethod(id)
}

// contentHeader handles the content header that follows a basic.publish.
func (c *Conn) contentHeader(f frame, st *channelState) (bool, error) {
	if st.pending == nil || st.haveHeader {
		return c.fail(codeUnexpected, fmt.Sprintf("UNEXPECTED_FRAME - unexpected content header on channel %d", f.channel), 0)
	}
	h, err := decodeContentHeader(f.payload)
	if err != nil {
		return c.fail(codeFrameError, "FRAME_ERROR - "+err.Error(), basicPublish)
	}
	if h.class != classBasic {
		return c.fail(codeFrameError, fmt.Sprintf("FRAME_ERROR - content header class %d, want %d", h.class, classBasic), basicPublish)
	}
	p := st.pending
	p.MessageID = h.props.MessageID
	p.ContentType = h.props.ContentType
	p.AppID = h.props.AppID
	p.Headers = h.props.Headers
	st.haveHeader, st.bodySize = true, h.bodySize
	if h.bodySize == 0 {
		p.Body = []byte{}
		c.complete(st)
		return false, nil
	}
	p.Body = make([]byte, 0, min(h.bodySize, 1<<20))
	return false, nil
}

// contentBody handles one body frame of a basic.publish.
func (c *Conn) contentBody(f frame, st *channelState) (bool, error) {
	if st.pending == nil || !st.haveHeader {
		return c.fail(codeUnexpected, fmt.Sprintf("UNEXPECTED_FRAME - unexpected content body on channel %d", f.channel), 0)
	}
	p := st.pending
	if uint64(len(p.Body))+uint64(len(f.payload)) > st.bodySize {
		return c.fail(codeFrameError, fmt.Sprintf("FRAME_ERROR - body exceeds the %d octets its header announced", st.bodySize), basicPublish)
	}
	p.Body = append(p.Body, f.payload...)
	if uint64(len(p.Body)) == st.bodySize {
		c.complete(st)
	}
	return false, nil
}

// complete hands the assembled publish to the script.
func (c *Conn) complete(st *channelState) {
	c.addPublish(*st.pending)
	st.pending, st.haveHeader, st.bodySize = nil, false, 0
}
