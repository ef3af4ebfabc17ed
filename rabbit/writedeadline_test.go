package rabbit_test

import (
	"strings"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/rabbit"
)

// TestWriteDeadlineDropsStalledConnection: when the peer stops reading,
// the socket write blocks once the buffers on the way are full. The
// connection's write deadline (Config.WriteTimeout, 1 s here) then fails
// that write, so the connection is declared lost and rebuilt — instead of
// the writer blocking forever (amqp091-go's own trap) or until the
// heartbeat's read deadline (3 × 10 s). The Publish that was blocked is
// resent on the rebuilt connection once the peer reads again and returns
// nil: nothing lost.
func TestWriteDeadlineDropsStalledConnection(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t, ignoreToxiproxy...)
	px := newFaultProxy(t, url)
	logs := &logBuffer{}
	b := open(t, px.url, rabbit.WithLogger(logs.logger()), rabbit.WithConfig(func(c *rabbit.Config) {
		c.WriteTimeout = time.Second
		c.AllowUnroutable = true // no queue needed: the test is about the socket
		c.Backoff = broker.Backoff{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond}
	}))
	topic := brokertest.RandomName("wdl")
	ctx := ctxFor(t, 2*time.Minute)
	if err := b.Publish(ctx, topic, &broker.Message{ID: "warm-up"}); err != nil {
		t.Fatal(err)
	}

	// A latency toxic holds the first chunk it reads for ten minutes and
	// reads nothing more meanwhile: the proxy stops reading what the
	// client writes, as a peer with a full receive window does. (The
	// stall toxic of the other tests reads and drops, so writes never
	// block there.) The server's frames still reach the client, so its
	// heartbeat read deadline cannot be what ends the connection.
	hold := `{"name":"hold","type":"latency","stream":"upstream","toxicity":1,"attributes":{"latency":600000}}`
	if _, err := px.p.Toxics.AddToxicJson(strings.NewReader(hold)); err != nil {
		t.Fatal(err)
	}
	stalled := time.Now()
	// 64 MiB in one call: far more than the socket buffers and the
	// proxy's queue hold, so the writer blocks in a socket write.
	msgs := make([]*broker.Message, 128)
	for i := range msgs {
		msgs[i] = &broker.Message{ID: "big", Body: make([]byte, 512<<10)}
	}
	published := make(chan error, 1)
	go func() { published <- b.Publish(ctx, topic, msgs...) }()

	lostLine := func() string {
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "rabbit: connection lost") {
				return line
			}
		}
		return ""
	}
	// The write deadline is 1 s; the server would give up on the missing
	// heartbeats only after about 30 s. 15 s leaves room for a slow machine.
	const bound = 15 * time.Second
	for lostLine() == "" && time.Since(stalled) < bound {
		time.Sleep(20 * time.Millisecond)
	}
	line := lostLine()
	if line == "" {
		t.Fatalf("connection not declared lost within %v of the stall:\n%s", bound, logs)
	}
	t.Logf("lost %v after the stall: %s", time.Since(stalled).Round(time.Millisecond), line)
	if !strings.Contains(line, "write") || !strings.Contains(line, "timeout") {
		t.Errorf("connection lost for another reason than the write deadline: %s", line)
	}
	select {
	case err := <-published:
		t.Fatalf("Publish returned %v while the peer was stalled; want it to wait for recovery", err)
	default:
	}

	if err := px.p.Toxics.RemoveToxic(ctx, "hold"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-published:
		if err != nil {
			t.Fatalf("Publish after the peer reads again = %v, want nil (resent on the rebuilt connection)", err)
		}
	case <-ctx.Done():
		t.Fatal("Publish did not return after the stall ended")
	}
	if st := b.State(); st != broker.StateConnected {
		t.Errorf("state = %v, want connected", st)
	}
}
