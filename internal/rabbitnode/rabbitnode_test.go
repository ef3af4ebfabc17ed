package rabbitnode

import (
	"context"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/isobroker/broker/internal/testenv"
)

func TestStartConnectRestartStop(t *testing.T) {
	testenv.NeedsServer(t, Needs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	begin := time.Now()
	n, err := Start(ctx, Options{Name: "rntest"})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Logf("node %s ready in %v at %s (dir %s)", n.Name(), time.Since(begin).Round(time.Millisecond), n.URL(), n.Dir())
	stopped := false
	defer func() {
		if !stopped {
			_ = n.Stop(context.Background())
		}
	}()

	// A real client works, and the node listens on loopback only.
	publishAndGet(t, n.URL(), "q1", true)
	assertLoopbackOnly(t, n)

	// rabbitmqctl reaches this node.
	out, err := n.Ctl(ctx, "list_queues", "name", "messages")
	if err != nil {
		t.Fatalf("ctl: %v", err)
	}
	if !strings.Contains(out, "q1") {
		t.Errorf("list_queues does not show q1:\n%s", out)
	}

	// Restart keeps durable state.
	publishAndGet(t, n.URL(), "durable-q", false) // publish only
	begin = time.Now()
	if err := n.Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	t.Logf("restart took %v", time.Since(begin).Round(time.Millisecond))
	getOne(t, n.URL(), "durable-q")

	pids := n.Processes()
	if len(pids) < 2 {
		t.Errorf("expected server and epmd processes, found %v", pids)
	}
	begin = time.Now()
	if err := n.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	stopped = true
	t.Logf("stop took %v", time.Since(begin).Round(time.Millisecond))
	if left := n.Processes(); len(left) > 0 {
		t.Errorf("processes left after Stop: %v", left)
	}
	// pgrep agrees: nothing runs with the node's name or its epmd port.
	for _, pat := range []string{n.Name(), n.Dir(), "epmd -port " + strconv.Itoa(n.epmdPort)} {
		if out, err := exec.Command("pgrep", "-f", pat).Output(); err == nil {
			t.Errorf("pgrep -f %q finds %s", pat, strings.TrimSpace(string(out)))
		}
	}
	if c, err := net.DialTimeout("tcp", n.Addr(), time.Second); err == nil {
		c.Close()
		t.Errorf("AMQP port still open after Stop")
	}
}

func TestStartHonoursContext(t *testing.T) {
	testenv.NeedsServer(t, Needs) // starts a node, if only for 500ms
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	begin := time.Now()
	n, err := Start(ctx, Options{Name: "rnctx"})
	if err == nil {
		_ = n.Stop(context.Background())
		t.Fatal("node started within 500ms; expected a timeout")
	}
	if d := time.Since(begin); d > 15*time.Second {
		t.Errorf("Start took %v with a 500ms ctx", d)
	}
	t.Logf("start with short ctx: %v", firstLine(err.Error()))
	// Nothing of the failed attempt keeps running.
	time.Sleep(200 * time.Millisecond)
	if out, err := exec.Command("pgrep", "-f", "rabbitnode-rnctx-").Output(); err == nil {
		t.Errorf("processes left after a failed Start: %s", out)
	}
}

func TestMissingServer(t *testing.T) {
	_, err := Start(context.Background(), Options{Server: "/nonexistent/rabbitmq-server"})
	if err == nil || !strings.Contains(err.Error(), "not installed") {
		t.Fatalf("Start with a missing server = %v, want ErrNotInstalled", err)
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func assertLoopbackOnly(t *testing.T, n *Node) {
	t.Helper()
	out, err := exec.Command("ss", "-ltnp").Output()
	if err != nil {
		t.Skipf("ss not available: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		for _, port := range []int{n.port, n.distPort, n.epmdPort} {
			if strings.Contains(line, ":"+strconv.Itoa(port)+" ") &&
				!strings.Contains(line, "127.0.0.1:") && !strings.Contains(line, "[::1]:") {
				t.Errorf("port %d listens beyond loopback: %s", port, line)
			}
		}
	}
}

func publishAndGet(t *testing.T, url, queue string, get bool) {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatalf("declare: %v", err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	dc, err := ch.PublishWithDeferredConfirm("", queue, false, false,
		amqp.Publishing{Body: []byte("hello"), DeliveryMode: amqp.Persistent})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ok, err := dc.WaitContext(ctx); !ok || err != nil {
		t.Fatalf("confirm: %v %v", ok, err)
	}
	if get {
		getOne(t, url, queue)
	}
}

func getOne(t *testing.T, url, queue string) {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	d, ok, err := ch.Get(queue, true)
	if err != nil || !ok || string(d.Body) != "hello" {
		t.Fatalf("get from %s: ok=%v err=%v body=%q", queue, ok, err, d.Body)
	}
}
