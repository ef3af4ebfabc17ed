package emulator_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/isobroker/broker/eventhubs/emulator"
	"github.com/isobroker/broker/internal/amqp10"
)

// rawConn is a hand-driven AMQP client built on our codec, for byte-exact
// protocol tests.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
	fr *amqp10.FrameReader
}

func rawDial(t *testing.T, e *emulator.Emulator) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", e.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(nc)
	return &rawConn{t: t, nc: nc, br: br, fr: amqp10.NewFrameReader(br, 1<<20)}
}

func (r *rawConn) write(b []byte) {
	r.t.Helper()
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawConn) send(typ uint8, ch uint16, body amqp10.Body, payload []byte) {
	r.t.Helper()
	b, err := amqp10.AppendFrame(nil, typ, ch, body, payload)
	if err != nil {
		r.t.Fatal(err)
	}
	r.write(b)
}

func (r *rawConn) header() amqp10.ProtocolHeader {
	r.t.Helper()
	h, err := amqp10.ReadProtocolHeader(r.br)
	if err != nil {
		r.t.Fatal(err)
	}
	return h
}

// next returns the next non-empty frame.
func (r *rawConn) next() amqp10.Frame {
	r.t.Helper()
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("read frame: %v", err)
		}
		if f.Body != nil {
			return f
		}
	}
}

// open runs SASL (mechanism and response as given) and the open exchange.
func (r *rawConn) open(mech string, resp []byte, idle uint32) *amqp10.Open {
	r.t.Helper()
	r.write(amqp10.ProtocolHeader{ID: amqp10.ProtoSASL, Major: 1}.Bytes())
	if h := r.header(); h.ID != amqp10.ProtoSASL {
		r.t.Fatalf("sasl header %v", h)
	}
	mechs := r.next().Body.(*amqp10.SASLMechanisms)
	if !strings.Contains(strings.Join(symbols(mechs.Mechanisms), ","), mech) {
		r.t.Fatalf("mechanisms %v", mechs.Mechanisms)
	}
	r.send(amqp10.FrameSASL, 0, &amqp10.SASLInit{Mechanism: amqp10.Symbol(mech), InitialResponse: resp}, nil)
	if o := r.next().Body.(*amqp10.SASLOutcome); o.Result != amqp10.SASLOk {
		r.t.Fatalf("sasl outcome %d", o.Result)
	}
	r.write(amqp10.ProtocolHeader{ID: amqp10.ProtoAMQP, Major: 1}.Bytes())
	r.send(amqp10.FrameAMQP, 0, &amqp10.Open{ContainerID: "raw", MaxFrameSize: 512, ChannelMax: 10, IdleTimeout: idle}, nil)
	if h := r.header(); h.ID != amqp10.ProtoAMQP {
		r.t.Fatalf("amqp header %v", h)
	}
	return r.next().Body.(*amqp10.Open)
}

func symbols(s []amqp10.Symbol) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = string(v)
	}
	return out
}

// expectClose reads until a close frame and then EOF.
func (r *rawConn) expectClose(cond string) *amqp10.Close {
	r.t.Helper()
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("waiting for close with %s: %v", cond, err)
		}
		if c, ok := f.Body.(*amqp10.Close); ok {
			if c.Error == nil || string(c.Error.Condition) != cond {
				r.t.Fatalf("close %+v, want %s", c.Error, cond)
			}
			r.send(amqp10.FrameAMQP, 0, &amqp10.Close{}, nil)
			if _, err := io.ReadAll(r.br); err != nil && !errors.Is(err, net.ErrClosed) {
				var ne net.Error
				if !errors.As(err, &ne) {
					r.t.Fatalf("after close: %v", err)
				}
			}
			return c
		}
	}
}

// checkServing proves the emulator still serves new connections.
func checkServing(t *testing.T, e *emulator.Emulator) {
	t.Helper()
	c := dial(t, e, nil)
	s := session(t, c)
	snd, err := s.NewSender(ctxT(t, 5*time.Second), "hub", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snd.Send(ctxT(t, 5*time.Second), amqp.NewMessage([]byte("still serving")), nil); err != nil {
		t.Fatal(err)
	}
}

func TestBadProtocolHeader(t *testing.T) {
	e, _ := startEmulator(t, anonCfg())
	other := dial(t, e, nil) // an established connection must survive
	r := rawDial(t, e)
	r.write([]byte("GET / HTTP/1.1\r\n\r\n"))
	got, _ := io.ReadAll(r.br)
	if !bytes.Equal(got, []byte("AMQP\x00\x01\x00\x00")) {
		t.Fatalf("answer to garbage: %q", got)
	}
	// Unsupported version: the server answers with its own header.
	r2 := rawDial(t, e)
	r2.write([]byte("AMQP\x00\x02\x00\x00"))
	got, _ = io.ReadAll(r2.br)
	if !bytes.Equal(got, []byte("AMQP\x00\x01\x00\x00")) {
		t.Fatalf("answer to version 2: %q", got)
	}
	if _, err := session(t, other).NewSender(ctxT(t, 5*time.Second), "hub", nil); err != nil {
		t.Fatal(err)
	}
	checkServing(t, e)
}

func TestOversizeFrame(t *testing.T) {
	e, _ := startEmulator(t, anonCfg())
	other := dial(t, e, nil)
	r := rawDial(t, e)
	open := r.open("ANONYMOUS", []byte("anonymous"), 0)
	if open.MaxFrameSize != emulator.DefaultMaxFrameSize {
		t.Fatalf("server max-frame-size %d", open.MaxFrameSize)
	}
	big := make([]byte, emulator.DefaultMaxFrameSize+100)
	big[0], big[1], big[2], big[3] = 0, 1, 0, 100 // size 65636
	big[4], big[5] = 2, 0
	r.write(big[:8])
	c := r.expectClose(emulator.CondFramingError)
	if !strings.Contains(c.Error.Description, "max-frame-size") {
		t.Fatalf("description %q", c.Error.Description)
	}
	// Undecodable body.
	r2 := rawDial(t, e)
	r2.open("ANONYMOUS", nil, 0)
	r2.write([]byte{0, 0, 0, 12, 2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	r2.expectClose(emulator.CondDecodeError)
	if _, err := session(t, other).NewSender(ctxT(t, 5*time.Second), "hub", nil); err != nil {
		t.Fatal(err)
	}
	checkServing(t, e)
}

func TestSASLPlainAndRawFlow(t *testing.T) {
	e, _ := startEmulator(t, emulator.Config{Hubs: []emulator.HubConfig{{Name: "hub", Partitions: 1}}, MaxMessageSize: 2000})
	// Wrong password: SASL auth failure.
	r := rawDial(t, e)
	r.write(amqp10.ProtocolHeader{ID: amqp10.ProtoSASL, Major: 1}.Bytes())
	r.header()
	r.next()
	r.send(amqp10.FrameSASL, 0, &amqp10.SASLInit{Mechanism: "PLAIN", InitialResponse: []byte("\x00" + e.KeyName() + "\x00wrong")}, nil)
	if o := r.next().Body.(*amqp10.SASLOutcome); o.Result != amqp10.SASLAuth {
		t.Fatalf("outcome %d", o.Result)
	}

	// Right key: PLAIN authorizes links without CBS.
	r = rawDial(t, e)
	open := r.open("PLAIN", []byte("\x00"+e.KeyName()+"\x00"+e.Key()), 200)
	if open.IdleTimeout != uint32(emulator.DefaultHeartbeatTimeout/time.Millisecond) {
		t.Fatalf("advertised idle-time-out %d", open.IdleTimeout)
	}
	r.send(amqp10.FrameAMQP, 3, &amqp10.Begin{NextOutgoingID: 0, IncomingWindow: 100, OutgoingWindow: 100, HandleMax: 10}, nil)
	b := r.next()
	if begin := b.Body.(*amqp10.Begin); b.Channel != 3 || begin.RemoteChannel == nil || *begin.RemoteChannel != 3 {
		t.Fatalf("begin reply %+v", b)
	}
	r.send(amqp10.FrameAMQP, 3, &amqp10.Attach{Name: "s", Handle: 0, Role: amqp10.RoleSender, SndSettleMode: amqp10.Ptr(amqp10.SndMixed),
		Source: &amqp10.Source{Address: "me"}, Target: &amqp10.Target{Address: "hub"}, InitialDeliveryCount: amqp10.Ptr(uint32(0))}, nil)
	a := r.next().Body.(*amqp10.Attach)
	if a.Target == nil || a.Target.Address != "hub" || a.MaxMessageSize != 2000 || a.Role != amqp10.RoleReceiver || *a.SndSettleMode != amqp10.SndMixed {
		t.Fatalf("attach reply %+v", a)
	}
	fl := r.next().Body.(*amqp10.Flow)
	if fl.LinkCredit == nil || *fl.LinkCredit == 0 {
		t.Fatalf("no credit: %+v", fl)
	}
	// A message split over frames of at most 512 bytes is accepted...
	small, _ := (&amqp10.Message{Data: [][]byte{bytes.Repeat([]byte("s"), 1200)}}).Marshal()
	r.sendMultiFrame(3, 0, 0, small)
	if d := r.next().Body.(*amqp10.Disposition); !d.Settled || d.First != 0 {
		t.Fatalf("disposition %+v", d)
	} else if _, ok := d.State.(*amqp10.Accepted); !ok {
		t.Fatalf("state %#v", d.State)
	}
	// ...an oversize one is rejected with message-size-exceeded.
	big, _ := (&amqp10.Message{Data: [][]byte{bytes.Repeat([]byte("b"), 3000)}}).Marshal()
	r.sendMultiFrame(3, 0, 1, big)
	d := r.next().Body.(*amqp10.Disposition)
	rej, ok := d.State.(*amqp10.Rejected)
	if !ok || d.First != 1 || string(rej.Error.Condition) != emulator.CondMessageSizeExceeded {
		t.Fatalf("oversize disposition %+v %#v", d, d.State)
	}
	// Heartbeats: we advertised 200 ms, so empty frames arrive.
	start := time.Now()
	typ, _, body, err := r.fr.ReadRaw()
	if err != nil || len(body) != 0 || typ != amqp10.FrameAMQP || time.Since(start) > 2*time.Second {
		t.Fatalf("expected heartbeat, got %d bytes, %v", len(body), err)
	}
	r.send(amqp10.FrameAMQP, 0, &amqp10.Close{}, nil)
	for {
		f := r.next()
		if _, ok := f.Body.(*amqp10.Close); ok {
			break
		}
	}
}

// sendMultiFrame sends msg as one delivery in frames of at most 512 bytes.
func (r *rawConn) sendMultiFrame(ch uint16, handle, id uint32, msg []byte) {
	r.t.Helper()
	first := true
	for len(msg) > 0 {
		n := min(len(msg), 400)
		t := &amqp10.Transfer{Handle: handle, More: n < len(msg)}
		if first {
			t.DeliveryID, t.DeliveryTag, t.MessageFormat = amqp10.Ptr(id), []byte{byte(id)}, amqp10.Ptr(uint32(0))
			first = false
		}
		r.send(amqp10.FrameAMQP, ch, t, msg[:n])
		msg = msg[n:]
	}
}

func TestIdleTimeout(t *testing.T) {
	cfg := anonCfg()
	cfg.IdleTimeout = 300 * time.Millisecond
	e, logs := startEmulator(t, cfg)

	idle := dial(t, e, nil)
	busy := dial(t, e, nil)
	ctx := ctxT(t, 10*time.Second)
	// The busy connection talks to $cbs-like management every 100 ms without
	// holding an event link: traffic alone keeps it open.
	stop := time.After(900 * time.Millisecond)
	bs := session(t, busy)
	for done := false; !done; {
		select {
		case <-stop:
			done = true
		case <-time.After(100 * time.Millisecond):
			snd, err := bs.NewSender(ctx, "$management", nil)
			if err != nil {
				t.Fatalf("busy connection: %v", err)
			}
			_ = snd.Close(ctx)
		}
	}
	select {
	case <-idle.Done():
	case <-ctx.Done():
		t.Fatal("idle connection not closed")
	}
	var ce *amqp.ConnError
	if err := idle.Err(); !errors.As(err, &ce) || ce.RemoteErr == nil || string(ce.RemoteErr.Condition) != emulator.CondConnectionForced ||
		!strings.Contains(ce.RemoteErr.Description, "inactive for more than the allowed 300 milliseconds") {
		t.Fatalf("idle close: %v", err)
	}
	select {
	case <-busy.Done():
		t.Fatalf("busy connection closed: %v", busy.Err())
	default:
	}
	// A connection with an event link is not idle.
	withLink := dial(t, e, nil)
	if _, err := session(t, withLink).NewReceiver(ctx, partitionSource("hub", "$Default", "0"), nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond)
	select {
	case <-withLink.Done():
		t.Fatalf("connection with a link closed: %v", withLink.Err())
	default:
	}
	if !strings.Contains(logs.String(), "inactive for more than") {
		t.Fatal("idle close not logged")
	}
}

func TestLinkIdleTimeout(t *testing.T) {
	cfg := anonCfg()
	cfg.LinkIdleTimeout = 200 * time.Millisecond
	e, _ := startEmulator(t, cfg)
	s := session(t, dial(t, e, nil))
	ctx := ctxT(t, 10*time.Second)
	rcv, err := s.NewReceiver(ctx, partitionSource("hub", "$Default", "0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rcv.Receive(ctx, nil); remoteCond(err) != emulator.CondLinkDetachForced {
		t.Fatalf("idle link: %v", err)
	}
}

func TestHeartbeatTimeoutClosesSilentPeer(t *testing.T) {
	cfg := anonCfg()
	cfg.HeartbeatTimeout = 200 * time.Millisecond
	e, _ := startEmulator(t, cfg)
	r := rawDial(t, e)
	r.open("ANONYMOUS", nil, 0)
	r.expectClose(emulator.CondResourceLimitExceeded)
}

func TestPutTokenAndAuthorization(t *testing.T) {
	e, logs := startEmulator(t, emulator.Config{Hubs: []emulator.HubConfig{{Name: "hub", Partitions: 1}}, Keys: map[string]string{"send": "c2VuZGtleQ=="}})
	c := dial(t, e, nil)
	s := session(t, c)
	ctx := ctxT(t, 10*time.Second)
	aud := "amqp://" + e.Addr() + "/hub"

	// Without a token the attach is refused.
	if _, err := s.NewSender(ctx, "hub", nil); remoteCond(err) != emulator.CondUnauthorizedAccess {
		t.Fatalf("attach without token: %v", err)
	}
	putToken := func(token, audience string) (int32, string) {
		t.Helper()
		return putTokenOn(t, c, "servicebus.windows.net:sastoken", token, audience)
	}
	wrong := emulator.SASToken(aud, e.KeyName(), "bm90IHRoZSBrZXk=", time.Hour)
	if code, _ := putToken(wrong, aud); code != 401 {
		t.Fatalf("wrong key: status %d", code)
	}
	expired := emulator.SASToken(aud, e.KeyName(), e.Key(), -time.Minute)
	if code, _ := putToken(expired, aud); code != 401 {
		t.Fatalf("expired token: status %d", code)
	}
	other := emulator.SASToken("amqp://"+e.Addr()+"/otherhub", e.KeyName(), e.Key(), time.Hour)
	if code, _ := putToken(other, aud); code != 401 {
		t.Fatalf("token for another resource: status %d", code)
	}
	if code, _ := putToken("Bearer abc", aud); code != 401 {
		t.Fatalf("jwt without validator: status %d", code)
	}
	good := emulator.SASToken(aud, "send", "c2VuZGtleQ==", time.Hour)
	if code, desc := putToken(good, aud); code != 202 {
		t.Fatalf("good token: %d %s", code, desc)
	}
	snd, err := s.NewSender(ctx, "hub/Partitions/0", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snd.Send(ctx, amqp.NewMessage([]byte("authorized")), nil); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), e.Key()) || strings.Contains(logs.String(), "sig=") {
		t.Fatal("logs leak a key or signature")
	}
}

func TestDelayedDispositions(t *testing.T) {
	e, _ := startEmulator(t, anonCfg())
	s := session(t, dial(t, e, nil))
	ctx := ctxT(t, 10*time.Second)
	snd, err := s.NewSender(ctx, "hub", nil)
	if err != nil {
		t.Fatal(err)
	}
	e.Faults().DelayDispositions(300 * time.Millisecond)
	start := time.Now()
	if err := snd.Send(ctx, amqp.NewMessage([]byte("slow")), nil); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("disposition after %v", d)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := snd.Send(short, amqp.NewMessage([]byte("slow")), nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("send with short deadline: %v", err)
	}
	e.Faults().DelayDispositions(0)
	if err := snd.Send(ctx, amqp.NewMessage([]byte("fast")), nil); err != nil {
		t.Fatal(err)
	}
}

func TestRetentionAndRuntimeHubs(t *testing.T) {
	cfg := anonCfg()
	cfg.RetentionCount = 3
	e, _ := startEmulator(t, cfg)
	if err := e.AddHub("fresh", 1, "g1"); err != nil {
		t.Fatal(err)
	}
	if err := e.AddHub("FRESH", 1); !errors.Is(err, emulator.ErrHubExists) {
		t.Fatalf("duplicate hub: %v", err)
	}
	if err := e.AddConsumerGroup("fresh", "g2"); err != nil {
		t.Fatal(err)
	}
	s := session(t, dial(t, e, nil))
	ctx := ctxT(t, 10*time.Second)
	snd, err := s.NewSender(ctx, "fresh", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := snd.Send(ctx, amqp.NewMessage([]byte{byte(i)}), nil); err != nil {
			t.Fatal(err)
		}
	}
	rcv, err := s.NewReceiver(ctx, partitionSource("fresh", "g2", "0"), &amqp.ReceiverOptions{Credit: 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := 2; i < 5; i++ {
		m, err := rcv.Receive(ctx, nil)
		if err != nil || m.GetData()[0] != byte(i) || m.Annotations["x-opt-sequence-number"] != int64(i) {
			t.Fatalf("after retention: %v %v", m, err)
		}
	}
}

func TestAutoCreate(t *testing.T) {
	e, _ := startEmulator(t, emulator.Config{AllowAnonymous: true, AutoCreate: true, DefaultPartitions: 2})
	s := session(t, dial(t, e, nil))
	ctx := ctxT(t, 10*time.Second)
	if _, err := s.NewReceiver(ctx, partitionSource("auto", "any-group", "1"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NewReceiver(ctx, partitionSource("auto", "any-group", "2"), nil); remoteCond(err) != emulator.CondNotFound {
		t.Fatalf("partition beyond count: %v", err)
	}
	if got := e.Hubs(); len(got) != 1 || got[0] != "auto" {
		t.Fatalf("hubs %v", got)
	}
}

func TestTwoEmulatorsShareNothing(t *testing.T) {
	a, _ := startEmulator(t, anonCfg())
	b, _ := startEmulator(t, anonCfg())
	if a.Addr() == b.Addr() || a.Key() == b.Key() {
		t.Fatal("emulators share an address or key")
	}
	ca := dial(t, a, nil)
	sa := session(t, ca)
	ctx := ctxT(t, 10*time.Second)
	snd, err := sa.NewSender(ctx, "hub/Partitions/0", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snd.Send(ctx, amqp.NewMessage([]byte("only in a")), nil); err != nil {
		t.Fatal(err)
	}
	// b holds no events and keeps working while a closes.
	sb := session(t, dial(t, b, nil))
	rb, err := sb.NewReceiver(ctx, partitionSource("hub", "$Default", "0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := rb.Receive(ctxT(t, 100*time.Millisecond), nil); err == nil {
		t.Fatalf("event leaked between emulators: %v", m)
	}
	closeCtx := ctxT(t, 5*time.Second)
	if err := a.Close(closeCtx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ca.Done():
	case <-ctx.Done():
		t.Fatal("client of closed emulator not closed")
	}
	if err := a.Start(ctx); !errors.Is(err, emulator.ErrClosed) {
		t.Fatalf("start after close: %v", err)
	}
	checkServing(t, b)
}

func TestConnectionString(t *testing.T) {
	e, err := emulator.New(emulator.Config{KeyName: "kn", Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 5*time.Second)
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = e.Close(ctx) }()
	want := "Endpoint=sb://" + e.Addr() + ";SharedAccessKeyName=kn;SharedAccessKey=k;UseDevelopmentEmulator=true;EntityPath=h"
	if got := e.ConnectionString("h"); got != want {
		t.Fatalf("connection string %q", got)
	}
	if _, err := emulator.New(emulator.Config{MaxFrameSize: 100}); !errors.Is(err, emulator.ErrInvalidConfig) {
		t.Fatalf("bad config: %v", err)
	}
	if err := e.Start(ctx); !errors.Is(err, emulator.ErrAlreadyStarted) {
		t.Fatalf("second start: %v", err)
	}
}

// putTokenOn runs one put-token request on its own session of c.
func putTokenOn(t *testing.T, c *amqp.Conn, typ, token, audience string) (int32, string) {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	cs := session(t, c)
	defer func() { _ = cs.Close(ctx) }()
	snd, err := cs.NewSender(ctx, "$cbs", nil)
	if err != nil {
		t.Fatal(err)
	}
	rcv, err := cs.NewReceiver(ctx, "$cbs", &amqp.ReceiverOptions{TargetAddress: "cbs-reply-1", Credit: 10,
		RequestedSenderSettleMode: amqp.SenderSettleModeSettled.Ptr()})
	if err != nil {
		t.Fatal(err)
	}
	msg := amqp.NewMessage(nil)
	msg.Data = nil
	msg.Value = token
	msg.Properties = &amqp.MessageProperties{MessageID: "req-1", ReplyTo: amqp10.Ptr("cbs-reply-1")}
	msg.ApplicationProperties = map[string]any{"operation": "put-token", "type": typ, "name": audience, "expiration": "0"}
	if err := snd.Send(ctx, msg, nil); err != nil {
		t.Fatal(err)
	}
	resp, err := rcv.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Properties.CorrelationID != "req-1" {
		t.Fatalf("correlation id %#v", resp.Properties.CorrelationID)
	}
	code, ok := resp.ApplicationProperties["status-code"].(int32)
	if !ok {
		t.Fatalf("status-code %#v", resp.ApplicationProperties["status-code"])
	}
	desc, _ := resp.ApplicationProperties["status-description"].(string)
	return code, desc
}

func TestTokenValidator(t *testing.T) {
	cfg := emulator.Config{Hubs: []emulator.HubConfig{{Name: "hub", Partitions: 1}},
		TokenValidator: func(typ, token, audience string) (time.Time, error) {
			if typ != "jwt" || token != "good-jwt" {
				return time.Time{}, errors.New("bad token")
			}
			return time.Now().Add(time.Hour), nil
		}}
	e, _ := startEmulator(t, cfg)
	c := dial(t, e, nil)
	aud := "amqp://" + e.Addr() + "/hub"
	if code, _ := putTokenOn(t, c, "jwt", "bad-jwt", aud); code != 401 {
		t.Fatalf("bad jwt: %d", code)
	}
	if code, _ := putTokenOn(t, c, "jwt", "good-jwt", aud); code != 202 {
		t.Fatalf("good jwt: %d", code)
	}
	if _, err := session(t, c).NewSender(ctxT(t, 5*time.Second), "hub", nil); err != nil {
		t.Fatal(err)
	}
}

// A peer may begin a session on a channel whose server-sent end it has
// not answered yet (go-amqp frees the channel on reading the end, before
// its session answers): the new session works, and the late answer does
// not end it.
func TestBeginBeforeAnsweringEnd(t *testing.T) {
	e, _ := startEmulator(t, emulator.Config{Hubs: []emulator.HubConfig{{Name: "hub", Partitions: 1}}})
	r := rawDial(t, e)
	r.open("PLAIN", []byte("\x00"+e.KeyName()+"\x00"+e.Key()), 0)
	begin := func() {
		r.send(amqp10.FrameAMQP, 1, &amqp10.Begin{NextOutgoingID: 0, IncomingWindow: 100, OutgoingWindow: 100, HandleMax: 10}, nil)
		if b, ok := r.next().Body.(*amqp10.Begin); !ok || b.RemoteChannel == nil || *b.RemoteChannel != 1 {
			t.Fatalf("begin reply %+v", b)
		}
	}
	attach := func(handle uint32) *amqp10.Attach {
		r.send(amqp10.FrameAMQP, 1, &amqp10.Attach{Name: fmt.Sprintf("s%d", handle), Handle: handle, Role: amqp10.RoleSender,
			Source: &amqp10.Source{Address: "me"}, Target: &amqp10.Target{Address: "hub"}, InitialDeliveryCount: amqp10.Ptr(uint32(0))}, nil)
		for {
			switch b := r.next().Body.(type) {
			case *amqp10.Attach:
				return b
			case *amqp10.Flow:
			default:
				t.Fatalf("attach %d answered with %T %+v", handle, b, b)
			}
		}
	}
	begin()
	// A handle above handle-max makes the server end the session.
	r.send(amqp10.FrameAMQP, 1, &amqp10.Attach{Name: "bad", Handle: 99, Role: amqp10.RoleSender,
		Source: &amqp10.Source{Address: "me"}, Target: &amqp10.Target{Address: "hub"}}, nil)
	if end, ok := r.next().Body.(*amqp10.End); !ok || end.Error == nil {
		t.Fatalf("want an end with an error, got %+v", end)
	}
	begin()                                                           // before answering the end
	r.send(amqp10.FrameAMQP, 1, &amqp10.End{}, nil)                   // the late answer
	if a := attach(0); a.Target == nil || a.Target.Address != "hub" { // the new session still works
		t.Fatalf("attach on the new session: %+v", a)
	}
	// Ending the new session for real still works.
	r.send(amqp10.FrameAMQP, 1, &amqp10.End{}, nil)
	for {
		if _, ok := r.next().Body.(*amqp10.End); ok {
			break
		}
	}
}
