package amqpfake_test

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/isobroker/broker/internal/amqpfake"
)

// TestMain fails the package's tests if any goroutine, the fake server's or
// the amqp091-go client's, outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait in these tests; nothing legitimate takes
// more than a few milliseconds on loopback.
const waitTimeout = 5 * time.Second

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// startServer starts a fake server that is closed when the test ends.
func startServer(t *testing.T, opts amqpfake.Options) *amqpfake.Server {
	t.Helper()
	s, err := amqpfake.Start(opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Server.Close: %v", err)
		}
	})
	return s
}

// dial connects an amqp091-go client (closed when the test ends, before the
// server is) and returns it with the server side of the connection.
func dial(t *testing.T, s *amqpfake.Server, cfg amqp.Config) (*amqp.Connection, *amqpfake.Conn) {
	t.Helper()
	conn, err := amqp.DialConfig(s.URL(), cfg)
	if err != nil {
		t.Fatalf("DialConfig: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	sc, err := s.Accept(testContext(t))
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	return conn, sc
}

// confirmChannel opens a channel in confirm mode with a NotifyPublish
// listener and a NotifyReturn listener.
func confirmChannel(t *testing.T, conn *amqp.Connection) (*amqp.Channel, chan amqp.Confirmation, chan amqp.Return) {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("Channel: %v", err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatalf("Confirm: %v", err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 10))
	returns := ch.NotifyReturn(make(chan amqp.Return, 10))
	return ch, confirms, returns
}

// publish publishes msg with a deferred confirmation.
func publish(t *testing.T, ch *amqp.Channel, key string, mandatory bool, msg amqp.Publishing) *amqp.DeferredConfirmation {
	t.Helper()
	dc, err := ch.PublishWithDeferredConfirm("ex", key, mandatory, false, msg)
	if err != nil {
		t.Fatalf("PublishWithDeferredConfirm: %v", err)
	}
	if dc == nil {
		t.Fatal("PublishWithDeferredConfirm returned no DeferredConfirmation on a confirm channel")
	}
	return dc
}

// nextPublish returns the next publish the server received.
func nextPublish(t *testing.T, sc *amqpfake.Conn) amqpfake.Publish {
	t.Helper()
	p, err := sc.NextPublish(testContext(t))
	if err != nil {
		t.Fatalf("NextPublish: %v", err)
	}
	return p
}

// nextConfirmation reads one confirmation from a NotifyPublish channel.
func nextConfirmation(t *testing.T, confirms <-chan amqp.Confirmation) amqp.Confirmation {
	t.Helper()
	select {
	case c, ok := <-confirms:
		if !ok {
			t.Fatal("NotifyPublish channel closed")
		}
		return c
	case <-time.After(waitTimeout):
		t.Fatal("timed out waiting for NotifyPublish")
	}
	return amqp.Confirmation{}
}

// waitConfirm waits for a deferred confirmation and returns its ack flag.
func waitConfirm(t *testing.T, dc *amqp.DeferredConfirmation) bool {
	t.Helper()
	ack, err := dc.WaitContext(testContext(t))
	if err != nil {
		t.Fatalf("DeferredConfirmation %d: %v", dc.DeliveryTag, err)
	}
	return ack
}

// must fails the test on a script error.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
