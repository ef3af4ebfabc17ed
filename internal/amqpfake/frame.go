package amqpfake

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// Frame types and the frame-end octet (AMQP 0-9-1 section 4.2.3).
const (
	frameMethod    = 1
	frameHeader    = 2
	frameBody      = 3
	frameHeartbeat = 8
	frameEnd       = 0xCE

	// frameOverhead is the number of octets a frame adds around its payload:
	// type(1) channel(2) size(4) ... frame-end(1).
	frameOverhead = 8

	// maxReadFrame bounds the payload size accepted from a client so that a
	// garbled size field cannot make the server allocate gigabytes.
	maxReadFrame = 64 << 20
)

// frame is one AMQP frame as it travels on the wire.
type frame struct {
	typ     byte
	channel uint16
	payload []byte
}

// readFrame reads one complete frame from r and checks its frame-end octet.
func readFrame(r io.Reader) (frame, error) {
	var hdr [7]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return frame{}, err
	}
	f := frame{typ: hdr[0], channel: binary.BigEndian.Uint16(hdr[1:3])}
	size := binary.BigEndian.Uint32(hdr[3:7])
	if size > maxReadFrame {
		return frame{}, fmt.Errorf("amqpfake: frame of %d octets exceeds %d", size, maxReadFrame)
	}
	buf := make([]byte, int(size)+1)
	if _, err := io.ReadFull(r, buf); err != nil {
		return frame{}, err
	}
	if buf[size] != frameEnd {
		return frame{}, fmt.Errorf("amqpfake: bad frame-end octet 0x%02x", buf[size])
	}
	f.payload = buf[:size]
	return f, nil
}

// appendFrame appends the wire form of a frame to dst.
func appendFrame(dst []byte, typ byte, channel uint16, payload []byte) []byte {
	dst = append(dst, typ)
	dst = binary.BigEndian.AppendUint16(dst, channel)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)))
	dst = append(dst, payload...)
	return append(dst, frameEnd)
}

// methodID identifies a method by class-id (high 16 bits) and method-id (low 16 bits).
type methodID uint32

// The methods the server reads or writes.
const (
	connectionStart     methodID = 10<<16 | 10
	connectionStartOk   methodID = 10<<16 | 11
	connectionTune      methodID = 10<<16 | 30
	connectionTuneOk    methodID = 10<<16 | 31
	connectionOpen      methodID = 10<<16 | 40
	connectionOpenOk    methodID = 10<<16 | 41
	connectionClose     methodID = 10<<16 | 50
	connectionCloseOk   methodID = 10<<16 | 51
	connectionBlocked   methodID = 10<<16 | 60
	connectionUnblocked methodID = 10<<16 | 61
	connectionUpdSecret methodID = 10<<16 | 70
	connectionUpdSecOk  methodID = 10<<16 | 71

	channelOpen    methodID = 20<<16 | 10
	channelOpenOk  methodID = 20<<16 | 11
	channelFlow    methodID = 20<<16 | 20
	channelFlowOk  methodID = 20<<16 | 21
	channelClose   methodID = 20<<16 | 40
	channelCloseOk methodID = 20<<16 | 41

	exchangeDeclare   methodID = 40<<16 | 10
	exchangeDeclareOk methodID = 40<<16 | 11
	exchangeDelete    methodID = 40<<16 | 20
	exchangeDeleteOk  methodID = 40<<16 | 21
	exchangeBind      methodID = 40<<16 | 30
	exchangeBindOk    methodID = 40<<16 | 31
	exchangeUnbind    methodID = 40<<16 | 40
	exchangeUnbindOk  methodID = 40<<16 | 51

	queueDeclare   methodID = 50<<16 | 10
	queueDeclareOk methodID = 50<<16 | 11
	queueBind      methodID = 50<<16 | 20
	queueBindOk    methodID = 50<<16 | 21
	queuePurge     methodID = 50<<16 | 30
	queuePurgeOk   methodID = 50<<16 | 31
	queueDelete    methodID = 50<<16 | 40
	queueDeleteOk  methodID = 50<<16 | 41
	queueUnbind    methodID = 50<<16 | 50
	queueUnbindOk  methodID = 50<<16 | 51

	basicQos          methodID = 60<<16 | 10
	basicQosOk        methodID = 60<<16 | 11
	basicConsume      methodID = 60<<16 | 20
	basicConsumeOk    methodID = 60<<16 | 21
	basicCancel       methodID = 60<<16 | 30
	basicCancelOk     methodID = 60<<16 | 31
	basicPublish      methodID = 60<<16 | 40
	basicReturn       methodID = 60<<16 | 50
	basicAck          methodID = 60<<16 | 80
	basicReject       methodID = 60<<16 | 90
	basicRecoverAsync methodID = 60<<16 | 100
	basicRecover      methodID = 60<<16 | 110
	basicRecoverOk    methodID = 60<<16 | 111
	basicNack         methodID = 60<<16 | 120

	confirmSelect   methodID = 85<<16 | 10
	confirmSelectOk methodID = 85<<16 | 11

	txSelect     methodID = 90<<16 | 10
	txSelectOk   methodID = 90<<16 | 11
	txCommit     methodID = 90<<16 | 20
	txCommitOk   methodID = 90<<16 | 21
	txRollback   methodID = 90<<16 | 30
	txRollbackOk methodID = 90<<16 | 31
)

// classBasic is the class-id of the basic class, used in content headers.
const classBasic = 60

func (m methodID) class() uint16  { return uint16(m >> 16) }
func (m methodID) method() uint16 { return uint16(m) }

// String renders the method as "class.method-id" numbers, e.g. "60.40".
func (m methodID) String() string { return fmt.Sprintf("%d.%d", m.class(), m.method()) }

// encoder builds method arguments and content headers. Consecutive bit
// arguments are packed into one octet, least significant bit first, as the
// spec requires; any other argument ends the packing.
type encoder struct {
	b     []byte
	nbits uint // bits used in the last octet of b when packing bits; 0 otherwise
}

// newMethod starts the payload of a method frame.
func newMethod(id methodID) *encoder {
	e := &encoder{b: make([]byte, 0, 64)}
	e.short(id.class())
	e.short(id.method())
	return e
}

func (e *encoder) endBits() { e.nbits = 0 }

func (e *encoder) bit(v bool) {
	if e.nbits == 0 || e.nbits == 8 {
		e.b = append(e.b, 0)
		e.nbits = 0
	}
	if v {
		e.b[len(e.b)-1] |= 1 << e.nbits
	}
	e.nbits++
}

func (e *encoder) octet(v uint8) { e.endBits(); e.b = append(e.b, v) }
func (e *encoder) short(v uint16) {
	e.endBits()
	e.b = binary.BigEndian.AppendUint16(e.b, v)
}
func (e *encoder) long(v uint32) {
	e.endBits()
	e.b = binary.BigEndian.AppendUint32(e.b, v)
}
func (e *encoder) longlong(v uint64) {
	e.endBits()
	e.b = binary.BigEndian.AppendUint64(e.b, v)
}

// shortstr truncates strings longer than 255 octets rather than corrupting
// the frame; the fake server only writes strings it was given by tests.
func (e *encoder) shortstr(s string) {
	e.endBits()
	if len(s) > math.MaxUint8 {
		s = s[:math.MaxUint8]
	}
	e.b = append(e.b, uint8(len(s)))
	e.b = append(e.b, s...)
}

func (e *encoder) longstr(s string) {
	e.endBits()
	e.b = binary.BigEndian.AppendUint32(e.b, uint32(len(s)))
	e.b = append(e.b, s...)
}

// errShort reports a method argument or property list that ends early.
type errShort struct{ what string }

func (e errShort) Error() string { return "amqpfake: truncated " + e.what }

// decoder reads method arguments, content headers and field tables. The
// first error sticks: later reads return zero values and err keeps it.
type decoder struct {
	b     []byte
	off   int
	err   error
	bits  byte
	nbits uint // bits consumed from bits; 8 means "read a new octet next"
}

func newDecoder(b []byte) *decoder { return &decoder{b: b, nbits: 8} }

func (d *decoder) take(n int, what string) []byte {
	d.nbits = 8
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b)-d.off < n {
		d.err = errShort{what}
		d.off = len(d.b)
		return nil
	}
	p := d.b[d.off : d.off+n]
	d.off += n
	return p
}

func (d *decoder) remaining() int { return len(d.b) - d.off }

func (d *decoder) bit() bool {
	if d.nbits >= 8 {
		p := d.take(1, "bit field")
		if p == nil {
			return false
		}
		d.bits, d.nbits = p[0], 0
	}
	v := d.bits&(1<<d.nbits) != 0
	d.nbits++
	return v
}

func (d *decoder) octet() uint8 {
	if p := d.take(1, "octet"); p != nil {
		return p[0]
	}
	return 0
}

func (d *decoder) short() uint16 {
	if p := d.take(2, "short"); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (d *decoder) long() uint32 {
	if p := d.take(4, "long"); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (d *decoder) longlong() uint64 {
	if p := d.take(8, "long long"); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

func (d *decoder) shortstr() string {
	n := d.octet()
	return string(d.take(int(n), "short string"))
}

func (d *decoder) longstr() string {
	n := d.long()
	if n > math.MaxInt32 {
		d.take(-1, "long string")
		return ""
	}
	return string(d.take(int(n), "long string"))
}

// method reads the class-id and method-id that open a method frame payload.
func (d *decoder) method() methodID {
	class := d.short()
	method := d.short()
	return methodID(uint32(class)<<16 | uint32(method))
}
