package rabbitnode

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/isobroker/broker/internal/testenv"
)

func nodeNames(ns []*Node) []string {
	var out []string
	for _, n := range ns {
		if n == nil {
			out = append(out, "<nil>")
			continue
		}
		out = append(out, n.Name())
	}
	slices.Sort(out)
	return out
}

func TestClusterFormsAndStops(t *testing.T) {
	testenv.NeedsServer(t, Needs)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	begin := time.Now()
	// Lifecycle logs (start, join, ready, stop with their durations) show
	// with -v and on failure.
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	c, err := StartCluster(ctx, 3, Options{Name: "rncluster", Logger: logger})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Logf("3-node cluster ready in %v at %s (dir %s, epmd %d)", time.Since(begin).Round(time.Millisecond), c.URL(), c.Dir(), c.EpmdPort())
	stopped := false
	defer func() {
		if !stopped {
			_ = c.Stop(context.Background())
		}
	}()

	nodes := c.Nodes()
	if len(nodes) != 3 {
		t.Fatalf("Nodes() = %d nodes, want 3", len(nodes))
	}
	want := nodeNames(nodes)
	if len(slices.Compact(slices.Clone(want))) != 3 {
		t.Fatalf("node names not distinct: %v", want)
	}
	// Every member sees all three as members and running.
	for _, n := range nodes {
		st, err := c.Status(ctx, n)
		if err != nil {
			t.Fatalf("cluster_status on %s: %v", n.Name(), err)
		}
		if !slices.Equal(st.Nodes, want) || !slices.Equal(st.Running, want) {
			t.Errorf("cluster_status on %s: members %v running %v, want %v for both", n.Name(), st.Nodes, st.Running, want)
		}
	}

	// The URL lists every member, each of which answers AMQP.
	wantURL := fmt.Sprintf("amqp://guest:guest@%s,%s,%s/", nodes[0].Addr(), nodes[1].Addr(), nodes[2].Addr())
	if c.URL() != wantURL {
		t.Errorf("URL() = %s, want %s", c.URL(), wantURL)
	}
	for _, n := range nodes {
		if err := handshake(ctx, n.URL()); err != nil {
			t.Errorf("AMQP handshake with %s: %v", n.Name(), err)
		}
		assertLoopbackOnly(t, n)
	}

	// Isolation: the cluster's epmd knows its three nodes and nothing else
	// (rabbitmqctl's own short-lived hidden nodes aside), and every member
	// uses it; no node uses the default epmd port.
	out, err := exec.CommandContext(ctx, nodes[0].opts.Epmd, "-port", strconv.Itoa(c.EpmdPort()), "-names").Output()
	if err != nil {
		t.Fatalf("epmd -names: %v", err)
	}
	var registered []string
	for _, line := range strings.Split(string(out), "\n") {
		if name, ok := strings.CutPrefix(line, "name "); ok {
			name, _, _ = strings.Cut(name, " ")
			if !strings.HasPrefix(name, "rabbitmqcli") {
				registered = append(registered, name+"@localhost")
			}
		}
	}
	slices.Sort(registered)
	if !slices.Equal(registered, want) {
		t.Errorf("the cluster's epmd lists %v, want %v:\n%s", registered, want, out)
	}
	for _, n := range nodes {
		if n.epmdPort != c.EpmdPort() || n.epmdPort == 4369 {
			t.Errorf("node %s uses epmd port %d; the cluster's is %d", n.Name(), n.epmdPort, c.EpmdPort())
		}
		cookie, err := os.ReadFile(filepath.Join(n.Dir(), ".erlang.cookie"))
		if err != nil || string(cookie) != c.cookie {
			t.Errorf("node %s cookie file: %q, %v", n.Name(), cookie, err)
		}
	}

	// The seed (the node the others joined, and the first host of URL)
	// is killed: the other two see it gone; started again it rejoins.
	seed := nodes[0]
	if err := seed.Kill(); err != nil {
		t.Fatalf("kill seed: %v", err)
	}
	if left := seed.Processes(); len(left) > 0 {
		t.Errorf("killed seed: processes left %v", left)
	}
	if err := c.WaitRunning(ctx); err != nil {
		t.Fatalf("after killing the seed: %v", err)
	}
	for _, n := range nodes[1:] {
		st, err := c.Status(ctx, n)
		if err != nil {
			t.Fatalf("cluster_status on %s: %v", n.Name(), err)
		}
		if !slices.Equal(st.Nodes, want) || slices.Contains(st.Running, seed.Name()) || len(st.Running) != 2 {
			t.Errorf("with the seed killed, %s sees members %v running %v", n.Name(), st.Nodes, st.Running)
		}
	}
	begin = time.Now()
	if err := c.Up(ctx, seed); err != nil {
		t.Fatalf("restart killed seed: %v", err)
	}
	t.Logf("killed seed restarted and rejoined in %v", time.Since(begin).Round(time.Millisecond))
	// A graceful restart of another member.
	begin = time.Now()
	if err := c.Restart(ctx, nodes[2]); err != nil {
		t.Fatalf("restart %s: %v", nodes[2].Name(), err)
	}
	t.Logf("graceful restart of a member took %v", time.Since(begin).Round(time.Millisecond))
	for _, n := range nodes {
		st, err := c.Status(ctx, n)
		if err != nil {
			t.Fatalf("cluster_status on %s: %v", n.Name(), err)
		}
		if !slices.Equal(st.Nodes, want) || !slices.Equal(st.Running, want) {
			t.Errorf("after the restarts, %s sees members %v running %v, want %v", n.Name(), st.Nodes, st.Running, want)
		}
		if err := handshake(ctx, n.URL()); err != nil {
			t.Errorf("after the restarts, AMQP handshake with %s: %v", n.Name(), err)
		}
	}

	// Three servers and the epmd run.
	pids := c.Processes()
	if len(pids) < 4 {
		t.Errorf("expected at least 3 servers and an epmd, found processes %v", pids)
	}
	for _, n := range nodes {
		if len(n.Processes()) == 0 {
			t.Errorf("node %s: no process found", n.Name())
		}
	}

	begin = time.Now()
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	stopped = true
	t.Logf("stop took %v", time.Since(begin).Round(time.Millisecond))
	assertClusterGone(t, c)
	if err := c.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// assertClusterGone checks that no process, port or dir of c is left.
func assertClusterGone(t *testing.T, c *Cluster) {
	t.Helper()
	if left := c.Processes(); len(left) > 0 {
		t.Errorf("processes left after Stop: %v", left)
	}
	pats := []string{c.Dir(), "epmd -port " + strconv.Itoa(c.EpmdPort()) + " "}
	for _, n := range c.Nodes() {
		pats = append(pats, n.Name())
		if left := n.Processes(); len(left) > 0 {
			t.Errorf("node %s: processes left after Stop: %v", n.Name(), left)
		}
		for _, port := range []int{n.port, n.distPort} {
			if conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second); err == nil {
				conn.Close()
				t.Errorf("node %s: port %d still open after Stop", n.Name(), port)
			}
		}
	}
	for _, pat := range pats {
		if out, err := exec.Command("pgrep", "-f", pat).Output(); err == nil {
			t.Errorf("pgrep -f %q finds %s", pat, strings.TrimSpace(string(out)))
		}
	}
	if conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.EpmdPort())), time.Second); err == nil {
		conn.Close()
		t.Errorf("epmd port %d still open after Stop", c.EpmdPort())
	}
	if _, err := os.Stat(c.Dir()); !os.IsNotExist(err) {
		t.Errorf("cluster dir %s still there after Stop (stat: %v)", c.Dir(), err)
	}
}

func TestClusterQuorumLeaderKill(t *testing.T) {
	begin := time.Now()
	c := StartClusterT(t, 3)
	t.Logf("3-node cluster ready in %v", time.Since(begin).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nodes := c.Nodes()
	const queue = "qq-leader-kill"
	const count = 50

	// Declare through the second node, amqp091-go directly.
	decl := dialNamed(t, nodes[1].URL(), "rntest-declare")
	ch, err := decl.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		t.Fatalf("declare quorum queue: %v", err)
	}
	q, err := c.Queue(ctx, "/", queue)
	if err != nil {
		t.Fatal(err)
	}
	if q.Type != "quorum" {
		t.Fatalf("queue type %q, want quorum", q.Type)
	}
	if got, want := nodeNames(q.Members), nodeNames(nodes); !slices.Equal(got, want) {
		t.Fatalf("quorum queue members %v, want all of %v", got, want)
	}
	leader, err := c.QueueLeader(ctx, "/", queue)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("leader %s (declared through %s)", leader.Name(), nodes[1].Name())
	// A classic queue is listed too, and QueueLeader says it is none.
	if _, err := ch.QueueDeclare("classic-q", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if cq, err := c.Queue(ctx, "", "classic-q"); err != nil || cq.Type != "classic" {
		t.Errorf("Queue(classic-q) = %+v, %v; want a classic queue", cq, err)
	} else {
		t.Logf("classic queue: leader %v, members %v", cq.Leader, nodeNames(cq.Members))
	}
	if _, err := c.QueueLeader(ctx, "", "classic-q"); err == nil || !strings.Contains(err.Error(), "not a quorum queue") {
		t.Errorf("QueueLeader(classic-q) error = %v, want 'not a quorum queue'", err)
	}
	if _, err := c.QueueLeader(ctx, "", "no-such-queue"); err == nil {
		t.Errorf("QueueLeader(no-such-queue) succeeded")
	}

	// Publish with confirms through the leader itself.
	pub := dialNamed(t, leader.URL(), "rntest-publisher")
	pch, err := pub.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := pch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	var confirms []*amqp.DeferredConfirmation
	for i := range count {
		dc, err := pch.PublishWithDeferredConfirm("", queue, true, false,
			amqp.Publishing{Body: []byte("m" + strconv.Itoa(i)), DeliveryMode: amqp.Persistent})
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		confirms = append(confirms, dc)
	}
	for i, dc := range confirms {
		if ok, err := dc.WaitContext(ctx); !ok || err != nil {
			t.Fatalf("confirm %d: ack=%v err=%v", i, ok, err)
		}
	}

	// ConnectionNodes finds each named connection on the node it dialled.
	var other *Node // a member that is not the leader
	for _, n := range nodes {
		if n != leader {
			other = n
			break
		}
	}
	dialNamed(t, other.URL(), "rntest-probe")
	cn, err := c.ConnectionNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]*Node{"rntest-declare": nodes[1], "rntest-publisher": leader, "rntest-probe": other} {
		if cn[name] != want {
			t.Errorf("ConnectionNodes()[%q] = %v, want %s (all: %v)", name, cn[name], want.Name(), cn)
		}
	}

	// kill -9 of the leader's process group.
	if err := leader.Kill(); err != nil {
		t.Fatalf("kill leader: %v", err)
	}
	killed := time.Now()
	if left := leader.Processes(); len(left) > 0 {
		t.Errorf("killed leader %s: processes left %v", leader.Name(), left)
	}
	if leader.Running() {
		t.Errorf("killed leader %s still reports Running", leader.Name())
	}
	if conn, err := net.DialTimeout("tcp", leader.Addr(), time.Second); err == nil {
		conn.Close()
		t.Errorf("killed leader's AMQP port is still open")
	}

	// A new leader, live, is elected.
	newLeader, err := c.WaitQueueLeader(ctx, "/", queue, leader)
	if err != nil {
		t.Fatal(err)
	}
	if newLeader == leader || !newLeader.Running() {
		t.Fatalf("WaitQueueLeader returned %s (running %v); the killed leader was %s", newLeader.Name(), newLeader.Running(), leader.Name())
	}
	t.Logf("leader kill → new leader %s named after %v", newLeader.Name(), time.Since(killed).Round(time.Millisecond))

	// The killed node's connections are gone from the listing.
	cn, err = c.ConnectionNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := cn["rntest-publisher"]; ok {
		t.Errorf("publisher's connection still listed, on %s", n.Name())
	}
	if cn["rntest-probe"] != other {
		t.Errorf("probe connection on %v, want %s", cn["rntest-probe"], other.Name())
	}

	// Every confirmed message is consumable through a surviving node.
	var survivor *Node
	for _, n := range nodes {
		if n != leader && n != newLeader {
			survivor = n
		}
	}
	// A publish through it is confirmed (the queue has its quorum, 2 of 3).
	sconn := dialNamed(t, survivor.URL(), "rntest-publisher-2")
	sch, err := sconn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	dc, err := sch.PublishWithDeferredConfirm("", queue, true, false,
		amqp.Publishing{Body: []byte("m" + strconv.Itoa(count)), DeliveryMode: amqp.Persistent})
	if err != nil {
		t.Fatalf("publish after the kill: %v", err)
	}
	if ok, err := dc.WaitContext(ctx); !ok || err != nil {
		t.Fatalf("confirm after the kill: ack=%v err=%v", ok, err)
	}
	t.Logf("leader kill → a publish through %s confirmed after %v", survivor.Name(), time.Since(killed).Round(time.Millisecond))
	getAll(ctx, t, survivor.URL(), queue, count+1)

	// The killed node restarts and rejoins.
	begin = time.Now()
	if err := c.Up(ctx, leader); err != nil {
		t.Fatalf("restart killed node: %v", err)
	}
	t.Logf("killed node restarted and rejoined in %v", time.Since(begin).Round(time.Millisecond))
	want := nodeNames(nodes)
	for _, n := range nodes {
		st, err := c.Status(ctx, n)
		if err != nil {
			t.Fatalf("cluster_status on %s: %v", n.Name(), err)
		}
		if !slices.Equal(st.Running, want) {
			t.Errorf("after restart, %s sees running %v, want %v", n.Name(), st.Running, want)
		}
	}
	// Its queue member comes back online.
	for {
		q, err := c.Queue(ctx, "/", queue)
		if err == nil && slices.Equal(nodeNames(q.Online), want) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("quorum queue members online %v (err %v), want %v", nodeNames(q.Online), err, want)
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Logf("its queue member online %v after restart began", time.Since(begin).Round(time.Millisecond))
	if err := handshake(ctx, leader.URL()); err != nil {
		t.Errorf("restarted node refuses AMQP: %v", err)
	}
}

// dialNamed connects to url with client property connection_name and
// closes the connection when the test ends.
func dialNamed(t *testing.T, url, name string) *amqp.Connection {
	t.Helper()
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(name)
	conn, err := amqp.DialConfig(url, amqp.Config{Properties: props, Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = conn.CloseDeadline(time.Now().Add(2 * time.Second)) })
	return conn
}

// getAll fetches count messages "m0".."m<count-1>" (in any order) from
// queue through url and checks the queue is empty afterwards.
func getAll(ctx context.Context, t *testing.T, url, queue string, count int) {
	t.Helper()
	conn := dialNamed(t, url, "rntest-getter")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for len(seen) < count {
		d, ok, err := ch.Get(queue, false)
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		if !ok {
			if ctx.Err() != nil {
				t.Fatalf("only %d of %d messages: %v", len(seen), count, ctx.Err())
			}
			// basic.get may answer empty while the queue's new leader
			// settles; the confirmed messages must appear.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if err := d.Ack(false); err != nil {
			t.Fatalf("ack: %v", err)
		}
		seen[string(d.Body)] = true
	}
	for i := range count {
		if !seen["m"+strconv.Itoa(i)] {
			t.Errorf("message m%d missing", i)
		}
	}
	if _, ok, err := ch.Get(queue, false); err != nil || ok {
		t.Errorf("queue not empty after %d messages: ok=%v err=%v", count, ok, err)
	}
}

func TestStartClusterHonoursContext(t *testing.T) {
	testenv.NeedsServer(t, Needs) // starts nodes, if only for a few seconds
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	begin := time.Now()
	c, err := StartCluster(ctx, 3, Options{Name: "rnclctx"})
	if err == nil {
		_ = c.Stop(context.Background())
		t.Fatal("cluster started within 2s; expected a timeout")
	}
	if d := time.Since(begin); d > 20*time.Second {
		t.Errorf("StartCluster took %v with a 2s ctx", d)
	}
	t.Logf("start with short ctx: %v", firstLine(err.Error()))
	time.Sleep(200 * time.Millisecond)
	if out, err := exec.Command("pgrep", "-f", "rabbitnode-rnclctx-").Output(); err == nil {
		t.Errorf("processes left after a failed StartCluster: %s", out)
	}
	if m, _ := filepath.Glob(filepath.Join(os.TempDir(), "rabbitnode-rnclctx-*")); len(m) > 0 {
		t.Errorf("dirs left after a failed StartCluster: %v", m)
	}
}

func TestStartClusterBadSize(t *testing.T) {
	if _, err := StartCluster(context.Background(), 0, Options{}); err == nil {
		t.Fatal("StartCluster with 0 nodes succeeded")
	}
}

func TestNameList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		ok   bool
	}{
		{`["a@h","b@h"]`, []string{"a@h", "b@h"}, true},
		{`""`, nil, true}, // an empty Erlang list
		{`[]`, []string{}, true},
		{`null`, nil, true},
		{`"a@h"`, nil, false},
		{`{"a":1}`, nil, false},
	} {
		var l nameList
		err := json.Unmarshal([]byte(tc.in), &l)
		if (err == nil) != tc.ok || (tc.ok && !slices.Equal(l, tc.want)) {
			t.Errorf("nameList(%s) = %q, %v; want %q, ok=%v", tc.in, l, err, tc.want, tc.ok)
		}
	}
}

func TestMentionsPath(t *testing.T) {
	for _, tc := range []struct {
		cmdline string
		want    bool
	}{
		{"erl\x00-mnesia\x00dir\x00\"/tmp/c/n1/mnesia\"", true},
		{"erl\x00-home\x00/tmp/c/n1", true},
		{"erl\x00-home\x00/tmp/c/n1\x00-x", true},
		{"erl\x00-home\x00\"/tmp/c/n1\"", true},
		{"erl\x00-mnesia\x00/tmp/c/n10/mnesia", false},
		{"erl\x00/tmp/c/n10\x00/tmp/c/n1/x", true},
		{"epmd\x00-port\x004369", false},
	} {
		if got := mentionsPath([]byte(tc.cmdline), "/tmp/c/n1"); got != tc.want {
			t.Errorf("mentionsPath(%q) = %v, want %v", tc.cmdline, got, tc.want)
		}
	}
}
