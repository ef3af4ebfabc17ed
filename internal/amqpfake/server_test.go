package amqpfake_test

import (
	"bytes"
	"errors"
	"net"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/isobroker/broker/internal/amqpfake"
)

func TestHandshakeAndAutoReplies(t *testing.T) {
	s := startServer(t, amqpfake.Options{})
	if !strings.HasPrefix(s.URL(), "amqp://guest:guest@127.0.0.1:") || !strings.HasSuffix(s.URL(), "/") {
		t.Errorf("URL() = %q", s.URL())
	}
	conn, sc := dial(t, s, amqp.Config{})

	caps, _ := conn.Properties["capabilities"].(amqp.Table)
	for _, c := range []string{"publisher_confirms", "basic.nack", "consumer_cancel_notify", "connection.blocked"} {
		if caps[c] != true {
			t.Errorf("server capability %q = %v, want true (capabilities %v)", c, caps[c], caps)
		}
	}
	if conn.Config.ChannelMax != 2047 || conn.Config.FrameSize != 131072 {
		t.Errorf("client negotiated channel-max %d frame-max %d, want 2047 and 131072", conn.Config.ChannelMax, conn.Config.FrameSize)
	}
	if sc.FrameMax() != 131072 || sc.Heartbeat() != 10*time.Second {
		// amqp091-go asks for a 10s heartbeat when the server offers none.
		t.Errorf("server saw tune-ok frame-max %d heartbeat %v, want 131072 and 10s", sc.FrameMax(), sc.Heartbeat())
	}
	if sc.Vhost() != "/" {
		t.Errorf("Vhost() = %q, want /", sc.Vhost())
	}
	if p, _ := sc.ClientProperties()["product"].(string); p == "" {
		t.Errorf("client properties lack product: %v", sc.ClientProperties())
	}

	ch, err := conn.Channel()
	must(t, err)
	must(t, ch.Confirm(false))
	must(t, ch.ExchangeDeclare("ex", "topic", true, false, false, false, amqp.Table{"alternate-exchange": "ae"}))
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	must(t, err)
	if !strings.HasPrefix(q.Name, "amq.gen-") || q.Messages != 0 || q.Consumers != 0 {
		t.Errorf("QueueDeclare(\"\") = %+v, want a generated amq.gen- name and zero counts", q)
	}
	q, err = ch.QueueDeclare("orders", true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
	must(t, err)
	if q.Name != "orders" {
		t.Errorf("QueueDeclare(orders) name = %q", q.Name)
	}
	must(t, ch.QueueBind("orders", "orders.#", "ex", false, nil))
	must(t, ch.Qos(10, 0, false))

	// nowait variants must get no reply: a stray declare-ok would be taken
	// as the answer to the next synchronous call and fail it.
	must(t, ch.ExchangeDeclare("ex2", "direct", false, false, false, true, nil))
	_, err = ch.QueueDeclare("q2", false, false, false, true, nil)
	must(t, err)
	must(t, ch.QueueBind("q2", "k", "ex2", true, nil))
	must(t, ch.Qos(1, 0, false))

	// A second confirm channel counts its own tags from 1. (Not Confirm(true):
	// see TestAmqp091ConfirmNoWaitBlocks.)
	ch2, err := conn.Channel()
	must(t, err)
	must(t, ch2.Confirm(false))
	must(t, ch2.Publish("ex", "k", false, false, amqp.Publishing{Body: []byte("x")}))
	must(t, ch.Publish("ex", "k", false, false, amqp.Publishing{Body: []byte("y")}))
	if p := nextPublish(t, sc); p.Channel != 2 || p.Tag != 1 || string(p.Body) != "x" {
		t.Errorf("first publish = %+v, want channel 2 tag 1 body x", p)
	}
	if p := nextPublish(t, sc); p.Channel != 1 || p.Tag != 1 || string(p.Body) != "y" {
		t.Errorf("second publish = %+v, want channel 1 tag 1 body y", p)
	}

	must(t, ch.Close())
	must(t, ch2.Close())
	if got := sc.Channels(); !slices.Equal(got, []uint16{1, 2}) {
		t.Errorf("Channels() = %v, want [1 2]", got)
	}
	must(t, conn.Close())
	select {
	case <-sc.Done():
	case <-time.After(waitTimeout):
		t.Fatal("server connection did not end after the client closed")
	}
	if err := sc.Err(); !errors.Is(err, amqpfake.ErrClosed) || !strings.Contains(err.Error(), "by client (200") {
		t.Errorf("Err() = %v, want ErrClosed by client (200 ...)", err)
	}
	if _, err := sc.NextPublish(testContext(t)); !errors.Is(err, amqpfake.ErrClosed) {
		t.Errorf("NextPublish after close = %v, want ErrClosed", err)
	}
}

// TestReturnBeforeAck scripts what RabbitMQ does with an unroutable
// mandatory message: basic.return, then basic.ack for the same tag.
func TestReturnBeforeAck(t *testing.T) {
	s := startServer(t, amqpfake.Options{})
	conn, sc := dial(t, s, amqp.Config{})
	ch, _, returns := confirmChannel(t, conn)

	ts := time.Unix(1700000000, 0)
	headers := amqp.Table{
		"string":  "v",
		"int8":    int8(-8),
		"byte":    byte(8),
		"int16":   int16(-16),
		"uint16":  uint16(16),
		"int32":   int32(-32),
		"uint32":  uint32(32),
		"int64":   int64(-1 << 40),
		"float32": float32(1.5),
		"float64": 2.25,
		"decimal": amqp.Decimal{Scale: 2, Value: 314},
		"bool":    true,
		"bytes":   []byte{0, 1, 2},
		"time":    ts,
		"void":    nil,
		"array":   []any{"a", int32(1), amqp.Table{"in": "array"}},
		"nested":  amqp.Table{"deeper": amqp.Table{"k": "v"}},
	}
	var dcs []*amqp.DeferredConfirmation
	for i := 1; i <= 3; i++ {
		dcs = append(dcs, publish(t, ch, "orders.new", true, amqp.Publishing{
			MessageId:     "m" + string(rune('0'+i)),
			ContentType:   "application/json",
			Headers:       headers,
			Body:          []byte(`{"n":` + string(rune('0'+i)) + `}`),
			DeliveryMode:  amqp.Persistent,
			CorrelationId: "corr",
			Timestamp:     ts,
			AppId:         "app",
		}))
	}
	var pubs []amqpfake.Publish
	for i := 1; i <= 3; i++ {
		p := nextPublish(t, sc)
		if p.Tag != uint64(i) || p.Channel != 1 || p.Exchange != "ex" || p.Key != "orders.new" || !p.Mandatory ||
			p.ContentType != "application/json" || p.MessageID != "m"+string(rune('0'+i)) {
			t.Fatalf("publish %d = %+v", i, p)
		}
		pubs = append(pubs, p)
	}
	wantServer := map[string]any{
		"string": "v", "int8": int8(-8), "byte": byte(8), "int16": int16(-16), "uint16": uint16(16),
		"int32": int32(-32), "uint32": uint32(32), "int64": int64(-1 << 40), "float32": float32(1.5),
		"float64": 2.25, "decimal": amqpfake.Decimal{Scale: 2, Value: 314}, "bool": true,
		"bytes": []byte{0, 1, 2}, "time": ts, "void": nil,
		"array":  []any{"a", int32(1), map[string]any{"in": "array"}},
		"nested": map[string]any{"deeper": map[string]any{"k": "v"}},
	}
	if !reflect.DeepEqual(pubs[1].Headers, wantServer) {
		t.Errorf("server decoded headers\n got %#v\nwant %#v", pubs[1].Headers, wantServer)
	}

	must(t, sc.Ack(1, 1, false))
	must(t, sc.Return(pubs[1], 312, "NO_ROUTE"))
	must(t, sc.Ack(1, 2, false))
	must(t, sc.Ack(1, 3, false))

	for i, dc := range dcs {
		if !waitConfirm(t, dc) {
			t.Errorf("DeferredConfirmation %d nacked, want ack (a returned message is still acked)", i+1)
		}
	}
	// The return precedes tag 2's ack on the wire and the client handles
	// frames in order, so it is already buffered once dc2 has resolved.
	select {
	case r := <-returns:
		if r.ReplyCode != 312 || r.ReplyText != "NO_ROUTE" || r.Exchange != "ex" || r.RoutingKey != "orders.new" ||
			r.MessageId != "m2" || r.ContentType != "application/json" || string(r.Body) != `{"n":2}` {
			t.Errorf("return = %+v", r)
		}
		if !reflect.DeepEqual(r.Headers, headers) {
			t.Errorf("returned headers\n got %#v\nwant %#v", r.Headers, headers)
		}
	default:
		t.Fatal("no basic.return buffered on NotifyReturn after the ack that followed it resolved")
	}
	select {
	case r := <-returns:
		t.Errorf("unexpected second return %+v", r)
	default:
	}
}

// TestMultiFrameBodies checks that bodies split over many frames arrive
// intact in both directions.
func TestMultiFrameBodies(t *testing.T) {
	s := startServer(t, amqpfake.Options{})
	conn, sc := dial(t, s, amqp.Config{FrameSize: 4096})
	if sc.FrameMax() != 4096 {
		t.Fatalf("server saw frame-max %d, want 4096", sc.FrameMax())
	}
	ch, _, returns := confirmChannel(t, conn)

	body := make([]byte, 20*1024)
	for i := range body {
		body[i] = byte(i * 7)
	}
	dc1 := publish(t, ch, "big", true, amqp.Publishing{Body: body, MessageId: "big"})
	dc2 := publish(t, ch, "empty", false, amqp.Publishing{})
	exact := bytes.Repeat([]byte{'e'}, 4096-8) // exactly one full frame
	dc3 := publish(t, ch, "exact", false, amqp.Publishing{Body: exact})

	p := nextPublish(t, sc)
	if !bytes.Equal(p.Body, body) || p.MessageID != "big" || p.Tag != 1 {
		t.Fatalf("big publish: tag %d id %q, %d body octets (equal %v)", p.Tag, p.MessageID, len(p.Body), bytes.Equal(p.Body, body))
	}
	if p2 := nextPublish(t, sc); len(p2.Body) != 0 || p2.Key != "empty" || p2.Tag != 2 {
		t.Errorf("empty publish = %+v", p2)
	}
	if p3 := nextPublish(t, sc); !bytes.Equal(p3.Body, exact) || p3.Tag != 3 {
		t.Errorf("exact-frame publish: tag %d, %d octets", p3.Tag, len(p3.Body))
	}

	// The fake splits what it sends at the negotiated frame-max too; the
	// client would reject an oversized frame with ErrFrameTooLarge.
	must(t, sc.Return(p, 312, "NO_ROUTE"))
	must(t, sc.Ack(1, 3, true))
	for _, dc := range []*amqp.DeferredConfirmation{dc1, dc2, dc3} {
		if !waitConfirm(t, dc) {
			t.Errorf("dc %d nacked", dc.DeliveryTag)
		}
	}
	select {
	case r := <-returns:
		if !bytes.Equal(r.Body, body) {
			t.Errorf("returned body: %d octets, equal %v", len(r.Body), bytes.Equal(r.Body, body))
		}
	default:
		t.Fatal("no return received")
	}
}

// TestCloseWithClientsConnected closes the server under live clients, one
// of them with unconfirmed publishes and one stuck before the handshake.
func TestCloseWithClientsConnected(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	s, err := amqpfake.Start(amqpfake.Options{Heartbeat: time.Second})
	must(t, err)

	conn1, err := amqp.Dial(s.URL())
	must(t, err)
	conn2, err := amqp.DialConfig(s.URL(), amqp.Config{Heartbeat: time.Second})
	must(t, err)
	raw, err := net.Dial("tcp", s.Addr()) // never sends the protocol header
	must(t, err)

	sc1, err := s.Accept(testContext(t))
	must(t, err)
	ch, _, _ := confirmChannel(t, conn1)
	dc := publish(t, ch, "k", false, amqp.Publishing{Body: []byte("pending")})
	if p := nextPublish(t, sc1); string(p.Body) != "pending" {
		t.Fatalf("publish = %+v", p)
	}
	closed1 := conn1.NotifyClose(make(chan *amqp.Error, 1))
	closed2 := conn2.NotifyClose(make(chan *amqp.Error, 1))

	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		must(t, err)
	case <-time.After(waitTimeout):
		t.Fatal("Server.Close did not return")
	}

	for i, c := range []chan *amqp.Error{closed1, closed2} {
		select {
		case e := <-c:
			t.Logf("client %d NotifyClose: %v", i+1, e)
		case <-time.After(waitTimeout):
			t.Fatalf("client %d was not told its connection closed", i+1)
		}
	}
	if ack := waitConfirm(t, dc); ack {
		t.Error("pending DeferredConfirmation acked after the server vanished")
	}
	if _, err := s.Accept(testContext(t)); !errors.Is(err, amqpfake.ErrClosed) {
		t.Errorf("Accept after Close = %v, want ErrClosed", err)
	}
	if _, err := sc1.NextPublish(testContext(t)); !errors.Is(err, amqpfake.ErrClosed) {
		t.Errorf("NextPublish after Close = %v, want ErrClosed", err)
	}
	if err := sc1.Ack(1, 1, false); !errors.Is(err, amqpfake.ErrClosed) {
		t.Errorf("Ack after Close = %v, want ErrClosed", err)
	}
	must(t, s.Close()) // idempotent
	_ = conn1.Close()
	_ = conn2.Close()
	_ = raw.Close()
	goleak.VerifyNone(t, ignore)
}

func TestCloseConnectionByServer(t *testing.T) {
	s := startServer(t, amqpfake.Options{})
	conn, sc := dial(t, s, amqp.Config{})
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	must(t, sc.CloseConnection(320, "CONNECTION_FORCED - test"))
	select {
	case e := <-closed:
		if e == nil || e.Code != 320 || !e.Server {
			t.Errorf("client NotifyClose = %v, want server error 320", e)
		}
	case <-time.After(waitTimeout):
		t.Fatal("client not notified")
	}
	<-sc.Done()
	if err := sc.Err(); !errors.Is(err, amqpfake.ErrClosed) || !strings.Contains(err.Error(), "by server (320") {
		t.Errorf("Err() = %v", err)
	}
}

func TestUnsupportedMethodClosesConnection(t *testing.T) {
	s := startServer(t, amqpfake.Options{})
	conn, sc := dial(t, s, amqp.Config{})
	ch, err := conn.Channel()
	must(t, err)
	_, _, err = ch.Get("q", true) // basic.get is not implemented
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != 540 {
		t.Errorf("Get = %v, want a 540 NOT_IMPLEMENTED error", err)
	}
	select {
	case <-sc.Done():
	case <-time.After(waitTimeout):
		t.Fatal("server connection did not end")
	}
	if err := sc.Err(); !strings.Contains(err.Error(), "NOT_IMPLEMENTED") {
		t.Errorf("Err() = %v, want the protocol error", err)
	}
}

func TestDrop(t *testing.T) {
	s := startServer(t, amqpfake.Options{})
	conn, sc := dial(t, s, amqp.Config{})
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	must(t, sc.Drop())
	select {
	case e := <-closed:
		t.Logf("NotifyClose after Drop: %v", e)
	case <-time.After(waitTimeout):
		t.Fatal("client not notified of the dropped socket")
	}
	<-sc.Done()
	if !errors.Is(sc.Err(), amqpfake.ErrClosed) {
		t.Errorf("Err() = %v", sc.Err())
	}
}

func TestBlockUnblock(t *testing.T) {
	s := startServer(t, amqpfake.Options{})
	conn, sc := dial(t, s, amqp.Config{})
	blocks := conn.NotifyBlocked(make(chan amqp.Blocking, 2))
	must(t, sc.Block("low on memory"))
	must(t, sc.Unblock())
	for _, want := range []amqp.Blocking{{Active: true, Reason: "low on memory"}, {Active: false}} {
		select {
		case b := <-blocks:
			if b != want {
				t.Errorf("blocking = %+v, want %+v", b, want)
			}
		case <-time.After(waitTimeout):
			t.Fatal("no blocking notification")
		}
	}
}
