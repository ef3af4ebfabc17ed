package amqp10

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Frame types.
const (
	FrameAMQP uint8 = 0
	FrameSASL uint8 = 1
)

// Protocol IDs of the protocol header.
const (
	ProtoAMQP uint8 = 0
	ProtoTLS  uint8 = 2
	ProtoSASL uint8 = 3
)

// MinMaxFrameSize is the smallest max-frame-size a peer may advertise.
const MinMaxFrameSize = 512

// FrameHeaderSize is the size of the fixed frame header.
const FrameHeaderSize = 8

// ProtocolHeader is the 8-byte header that opens each protocol layer.
type ProtocolHeader struct {
	ID                     uint8
	Major, Minor, Revision uint8
}

// Bytes returns the wire form "AMQP" id major minor revision.
func (h ProtocolHeader) Bytes() []byte {
	return []byte{'A', 'M', 'Q', 'P', h.ID, h.Major, h.Minor, h.Revision}
}

// ErrBadProtocolHeader means the peer did not send an AMQP protocol header.
var ErrBadProtocolHeader = errors.New("amqp10: bad protocol header")

// ParseProtocolHeader parses 8 bytes into a protocol header. Anything that
// does not start with "AMQP" is ErrBadProtocolHeader.
func ParseProtocolHeader(b []byte) (ProtocolHeader, error) {
	if len(b) != 8 || string(b[:4]) != "AMQP" {
		return ProtocolHeader{}, fmt.Errorf("%w: % x", ErrBadProtocolHeader, b)
	}
	return ProtocolHeader{ID: b[4], Major: b[5], Minor: b[6], Revision: b[7]}, nil
}

// ReadProtocolHeader reads and parses a protocol header from r.
func ReadProtocolHeader(r io.Reader) (ProtocolHeader, error) {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return ProtocolHeader{}, fmt.Errorf("reading protocol header: %w", err)
	}
	return ParseProtocolHeader(b[:])
}

// Frame is a decoded frame. A nil Body is an empty (heartbeat) frame.
type Frame struct {
	Type    uint8
	Channel uint16
	Body    Body
	Payload []byte // transfer payload, otherwise empty
}

// AppendFrame appends the encoding of a frame to dst. A nil body gives an
// empty frame.
func AppendFrame(dst []byte, typ uint8, channel uint16, body Body, payload []byte) ([]byte, error) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, 2, typ, byte(channel>>8), byte(channel))
	if body != nil {
		var err error
		if dst, err = body.AppendAMQP(dst); err != nil {
			return dst[:start], err
		}
		dst = append(dst, payload...)
	}
	size := len(dst) - start
	if uint64(size) > 0xffffffff {
		return dst[:start], fmt.Errorf("%w: frame of %d bytes", ErrTooLarge, size)
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(size))
	return dst, nil
}

// FrameError is a framing failure: the byte stream can no longer be
// trusted and the connection must be closed (with amqp:connection:framing-error
// or amqp:decode-error as Condition says).
type FrameError struct {
	Condition Symbol
	Err       error
}

// Error implements error.
func (e *FrameError) Error() string { return fmt.Sprintf("%s: %v", e.Condition, e.Err) }

// Unwrap returns the underlying error.
func (e *FrameError) Unwrap() error { return e.Err }

// FrameReader reads size-checked frames from a stream.
type FrameReader struct {
	r io.Reader
	// MaxFrameSize is the largest frame accepted, header included. It may be
	// changed between reads (it grows once open is negotiated).
	MaxFrameSize uint32
	hdr          [FrameHeaderSize]byte
}

// NewFrameReader returns a reader accepting frames up to maxFrameSize bytes.
func NewFrameReader(r io.Reader, maxFrameSize uint32) *FrameReader {
	return &FrameReader{r: r, MaxFrameSize: maxFrameSize}
}

// ReadRaw reads one frame and returns its type, channel and body bytes
// (after the extended header). Errors from the stream are returned as is;
// malformed headers are *FrameError.
func (fr *FrameReader) ReadRaw() (typ uint8, channel uint16, body []byte, err error) {
	if _, err = io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return 0, 0, nil, err
	}
	size := binary.BigEndian.Uint32(fr.hdr[0:4])
	doff := uint32(fr.hdr[4])
	typ = fr.hdr[5]
	channel = binary.BigEndian.Uint16(fr.hdr[6:8])
	switch {
	case size < FrameHeaderSize:
		return 0, 0, nil, &FrameError{ErrCondFramingError, fmt.Errorf("%w: frame size %d below header size", ErrInvalid, size)}
	case size > fr.MaxFrameSize:
		return 0, 0, nil, &FrameError{ErrCondFramingError, fmt.Errorf("%w: frame of %d bytes exceeds max-frame-size %d", ErrTooLarge, size, fr.MaxFrameSize)}
	case doff < 2 || doff*4 > size:
		return 0, 0, nil, &FrameError{ErrCondFramingError, fmt.Errorf("%w: data offset %d in frame of %d bytes", ErrInvalid, doff, size)}
	case typ != FrameAMQP && typ != FrameSASL:
		return 0, 0, nil, &FrameError{ErrCondFramingError, fmt.Errorf("%w: frame type 0x%02x", ErrInvalid, typ)}
	}
	buf := make([]byte, size-FrameHeaderSize)
	if _, err = io.ReadFull(fr.r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, 0, nil, err
	}
	return typ, channel, buf[doff*4-FrameHeaderSize:], nil
}

// ReadFrame reads and decodes one frame. Undecodable bodies are reported
// as *FrameError with condition amqp:decode-error.
func (fr *FrameReader) ReadFrame() (Frame, error) {
	typ, ch, body, err := fr.ReadRaw()
	if err != nil {
		return Frame{}, err
	}
	return DecodeFrame(typ, ch, body)
}

// DecodeFrame decodes a frame body read by ReadRaw.
func DecodeFrame(typ uint8, channel uint16, body []byte) (Frame, error) {
	f := Frame{Type: typ, Channel: channel}
	if len(body) == 0 {
		return f, nil
	}
	b, payload, err := DecodeBody(body)
	if err != nil {
		return Frame{}, &FrameError{ErrCondDecodeError, err}
	}
	switch b.(type) {
	case *SASLMechanisms, *SASLInit, *SASLChallenge, *SASLResponse, *SASLOutcome:
		if typ != FrameSASL {
			return Frame{}, &FrameError{ErrCondFramingError, fmt.Errorf("%w: SASL body in AMQP frame", ErrInvalid)}
		}
	default:
		if typ != FrameAMQP {
			return Frame{}, &FrameError{ErrCondFramingError, fmt.Errorf("%w: AMQP body in SASL frame", ErrInvalid)}
		}
	}
	f.Body, f.Payload = b, payload
	return f, nil
}
