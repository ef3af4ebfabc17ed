package amqpfake

import (
	"bufio"
	"context"
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestFieldTableRoundTrip(t *testing.T) {
	in := map[string]any{
		"t": true, "f0": false, "b": int8(-3), "B": uint8(200), "s": int16(-300), "u": uint16(60000),
		"I": int32(-70000), "i": uint32(4000000000), "l": int64(-1 << 50), "f": float32(0.5), "d": -0.25,
		"D": Decimal{Scale: 3, Value: -1234}, "S": "long string", "x": []byte{0xCE, 0},
		"A": []any{int32(1), "two", []any{}, map[string]any{"k": nil}},
		"T": time.Unix(1234567890, 0), "F": map[string]any{"nested": map[string]any{}}, "V": nil,
		"empty": "",
	}
	e := &encoder{}
	if err := e.table(in); err != nil {
		t.Fatal(err)
	}
	d := newDecoder(e.b)
	out := d.table()
	if d.err != nil || d.remaining() != 0 {
		t.Fatalf("decode: err %v, %d octets left", d.err, d.remaining())
	}
	if !reflect.DeepEqual(out, in) {
		t.Errorf("round trip\n got %#v\nwant %#v", out, in)
	}

	// Types decoding never produces, encoded through their nearest AMQP type.
	type table map[string]any
	type decimal struct {
		S uint8
		V int32
	}
	e = &encoder{}
	if err := e.table(map[string]any{"int": 7, "named": table{"a": "b"}, "strs": []string{"x"}, "dec": decimal{1, 5}}); err != nil {
		t.Fatal(err)
	}
	out = newDecoder(e.b).table()
	want := map[string]any{"int": int64(7), "named": map[string]any{"a": "b"}, "strs": []any{"x"}, "dec": Decimal{1, 5}}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("conversions\n got %#v\nwant %#v", out, want)
	}

	if err := (&encoder{}).table(map[string]any{"c": make(chan int)}); err == nil {
		t.Error("encoding a chan succeeded")
	}
}

func TestFieldTableMalformed(t *testing.T) {
	for name, raw := range map[string][]byte{
		"truncated length": {0, 0},
		"length too long":  {0, 0, 0, 9, 1, 'k', 't'},
		"unknown type":     {0, 0, 0, 3, 1, 'k', 'Z'},
		"truncated value":  {0, 0, 0, 4, 1, 'k', 'I', 0},
		"bad nested":       {0, 0, 0, 7, 1, 'k', 'F', 0, 0, 0, 9},
	} {
		d := newDecoder(raw)
		d.table()
		if d.err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// A table nested deeper than maxFieldDepth is refused rather than followed.
	e := &encoder{}
	var deep any = "leaf"
	for range maxFieldDepth + 2 {
		deep = map[string]any{"k": deep}
	}
	if err := e.table(deep.(map[string]any)); err != nil {
		t.Fatal(err)
	}
	d := newDecoder(e.b)
	d.table()
	if d.err == nil {
		t.Error("over-deep table decoded")
	}
}

func TestBitPacking(t *testing.T) {
	e := &encoder{}
	bits := []bool{true, false, true, true, false, false, false, true, true, false, true, true}
	for _, b := range bits[:3] {
		e.bit(b)
	}
	e.short(0xBEEF) // ends the first bit octet
	for _, b := range bits[3:] {
		e.bit(b)
	}
	e.octet(9)
	if want := []byte{0b101, 0xBE, 0xEF, 0b10110001, 0b1, 9}; !reflect.DeepEqual(e.b, want) {
		t.Fatalf("encoded % x, want % x", e.b, want)
	}
	d := newDecoder(e.b)
	var got []bool
	for range 3 {
		got = append(got, d.bit())
	}
	if d.short() != 0xBEEF {
		t.Fatal("short")
	}
	for range 9 {
		got = append(got, d.bit())
	}
	if d.octet() != 9 || d.err != nil || !reflect.DeepEqual(got, bits) {
		t.Errorf("decoded %v err %v, want %v", got, d.err, bits)
	}
}

func TestContentHeaderRoundTrip(t *testing.T) {
	p := properties{
		ContentType: "text/plain", ContentEncoding: "gzip", Headers: map[string]any{"h": int32(1)},
		DeliveryMode: 2, Priority: 5, CorrelationID: "c", ReplyTo: "r", Expiration: "60000",
		MessageID: "m", Timestamp: time.Unix(99, 0), Type: "ty", UserID: "guest", AppID: "a", ClusterID: "cl",
	}
	b, err := encodeContentHeader(classBasic, 12345, p)
	if err != nil {
		t.Fatal(err)
	}
	h, err := decodeContentHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.class != classBasic || h.bodySize != 12345 || !reflect.DeepEqual(h.props, p) {
		t.Errorf("round trip: %+v", h)
	}

	// Only the flagged properties are read, in flag order, and a
	// continuation flag word is skipped.
	e := &encoder{}
	e.short(classBasic)
	e.short(0)
	e.longlong(3)
	e.short(flagPriority | flagMessageID | flagContinuation)
	e.short(0) // second flags word
	e.octet(7)
	e.shortstr("id")
	if h, err = decodeContentHeader(e.b); err != nil || h.props.Priority != 7 || h.props.MessageID != "id" || h.bodySize != 3 {
		t.Errorf("partial header: %+v, %v", h, err)
	}
	if _, err := decodeContentHeader(e.b[:len(e.b)-1]); err == nil {
		t.Error("truncated header decoded")
	}
}

// rawClient speaks just enough AMQP to misbehave on purpose.
type rawClient struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func (r *rawClient) send(typ byte, channel uint16, payload []byte) {
	r.t.Helper()
	if _, err := r.nc.Write(appendFrame(nil, typ, channel, payload)); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawClient) method(channel uint16, m *encoder) {
	r.t.Helper()
	r.send(frameMethod, channel, m.b)
}

// next returns the next non-heartbeat method frame.
func (r *rawClient) next() (uint16, methodID, *decoder) {
	r.t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := readFrame(r.br)
		if err != nil {
			r.t.Fatal(err)
		}
		if f.typ == frameHeartbeat {
			continue
		}
		d := newDecoder(f.payload)
		return f.channel, d.method(), d
	}
}

func (r *rawClient) expect(want methodID) *decoder {
	r.t.Helper()
	ch, got, d := r.next()
	if got != want {
		r.t.Fatalf("got method %v on channel %d, want %v", got, ch, want)
	}
	return d
}

// dialRaw completes a handshake with the given tune-ok heartbeat and opens
// channel 1.
func dialRaw(t *testing.T, s *Server, heartbeat uint16) (*rawClient, *Conn) {
	t.Helper()
	nc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	r := &rawClient{t: t, nc: nc, br: bufio.NewReader(nc)}
	if _, err := nc.Write([]byte(protocolHeader)); err != nil {
		t.Fatal(err)
	}
	d := r.expect(connectionStart)
	d.octet()
	d.octet()
	if props := d.table(); props["capabilities"].(map[string]any)["publisher_confirms"] != true {
		t.Fatalf("server properties %v", props)
	}
	if mech := d.longstr(); mech != "PLAIN AMQPLAIN" {
		t.Fatalf("mechanisms %q", mech)
	}
	if loc := d.longstr(); loc != "en_US" {
		t.Fatalf("locales %q", loc)
	}
	m := newMethod(connectionStartOk)
	if err := m.table(map[string]any{"product": "raw"}); err != nil {
		t.Fatal(err)
	}
	m.shortstr("PLAIN")
	m.longstr("\x00guest\x00guest")
	m.shortstr("en_US")
	r.method(0, m)
	d = r.expect(connectionTune)
	if cm, fm := d.short(), d.long(); cm != DefaultChannelMax || fm != DefaultFrameMax {
		t.Fatalf("tune channel-max %d frame-max %d", cm, fm)
	}
	m = newMethod(connectionTuneOk)
	m.short(2047)
	m.long(4096)
	m.short(heartbeat)
	r.method(0, m)
	m = newMethod(connectionOpen)
	m.shortstr("/")
	m.shortstr("")
	m.bit(false)
	r.method(0, m)
	r.expect(connectionOpenOk)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sc, err := s.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m = newMethod(channelOpen)
	m.shortstr("")
	r.method(1, m)
	r.expect(channelOpenOk)
	return r, sc
}

func startTestServer(t *testing.T, opts Options) *Server {
	t.Helper()
	s, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func publishMethod() *encoder {
	m := newMethod(basicPublish)
	m.short(0)
	m.shortstr("ex")
	m.shortstr("k")
	m.bit(true)
	m.bit(false)
	return m
}

func TestProtocolViolationsCloseTheConnection(t *testing.T) {
	hdr := func(size uint64) []byte {
		b, err := encodeContentHeader(classBasic, size, properties{})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name   string
		script func(r *rawClient)
		code   uint16
	}{
		{"method interrupts content", func(r *rawClient) {
			r.method(1, publishMethod())
			r.method(1, newMethod(basicQos))
		}, 505},
		{"body before header", func(r *rawClient) {
			r.method(1, publishMethod())
			r.send(frameBody, 1, []byte("x"))
		}, 505},
		{"body longer than announced", func(r *rawClient) {
			r.method(1, publishMethod())
			r.send(frameHeader, 1, hdr(1))
			r.send(frameBody, 1, []byte("xy"))
		}, 501},
		{"frame on unopened channel", func(r *rawClient) {
			r.method(7, newMethod(basicQos))
		}, 504},
		{"truncated arguments", func(r *rawClient) {
			r.method(1, newMethod(queueDeclare))
		}, 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startTestServer(t, Options{})
			r, sc := dialRaw(t, s, 0)
			tc.script(r)
			d := r.expect(connectionClose)
			if code, text := d.short(), d.shortstr(); code != tc.code {
				t.Errorf("connection.close %d %q, want code %d", code, text, tc.code)
			}
			r.method(0, newMethod(connectionCloseOk))
			select {
			case <-sc.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("connection did not end after close-ok")
			}
			if err := sc.Err(); !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "protocol error") {
				t.Errorf("Err() = %v", err)
			}
		})
	}
}

func TestServerSendsNegotiatedHeartbeats(t *testing.T) {
	s := startTestServer(t, Options{Heartbeat: time.Second})
	r, sc := dialRaw(t, s, 1)
	if sc.Heartbeat() != time.Second || sc.FrameMax() != 4096 {
		t.Fatalf("negotiated heartbeat %v frame-max %d", sc.Heartbeat(), sc.FrameMax())
	}
	_ = r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := readFrame(r.br)
	if err != nil || f.typ != frameHeartbeat || f.channel != 0 || len(f.payload) != 0 {
		t.Fatalf("got frame %+v, %v; want a heartbeat", f, err)
	}
}

func TestServerClosedChannelDiscardsUntilCloseOk(t *testing.T) {
	s := startTestServer(t, Options{})
	r, sc := dialRaw(t, s, 0)
	r.method(1, confirmSelectMethod())
	r.expect(confirmSelectOk)
	if err := sc.CloseChannel(1, 406, "PRECONDITION_FAILED"); err != nil {
		t.Fatal(err)
	}
	if err := sc.CloseChannel(1, 406, "again"); err == nil {
		t.Error("second CloseChannel succeeded")
	}
	r.expect(channelClose)
	// In flight before the client saw channel.close: discarded, not answered.
	r.method(1, publishMethod())
	r.method(1, newMethod(basicQos))
	r.method(1, newMethod(channelCloseOk))
	// The channel can be opened again and counts tags from scratch.
	m := newMethod(channelOpen)
	m.shortstr("")
	r.method(1, m)
	r.expect(channelOpenOk)
	r.method(1, confirmSelectMethod())
	r.expect(confirmSelectOk)
	r.method(1, publishMethod())
	r.send(frameHeader, 1, func() []byte { b, _ := encodeContentHeader(classBasic, 0, properties{}); return b }())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := sc.NextPublish(ctx)
	if err != nil || p.Tag != 1 || p.Channel != 1 || len(p.Body) != 0 {
		t.Fatalf("NextPublish = %+v, %v; want the post-reopen publish with tag 1", p, err)
	}
	if got := sc.Channels(); !reflect.DeepEqual(got, []uint16{1, 1}) {
		t.Errorf("Channels() = %v, want [1 1]", got)
	}
}

func confirmSelectMethod() *encoder {
	m := newMethod(confirmSelect)
	m.bit(false) // nowait
	return m
}
