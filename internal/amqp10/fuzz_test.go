package amqp10

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

const fuzzMaxFrame = 64 << 10

func seedFrames(t testing.TB) [][]byte {
	msg := &Message{
		Header:                &Header{Durable: true},
		MessageAnnotations:    Map{{Key: Symbol("x-opt-partition-key"), Value: "k"}},
		Properties:            &Properties{MessageID: "m1", ReplyTo: "r"},
		ApplicationProperties: Map{{Key: "operation", Value: "put-token"}, {Key: "expiration", Value: int64(5)}},
		Data:                  [][]byte{[]byte("hello")},
	}
	payload, err := msg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	bodies := []struct {
		typ  uint8
		b    Body
		data []byte
	}{
		{FrameSASL, &SASLInit{Mechanism: "ANONYMOUS", InitialResponse: []byte("anonymous")}, nil},
		{FrameAMQP, &Open{ContainerID: "c", MaxFrameSize: 65536, ChannelMax: 65535, IdleTimeout: 30000, Properties: Map{{Key: Symbol("product"), Value: "x"}}}, nil},
		{FrameAMQP, &Begin{NextOutgoingID: 0, IncomingWindow: 5000, OutgoingWindow: 5000, HandleMax: 10}, nil},
		{FrameAMQP, &Attach{Name: "n", Handle: 0, Role: RoleReceiver, Source: &Source{Address: "hub/ConsumerGroups/$Default/Partitions/0",
			Filter: Map{{Key: Symbol("apache.org:selector-filter:string"), Value: Described{Descriptor: uint64(0x468C00000004), Value: "amqp.annotation.x-opt-offset > '-1'"}}}},
			Target: &Target{Address: "t"}, Properties: Map{{Key: Symbol("com.microsoft:epoch"), Value: int64(1)}}}, nil},
		{FrameAMQP, &Flow{IncomingWindow: 1, Handle: Ptr(uint32(0)), LinkCredit: Ptr(uint32(300))}, nil},
		{FrameAMQP, &Transfer{Handle: 0, DeliveryID: Ptr(uint32(0)), DeliveryTag: []byte{0}, MessageFormat: Ptr(uint32(0x80013700))}, payload},
		{FrameAMQP, &Disposition{Role: RoleReceiver, First: 0, Settled: true, State: &Rejected{Error: &Error{Condition: "x"}}}, nil},
		{FrameAMQP, &Detach{Handle: 0, Closed: true, Error: &Error{Condition: ErrCondStolen, Description: "d"}}, nil},
		{FrameAMQP, &Close{Error: &Error{Condition: ErrCondConnectionForced}}, nil},
		{FrameAMQP, nil, nil},
	}
	var out [][]byte
	var all []byte
	for _, b := range bodies {
		raw, err := AppendFrame(nil, b.typ, 0, b.b, b.data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, raw)
		all = append(all, raw...)
	}
	return append(out, all)
}

// FuzzFrameDecoder feeds arbitrary bytes to the frame reader and decodes
// every frame body and transfer payload. Malformed, truncated and oversize
// input must give an error, never a panic; whatever decodes must re-encode
// to bytes that decode to the same encoding again.
func FuzzFrameDecoder(f *testing.F) {
	for _, s := range seedFrames(f) {
		f.Add(s)
	}
	f.Add([]byte("\x00\x00\x00\x10\x02\x00\x00\x00\x00\x53\x10\xd0\xff\xff\xff\xff\xff\xff\xff\xff"))
	f.Add([]byte("\xff\xff\xff\xff\x02\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := NewFrameReader(bytes.NewReader(data), fuzzMaxFrame)
		for i := 0; i < 64; i++ {
			frame, err := fr.ReadFrame()
			if err != nil {
				var fe *FrameError
				if !errors.As(err, &fe) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error kind %T: %v", err, err)
				}
				return
			}
			if frame.Body == nil {
				continue
			}
			enc, err := AppendFrame(nil, frame.Type, frame.Channel, frame.Body, frame.Payload)
			if err != nil {
				t.Fatalf("re-encode %T: %v", frame.Body, err)
			}
			again, err := NewFrameReader(bytes.NewReader(enc), uint32(len(enc))).ReadFrame()
			if err != nil {
				t.Fatalf("decode of re-encoded %T: %v\n% x", frame.Body, err, enc)
			}
			enc2, err := AppendFrame(nil, again.Type, again.Channel, again.Body, again.Payload)
			if err != nil || !bytes.Equal(enc, enc2) {
				t.Fatalf("unstable encoding of %T: %v\n% x\n% x", frame.Body, err, enc, enc2)
			}
			if _, ok := frame.Body.(*Transfer); ok && len(frame.Payload) > 0 {
				if m, err := UnmarshalMessage(frame.Payload); err == nil {
					if _, err := m.Marshal(); err != nil {
						t.Fatalf("re-encode message: %v", err)
					}
				}
			}
		}
	})
}

// FuzzValue decodes arbitrary bytes as one AMQP value; anything that
// decodes must re-encode stably.
func FuzzValue(f *testing.F) {
	for _, s := range []string{"40", "c0 06 02 52 01 a1 01 61", "e0 0d 02 b3 00000001 61 00000002 6263", "00 53 77 a1 01 78", "d1 00000007 00000002 a1 00 40", "f0 00000005 ffffffff 40"} {
		f.Add(unhex(f, s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := Unmarshal(data)
		if err != nil {
			return
		}
		enc, err := AppendValue(nil, v)
		if err != nil {
			// Arrays of small-form codes (e.g. smalluint holding 0) cannot
			// always be re-encoded in the same constructor.
			if errors.Is(err, ErrUnsupported) || errors.Is(err, ErrTooLarge) {
				return
			}
			t.Fatalf("re-encode %#v: %v", v, err)
		}
		v2, err := Unmarshal(enc)
		if err != nil {
			t.Fatalf("decode of re-encoded value: %v\n% x", err, enc)
		}
		enc2, err := AppendValue(nil, v2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("unstable encoding: %v\n% x\n% x", err, enc, enc2)
		}
	})
}
