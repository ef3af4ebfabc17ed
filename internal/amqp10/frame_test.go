package amqp10

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"
)

func roundTripBody(t *testing.T, b Body) Body {
	t.Helper()
	typ := FrameAMQP
	switch b.(type) {
	case *SASLMechanisms, *SASLInit, *SASLChallenge, *SASLResponse, *SASLOutcome:
		typ = FrameSASL
	}
	var payload []byte
	if _, ok := b.(*Transfer); ok {
		payload = []byte("payload")
	}
	raw, err := AppendFrame(nil, typ, 7, b, payload)
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewFrameReader(bytes.NewReader(raw), 1<<20).ReadFrame()
	if err != nil {
		t.Fatalf("%T: %v", b, err)
	}
	if f.Channel != 7 || f.Type != typ {
		t.Fatalf("header: %+v", f)
	}
	if _, ok := b.(*Transfer); ok && string(f.Payload) != "payload" {
		t.Fatalf("payload %q", f.Payload)
	}
	return f.Body
}

// TestPerformativeRoundTrip encodes every performative and SASL frame with
// all fields set and decodes it back.
func TestPerformativeRoundTrip(t *testing.T) {
	errV := &Error{Condition: ErrCondStolen, Description: "gone", Info: Map{{Key: Symbol("k"), Value: "v"}}}
	bodies := []Body{
		&Open{ContainerID: "c", Hostname: "h", MaxFrameSize: 65536, ChannelMax: 10, IdleTimeout: 30000,
			OutgoingLocales: []Symbol{"en"}, IncomingLocales: []Symbol{"de"}, OfferedCapabilities: []Symbol{"a"},
			DesiredCapabilities: []Symbol{"b", "c"}, Properties: Map{{Key: Symbol("product"), Value: "x"}}},
		&Begin{RemoteChannel: Ptr(uint16(3)), NextOutgoingID: 1, IncomingWindow: 5000, OutgoingWindow: 100, HandleMax: 7,
			OfferedCapabilities: []Symbol{"x"}, DesiredCapabilities: []Symbol{"y"}, Properties: Map{{Key: Symbol("p"), Value: true}}},
		&Attach{Name: "l", Handle: 2, Role: RoleReceiver, SndSettleMode: Ptr(SndSettled), RcvSettleMode: Ptr(RcvSecond),
			Source: &Source{Address: "hub/ConsumerGroups/$Default/Partitions/0", Durable: 2, ExpiryPolicy: "never", Timeout: 5,
				Dynamic: true, DynamicNodeProperties: Map{}, DistributionMode: "copy",
				Filter:         Map{{Key: Symbol("f"), Value: Described{Descriptor: uint64(0x468C00000004), Value: "x > '1'"}}},
				DefaultOutcome: Described{Descriptor: DescAccepted, Value: List{}}, Outcomes: []Symbol{"amqp:accepted:list"}, Capabilities: []Symbol{"cap"}},
			Target:    &Target{Address: "t", Durable: 1, ExpiryPolicy: "link-detach", Timeout: 9, Dynamic: true, DynamicNodeProperties: Map{}, Capabilities: []Symbol{"tc"}},
			Unsettled: Map{{Key: []byte{1}, Value: nil}}, IncompleteUnsettled: true, InitialDeliveryCount: Ptr(uint32(0)),
			MaxMessageSize: 1 << 20, OfferedCapabilities: []Symbol{"o"}, DesiredCapabilities: []Symbol{"com.microsoft:georeplication"},
			Properties: Map{{Key: Symbol("com.microsoft:epoch"), Value: int64(3)}}},
		&Flow{NextIncomingID: Ptr(uint32(4)), IncomingWindow: 5, NextOutgoingID: 6, OutgoingWindow: 7, Handle: Ptr(uint32(0)),
			DeliveryCount: Ptr(uint32(8)), LinkCredit: Ptr(uint32(300)), Available: Ptr(uint32(1)), Drain: true, Echo: true, Properties: Map{}},
		&Transfer{Handle: 1, DeliveryID: Ptr(uint32(9)), DeliveryTag: []byte("tag"), MessageFormat: Ptr(uint32(0x80013700)),
			Settled: Ptr(true), More: true, RcvSettleMode: Ptr(RcvFirst), State: &Received{SectionNumber: 1, SectionOffset: 2},
			Resume: true, Aborted: true, Batchable: true},
		&Disposition{Role: RoleReceiver, First: 1, Last: Ptr(uint32(5)), Settled: true, State: &Rejected{Error: errV}, Batchable: true},
		&Disposition{Role: RoleSender, First: 1, State: &Accepted{}},
		&Disposition{Role: RoleSender, First: 1, State: &Released{}},
		&Disposition{Role: RoleSender, First: 1, State: &Modified{DeliveryFailed: true, UndeliverableHere: true, MessageAnnotations: Map{}}},
		&Detach{Handle: 4, Closed: true, Error: errV},
		&End{Error: errV},
		&End{},
		&Close{Error: &Error{Condition: ErrCondConnectionForced}},
		&SASLMechanisms{Mechanisms: []Symbol{"ANONYMOUS", "PLAIN"}},
		&SASLInit{Mechanism: "PLAIN", InitialResponse: []byte("\x00u\x00p"), Hostname: "h"},
		&SASLChallenge{Challenge: []byte("c")},
		&SASLResponse{Response: []byte("r")},
		&SASLOutcome{Result: SASLAuth, AdditionalData: []byte("d")},
	}
	for _, b := range bodies {
		got := roundTripBody(t, b)
		if !reflect.DeepEqual(got, b) {
			t.Errorf("%T:\n got %#v\nwant %#v", b, got, b)
		}
	}
}

// TestPerformativeGolden pins exact bytes for a few frames, derived by hand
// from the specification.
func TestPerformativeGolden(t *testing.T) {
	cases := []struct {
		name string
		typ  uint8
		ch   uint16
		body Body
		hex  string
	}{
		{"empty frame", FrameAMQP, 0, nil, "00000008 02 00 0000"},
		{"open", FrameAMQP, 0, &Open{ContainerID: "c", MaxFrameSize: 512, ChannelMax: 1},
			"0000001a 02 00 0000 00 53 10 c0 0d 04 a1 01 63 40 70 00000200 60 0001"},
		{"begin", FrameAMQP, 1, &Begin{RemoteChannel: Ptr(uint16(0)), NextOutgoingID: 1, IncomingWindow: 5000, OutgoingWindow: 5000, HandleMax: 255},
			"0000001f 02 00 0001 00 53 11 c0 12 05 60 0000 52 01 70 00001388 70 00001388 52 ff"},
		{"flow", FrameAMQP, 0, &Flow{NextIncomingID: Ptr(uint32(0)), IncomingWindow: 1, NextOutgoingID: 2, OutgoingWindow: 3, Handle: Ptr(uint32(0)), DeliveryCount: Ptr(uint32(0)), LinkCredit: Ptr(uint32(300))},
			"0000001c 02 00 0000 00 53 13 c0 0f 07 43 52 01 52 02 52 03 43 43 70 0000012c"},
		{"transfer", FrameAMQP, 0, &Transfer{Handle: 0, DeliveryID: Ptr(uint32(1)), DeliveryTag: []byte{1}, MessageFormat: Ptr(uint32(0)), Settled: Ptr(true)},
			"00000016 02 00 0000 00 53 14 c0 09 05 43 52 01 a0 01 01 43 41"},
		{"disposition accepted", FrameAMQP, 0, &Disposition{Role: RoleReceiver, First: 3, Settled: true, State: &Accepted{}},
			"00000017 02 00 0000 00 53 15 c0 0a 05 41 52 03 40 41 00 53 24 45"},
		{"detach stolen", FrameAMQP, 0, &Detach{Handle: 0, Closed: true, Error: &Error{Condition: "amqp:link:stolen"}},
			"00000028 02 00 0000 00 53 16 c0 1b 03 43 41 00 53 1d c0 13 01 a3 10 616d71703a6c696e6b3a73746f6c656e"},
		{"close", FrameAMQP, 0, &Close{}, "0000000c 02 00 0000 00 53 18 45"},
		{"sasl-outcome", FrameSASL, 0, &SASLOutcome{Result: SASLOk}, "00000010 02 01 0000 00 53 44 c0 03 01 50 00"},
		// attach of a receiver: name "r", handle 1, role receiver (true),
		// snd-settle-mode settled (ubyte 1), rcv-settle-mode first (ubyte 0),
		// source 0x28 [address "q", 6 nulls, filter {f: 0x468C00000004 "x"}]
		// (its trailing nulls omitted), target 0x29 ["t"], unsettled,
		// incomplete-unsettled and initial-delivery-count null,
		// max-message-size ulong 1 MiB, both capabilities null, properties
		// {e: smalllong 3}; 14 fields in a list8 of 0x4c bytes.
		{"attach receiver", FrameAMQP, 0, &Attach{Name: "r", Handle: 1, Role: RoleReceiver, SndSettleMode: Ptr(SndSettled), RcvSettleMode: Ptr(RcvFirst),
			Source: &Source{Address: "q", Filter: Map{{Key: Symbol("f"), Value: Described{Descriptor: uint64(0x468C00000004), Value: "x"}}}},
			Target: &Target{Address: "t"}, MaxMessageSize: 1 << 20, Properties: Map{{Key: Symbol("e"), Value: int64(3)}}},
			"00000059 02 00 0000 00 53 12 c0 4c 0e a1 01 72 52 01 41 50 01 50 00" +
				" 00 53 28 c0 1d 08 a1 01 71 40 40 40 40 40 40 c1 11 02 a3 01 66 00 80 0000468c00000004 a1 01 78" +
				" 00 53 29 c0 04 01 a1 01 74 40 40 40 80 0000000000100000 40 40 c1 06 02 a3 01 65 55 03"},
		// attach of a sender: handle uint0, role false, settle modes and
		// source null, target ["hub"], unsettled and incomplete-unsettled
		// null, initial-delivery-count uint0, the rest omitted.
		{"attach sender", FrameAMQP, 0, &Attach{Name: "s", Handle: 0, Role: RoleSender, Target: &Target{Address: "hub"}, InitialDeliveryCount: Ptr(uint32(0))},
			"00000024 02 00 0000 00 53 12 c0 17 0a a1 01 73 43 42 40 40 40 00 53 29 c0 06 01 a1 03 687562 40 40 43"},
		{"end", FrameAMQP, 1, &End{}, "0000000c 02 00 0001 00 53 17 45"},
		// end with error 0x1d [condition sym8, description str8].
		{"end window-violation", FrameAMQP, 1, &End{Error: &Error{Condition: ErrCondWindowViolation, Description: "d"}},
			"00000036 02 00 0001 00 53 17 c0 29 01 00 53 1d c0 23 02 a3 1d 616d71703a73657373696f6e3a77696e646f772d76696f6c6174696f6e a1 01 64"},
		// sasl-server-mechanisms as an array8 of sym32 (a single symbol
		// would also be valid; the encoder always writes an array).
		{"sasl-mechanisms", FrameSASL, 0, &SASLMechanisms{Mechanisms: []Symbol{"ANONYMOUS", "PLAIN"}},
			"00000028 02 01 0000 00 53 40 c0 1b 01 e0 18 02 b3 00000009 414e4f4e594d4f5553 00000005 504c41494e"},
		{"sasl-mechanisms one", FrameSASL, 0, &SASLMechanisms{Mechanisms: []Symbol{"PLAIN"}},
			"0000001b 02 01 0000 00 53 40 c0 0e 01 e0 0b 01 b3 00000005 504c41494e"},
		// sasl-init [mechanism sym8, initial-response vbin8, hostname str8].
		{"sasl-init plain", FrameSASL, 0, &SASLInit{Mechanism: "PLAIN", InitialResponse: []byte("\x00u\x00p"), Hostname: "h"},
			"0000001e 02 01 0000 00 53 41 c0 11 03 a3 05 504c41494e a0 04 00750070 a1 01 68"},
		{"sasl-init anonymous", FrameSASL, 0, &SASLInit{Mechanism: "ANONYMOUS"},
			"00000019 02 01 0000 00 53 41 c0 0c 01 a3 09 414e4f4e594d4f5553"},
		{"sasl-challenge", FrameSASL, 0, &SASLChallenge{Challenge: []byte("c")}, "00000011 02 01 0000 00 53 42 c0 04 01 a0 01 63"},
		{"sasl-response", FrameSASL, 0, &SASLResponse{Response: []byte("r")}, "00000011 02 01 0000 00 53 43 c0 04 01 a0 01 72"},
		// The fields are mandatory: no data is an empty binary, not a dropped null.
		{"sasl-challenge empty", FrameSASL, 0, &SASLChallenge{}, "00000010 02 01 0000 00 53 42 c0 03 01 a0 00"},
		{"sasl-response empty", FrameSASL, 0, &SASLResponse{}, "00000010 02 01 0000 00 53 43 c0 03 01 a0 00"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := unhex(t, c.hex)
			got, err := AppendFrame(nil, c.typ, c.ch, c.body, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encode:\n got % x\nwant % x", got, want)
			}
			f, err := NewFrameReader(bytes.NewReader(want), 512).ReadFrame()
			if err != nil {
				t.Fatal(err)
			}
			if c.body == nil {
				if f.Body != nil {
					t.Fatalf("empty frame decoded as %#v", f.Body)
				}
				return
			}
			if !reflect.DeepEqual(f.Body, c.body) {
				t.Fatalf("decode: %#v", f.Body)
			}
		})
	}
}

func TestPerformativeDefaults(t *testing.T) {
	// open with only a container id: max-frame-size and channel-max default.
	raw := unhex(t, "0000000f 02 00 0000 00 53 10 c0 03 01 a1 00")
	raw[3] = byte(len(raw))
	f, err := NewFrameReader(bytes.NewReader(raw), 512).ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	o := f.Body.(*Open)
	if o.MaxFrameSize != 4294967295 || o.ChannelMax != 65535 || o.IdleTimeout != 0 {
		t.Fatalf("defaults: %+v", o)
	}
	// symbolic descriptor
	b, _ := AppendValue(nil, Described{Descriptor: Symbol("amqp:close:list"), Value: List{}})
	body, _, err := DecodeBody(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := body.(*Close); !ok {
		t.Fatalf("symbolic close: %T", body)
	}
	// single symbol for a multiple field
	b, _ = AppendValue(nil, Described{Descriptor: DescSASLMechanisms, Value: List{Symbol("PLAIN")}})
	body, _, err = DecodeBody(b)
	if err != nil || !reflect.DeepEqual(body.(*SASLMechanisms).Mechanisms, []Symbol{"PLAIN"}) {
		t.Fatalf("single symbol: %#v %v", body, err)
	}
}

func TestFrameReaderErrors(t *testing.T) {
	var fe *FrameError
	cases := []struct {
		name string
		hex  string
		max  uint32
		cond Symbol
	}{
		{"too large", "00010000 02 00 0000", 512, ErrCondFramingError},
		{"size below header", "00000004 02 00 0000", 512, ErrCondFramingError},
		{"bad doff", "00000008 01 00 0000", 512, ErrCondFramingError},
		{"doff past end", "0000000c 04 00 0000 00000000", 512, ErrCondFramingError},
		{"bad type", "00000008 02 07 0000", 512, ErrCondFramingError},
		{"garbage body", "0000000a 02 00 0000 ffff", 512, ErrCondDecodeError},
		{"not a performative", "0000000d 02 00 0000 00 53 77 41 40", 512, ErrCondDecodeError},
		{"sasl in amqp frame", "00000010 02 00 0000 00 53 44 c0 03 01 50 00", 512, ErrCondFramingError},
		{"trailing after open", "00000011 02 00 0000 00 53 10 c0 03 01 a1 00 40", 512, ErrCondDecodeError},
		{"missing mandatory", "0000000e 02 00 0000 00 53 12 c0 01 00", 512, ErrCondDecodeError},
		{"wrong field type", "00000010 02 00 0000 00 53 16 c0 03 01 a1 00", 512, ErrCondDecodeError},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewFrameReader(bytes.NewReader(unhex(t, c.hex)), c.max).ReadFrame()
			if !errors.As(err, &fe) || fe.Condition != c.cond {
				t.Fatalf("err = %v, want %s", err, c.cond)
			}
		})
	}
	_, err := NewFrameReader(bytes.NewReader(unhex(t, "00000010 02 00 0000 00")), 512).ReadFrame()
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated frame: %v", err)
	}
	_, err = NewFrameReader(bytes.NewReader(nil), 512).ReadFrame()
	if !errors.Is(err, io.EOF) {
		t.Fatalf("no frame: %v", err)
	}
}

func TestProtocolHeader(t *testing.T) {
	h, err := ReadProtocolHeader(bytes.NewReader([]byte("AMQP\x03\x01\x00\x00")))
	if err != nil || h != (ProtocolHeader{ID: ProtoSASL, Major: 1}) {
		t.Fatalf("%+v %v", h, err)
	}
	if !bytes.Equal(h.Bytes(), []byte("AMQP\x03\x01\x00\x00")) {
		t.Fatal("Bytes")
	}
	if _, err := ReadProtocolHeader(bytes.NewReader([]byte("GET / HTTP/1.1"))); !errors.Is(err, ErrBadProtocolHeader) {
		t.Fatalf("garbage: %v", err)
	}
}

func TestMessageRoundTrip(t *testing.T) {
	now := time.UnixMilli(time.Now().UnixMilli()).UTC()
	m := &Message{
		Header:                &Header{Durable: true, Priority: Ptr(uint8(4)), TTL: 1000, FirstAcquirer: true, DeliveryCount: 2},
		DeliveryAnnotations:   Map{{Key: Symbol("d"), Value: "x"}},
		MessageAnnotations:    Map{{Key: Symbol("x-opt-partition-key"), Value: "pk"}},
		Properties:            &Properties{MessageID: "id", UserID: []byte("u"), To: "to", Subject: "s", ReplyTo: "r", CorrelationID: uint64(5), ContentType: "text/plain", ContentEncoding: "gzip", AbsoluteExpiryTime: now, CreationTime: now, GroupID: "g", GroupSequence: Ptr(uint32(3)), ReplyToGroupID: "rg"},
		ApplicationProperties: Map{{Key: "operation", Value: "READ"}},
		Data:                  [][]byte{[]byte("a"), []byte("b")},
		Footer:                Map{{Key: Symbol("f"), Value: int32(1)}},
	}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Raw) != 8 {
		t.Fatalf("raw sections: %d", len(got.Raw))
	}
	var joined []byte
	for _, r := range got.Raw {
		joined = append(joined, r.Bytes...)
	}
	if !bytes.Equal(joined, b) {
		t.Fatal("raw sections do not cover the message")
	}
	got.Raw = nil
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("got %#v\nwant %#v", got, m)
	}
	v := &Message{Value: "token", HasValue: true}
	b, _ = v.Marshal()
	if !bytes.Equal(b, unhex(t, "00 53 77 a1 05 746f6b656e")) {
		t.Fatalf("amqp-value: % x", b)
	}
	s := &Message{Sequence: []List{{int32(1)}}}
	b, _ = s.Marshal()
	got, err = UnmarshalMessage(b)
	if err != nil || !reflect.DeepEqual(got.Sequence, s.Sequence) {
		t.Fatalf("sequence: %v %v", got, err)
	}
}

func TestMessageErrors(t *testing.T) {
	for _, h := range []string{
		"41",                                  // not described
		"00 53 99 40",                         // unknown section
		"00 53 75 a0 00 00 53 70 45",          // header after data
		"00 53 77 40 00 53 77 40",             // two amqp-value sections
		"00 53 75 a0 00 00 53 77 40",          // data then value
		"00 53 75 41",                         // data holding a bool
		"00 53 72 41",                         // annotations holding a bool
		"00 53 73 c0 03 01 a1 00 00 53 73 45", // two property sections
	} {
		if _, err := UnmarshalMessage(unhex(t, h)); err == nil {
			t.Errorf("%s: no error", h)
		}
	}
}
