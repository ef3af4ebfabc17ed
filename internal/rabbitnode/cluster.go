package rabbitnode

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/isobroker/broker/internal/testenv"
)

// DefaultClusterStartTimeout bounds StartClusterT. Nodes start in parallel
// (each bounded by Options.StartTimeout) and then join one after the other.
const DefaultClusterStartTimeout = 3 * time.Minute

// Cluster is n throw-away nodes on loopback joined into one RabbitMQ
// cluster. Its nodes share one Erlang cookie and one epmd of their own (on a
// private port), so they reach each other over Erlang distribution and
// nothing else does: two clusters, or a cluster and a single node, never see
// each other. All of it lives below one temp dir (one sub-dir per node).
//
// A member is a *Node: Kill, Down, Up and Ctl work on it as on a single
// node; its epmd belongs to the cluster. A member that was killed or taken
// down remembers its cluster when started again (Up or Cluster.Up).
//
// Its methods are safe for concurrent use.
type Cluster struct {
	opts     Options
	log      *slog.Logger
	id       string // node name prefix, e.g. isobroker-12345
	dir      string
	epmdPort int
	cookie   string
	env      []string // for epmd

	mu    sync.Mutex
	nodes []*Node
	epmd  *proc
	gone  bool
}

// StartCluster starts n nodes (in parallel) that share a fresh cookie and
// a private epmd, joins the second and later ones to the first with
// rabbitmqctl stop_app, join_cluster and start_app, and returns once
// cluster_status on every node lists all n running and each completes an
// AMQP handshake. It is bounded by ctx (and each node's start by
// opts.StartTimeout); on failure it kills and removes everything it started.
// opts.Config applies to every node.
func StartCluster(ctx context.Context, n int, opts Options) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("rabbitnode: a cluster needs at least one node, not %d", n)
	}
	opts = opts.withDefaults()
	if _, err := os.Stat(opts.Server); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotInstalled, err)
	}
	begin := time.Now()
	c, err := newCluster(opts)
	if err != nil {
		return nil, err
	}
	if err := c.form(ctx, n); err != nil {
		// Throw-away state: kill rather than wait for orderly shutdowns.
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if serr := c.stop(stopCtx, false); serr != nil {
			err = errors.Join(err, serr)
		}
		return nil, err
	}
	c.log.Info("rabbitnode: cluster ready", "nodes", n, "after", time.Since(begin).Round(time.Millisecond))
	return c, nil
}

// newCluster creates the cluster's dir and cookie and starts its epmd (on
// a new port after a clash, three attempts).
func newCluster(opts Options) (*Cluster, error) {
	dir, err := os.MkdirTemp(opts.BaseDir, "rabbitnode-"+opts.Name+"-")
	if err != nil {
		return nil, fmt.Errorf("rabbitnode: temp dir: %w", err)
	}
	cookie, err := newCookie()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	c := &Cluster{
		opts:   opts,
		id:     opts.Name + "-" + filepath.Base(dir)[len("rabbitnode-"+opts.Name+"-"):],
		dir:    dir,
		cookie: cookie,
		env:    childEnv(map[string]string{"HOME": dir}),
	}
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(1)
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
		p, err := startEpmd(opts.Epmd, dir, c.env, ports[0])
		if err == nil {
			c.epmdPort, c.epmd = ports[0], p
			break
		}
		if !errors.Is(err, errPortInUse) || attempt == 3 {
			_ = os.RemoveAll(dir)
			return nil, err
		}
	}
	c.log = opts.Logger.With("cluster", c.id, "epmd", c.epmdPort)
	return c, nil
}

// newCookie returns 20 random upper-case letters.
func newCookie() (string, error) {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("rabbitnode: cookie: %w", err)
	}
	for i := range b {
		b[i] = 'A' + b[i]%26
	}
	return string(b), nil
}

func (c *Cluster) form(ctx context.Context, n int) error {
	ports, err := freePorts(2 * n)
	if err != nil {
		return err
	}
	nodes := make([]*Node, n)
	for i := range nodes {
		if nodes[i], err = c.newMember(i+1, ports[2*i], ports[2*i+1]); err != nil {
			c.mu.Lock()
			c.nodes = nodes[:i]
			c.mu.Unlock()
			return err
		}
	}
	c.mu.Lock()
	c.nodes = nodes
	c.mu.Unlock()

	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = c.upMember(ctx, i) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	nodes = c.Nodes()
	seed := nodes[0]
	for _, m := range nodes[1:] {
		if err := c.join(ctx, m, seed); err != nil {
			return err
		}
	}
	if err := c.WaitRunning(ctx); err != nil {
		return err
	}
	for _, m := range nodes {
		if err := handshake(ctx, m.URL()); err != nil {
			return fmt.Errorf("rabbitnode: node %s joined but refuses AMQP: %w", m.name, err)
		}
	}
	return nil
}

// newMember prepares member i (1-based): its dir below the cluster's, its
// files (the cookie among them) and its environment.
func (c *Cluster) newMember(i, port, distPort int) (*Node, error) {
	n := &Node{
		opts:     c.opts,
		dir:      filepath.Join(c.dir, "n"+strconv.Itoa(i)),
		name:     c.id + "-" + strconv.Itoa(i) + "@localhost",
		port:     port,
		distPort: distPort,
		epmdPort: c.epmdPort,
		cookie:   c.cookie,
	}
	n.log = c.opts.Logger.With("node", n.name, "port", n.port)
	if err := os.Mkdir(n.dir, 0o755); err != nil {
		return nil, fmt.Errorf("rabbitnode: %w", err)
	}
	if err := n.writeFiles(); err != nil {
		return nil, err
	}
	n.env = n.environ()
	return n, nil
}

// upMember starts member i, replacing it by one on new ports after a port
// clash (three attempts).
func (c *Cluster) upMember(ctx context.Context, i int) error {
	for attempt := 1; ; attempt++ {
		c.mu.Lock()
		m := c.nodes[i]
		c.mu.Unlock()
		err := m.Up(ctx)
		if err == nil || !errors.Is(err, errPortInUse) || attempt == 3 || ctx.Err() != nil {
			return err
		}
		c.log.Warn("rabbitnode: port clash, retrying member with new ports", "node", m.name, "attempt", attempt, "err", err)
		if err := m.stop(ctx, false); err != nil {
			return err
		}
		ports, err := freePorts(2)
		if err != nil {
			return err
		}
		nm, err := c.newMember(i+1, ports[0], ports[1])
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.nodes[i] = nm
		c.mu.Unlock()
	}
}

// join makes m a member of seed's cluster.
func (c *Cluster) join(ctx context.Context, m, seed *Node) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	begin := time.Now()
	for _, args := range [][]string{{"stop_app"}, {"join_cluster", seed.name}, {"start_app"}} {
		if _, err := m.Ctl(ctx, args...); err != nil {
			return fmt.Errorf("rabbitnode: %s joining %s: %w\n%s", m.name, seed.name, err, m.Log(20))
		}
	}
	c.log.Info("rabbitnode: joined", "node", m.name, "seed", seed.name, "took", time.Since(begin).Round(time.Millisecond))
	return nil
}

// StartClusterT starts a cluster of n nodes for one test (Options: the
// first of opts, if given; Name defaults to "cluster") and stops it,
// removing everything, when the test ends. Like StartT it fails the test
// without a local server and skips it under -short.
func StartClusterT(t testing.TB, n int, opts ...Options) *Cluster {
	t.Helper()
	testenv.NeedsServer(t, Needs)
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.Name == "" {
		o.Name = "cluster"
	}
	if os.Getenv(EnvURL) != "" {
		if _, err := os.Stat(o.withDefaults().Server); err != nil {
			Require(t, fmt.Sprintf("this test needs local nodes, but rabbitmq-server is not installed (%s is set)", EnvURL))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultClusterStartTimeout)
	defer cancel()
	c, err := StartCluster(ctx, n, o)
	if err != nil {
		t.Fatalf("start RabbitMQ cluster of %d: %v", n, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("stop RabbitMQ cluster: %v", err)
		}
	})
	return c
}

// Nodes returns the members, the first being the one the others joined.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes)
}

// Node returns the member with Erlang node name name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes() {
		if n.name == name {
			return n
		}
	}
	return nil
}

// member is Node(name), or an error when name is not a member.
func (c *Cluster) member(name string) (*Node, error) {
	if n := c.Node(name); n != nil {
		return n, nil
	}
	return nil, fmt.Errorf("%q is not a member of cluster %s", name, c.id)
}

// URL is one AMQP URL of the default vhost as guest listing every member,
// in the multi-host form the rabbit adapter accepts:
// amqp://guest:guest@127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/
func (c *Cluster) URL() string {
	var hosts []string
	for _, n := range c.Nodes() {
		hosts = append(hosts, n.Addr())
	}
	return "amqp://guest:guest@" + strings.Join(hosts, ",") + "/"
}

// Dir is the cluster's temp dir; each member's dir is below it.
func (c *Cluster) Dir() string { return c.dir }

// Stop ends every member (gracefully, in parallel, when ctx allows; else
// by SIGKILL), the cluster's epmd and any process still running from the
// cluster's dir, and removes the dir. Calling it again is a no-op.
func (c *Cluster) Stop(ctx context.Context) error { return c.stop(ctx, true) }

func (c *Cluster) stop(ctx context.Context, graceful bool) error {
	c.mu.Lock()
	if c.gone {
		c.mu.Unlock()
		return nil
	}
	c.gone = true
	nodes := slices.Clone(c.nodes)
	ep := c.epmd
	c.epmd = nil
	c.mu.Unlock()
	begin := time.Now()
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() { errs[i] = n.stop(ctx, graceful) })
	}
	wg.Wait()
	err := errors.Join(errs...)
	if ep != nil {
		killGroup(ep)
		select {
		case <-ep.exited:
		case <-time.After(5 * time.Second):
			err = errors.Join(err, fmt.Errorf("rabbitnode: epmd on port %d did not exit", c.epmdPort))
		}
	}
	for _, pid := range pidsMentioning(c.dir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if rerr := os.RemoveAll(c.dir); rerr != nil {
		err = errors.Join(err, fmt.Errorf("rabbitnode: remove dir: %w", rerr))
	}
	c.log.Info("rabbitnode: cluster stopped", "graceful", graceful, "took", time.Since(begin).Round(time.Millisecond))
	return err
}

// Processes reports the ids of processes still running for the cluster:
// every member's server and helpers (found by the cluster's dir in their
// command line) and the cluster's epmd.
func (c *Cluster) Processes() []int {
	pids := pidsMentioning(c.dir)
	c.mu.Lock()
	ep := c.epmd
	c.mu.Unlock()
	if ep != nil {
		select {
		case <-ep.exited:
		default:
			pids = append(pids, ep.cmd.Process.Pid)
		}
	}
	return pids
}

// EpmdPort is the port of the cluster's own epmd.
func (c *Cluster) EpmdPort() int { return c.epmdPort }

// Up starts member n again after Kill or Down (a no-op when it runs) and
// waits until it has rejoined: every running member's cluster_status lists
// every running member as running. Bounded by ctx and StartTimeout.
func (c *Cluster) Up(ctx context.Context, n *Node) error {
	if err := n.Up(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	return c.WaitRunning(ctx)
}

// Restart takes member n down gracefully and starts it again as Up does.
func (c *Cluster) Restart(ctx context.Context, n *Node) error {
	if err := n.Down(ctx); err != nil {
		return err
	}
	return c.Up(ctx, n)
}

// Running reports whether the node's server was started and has not been
// killed, taken down or stopped since (it may still be booting).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.server != nil && !n.gone
}

// running returns the members whose server runs.
func (c *Cluster) running() []*Node {
	var out []*Node
	for _, n := range c.Nodes() {
		if n.Running() {
			out = append(out, n)
		}
	}
	return out
}

// Status is what one member's rabbitmqctl cluster_status reports.
type Status struct {
	// Nodes are the cluster's members (disk and RAM nodes), by Erlang name.
	Nodes []string
	// Running are the members this node sees running.
	Running []string
	// Partitions is what the node reports under "partitions" (empty
	// unless there is a network partition).
	Partitions json.RawMessage
}

// Status runs cluster_status --formatter json on via.
func (c *Cluster) Status(ctx context.Context, via *Node) (Status, error) {
	out, err := via.Ctl(ctx, "cluster_status", "--formatter", "json")
	if err != nil {
		return Status{}, err
	}
	var raw struct {
		Disk       nameList        `json:"disk_nodes"`
		RAM        nameList        `json:"ram_nodes"`
		Running    nameList        `json:"running_nodes"`
		Partitions json.RawMessage `json:"partitions"`
	}
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		return Status{}, permanent(fmt.Errorf("rabbitnode: cluster_status on %s: %w: %q", via.name, err, out))
	}
	st := Status{Nodes: append(raw.Disk, raw.RAM...), Running: raw.Running, Partitions: raw.Partitions}
	slices.Sort(st.Nodes)
	slices.Sort(st.Running)
	return st, nil
}

// WaitRunning waits until every running member's cluster_status lists all
// members as members and every running member as running, or ctx ends.
func (c *Cluster) WaitRunning(ctx context.Context) error {
	begin := time.Now()
	var last string
	for {
		all := c.Nodes()
		var members []string
		for _, n := range all {
			members = append(members, n.name)
		}
		slices.Sort(members)
		up := c.running()
		var want []string
		for _, n := range up {
			want = append(want, n.name)
		}
		slices.Sort(want)
		ok := len(up) > 0
		for _, v := range up {
			st, err := c.Status(ctx, v)
			if perm := (permanentError{}); errors.As(err, &perm) {
				return err // output it cannot read: waiting cannot help
			}
			if err != nil {
				ok, last = false, err.Error()
				break
			}
			if !slices.Equal(st.Nodes, members) || !slices.Equal(st.Running, want) {
				ok = false
				last = fmt.Sprintf("%s sees members %v running %v; want members %v running %v", v.name, st.Nodes, st.Running, members, want)
				break
			}
		}
		if ok {
			c.log.Info("rabbitnode: cluster running", "running", len(want), "waited", time.Since(begin).Round(time.Millisecond))
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("rabbitnode: cluster %s not running after %v: %s: %w", c.id, time.Since(begin).Round(time.Millisecond), last, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ask runs a rabbitmqctl command on the first running member that answers.
func (c *Cluster) ask(ctx context.Context, args ...string) (string, *Node, error) {
	var errs []error
	for _, n := range c.running() {
		out, err := n.Ctl(ctx, args...)
		if err == nil {
			return out, n, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return "", nil, fmt.Errorf("rabbitnode: cluster %s has no running member", c.id)
	}
	return "", nil, errors.Join(errs...)
}

// Queue describes a queue as rabbitmqctl list_queues reports it.
type Queue struct {
	Name, Type string
	// Leader is the member RabbitMQ's metadata names as the leader of a
	// quorum queue or stream (nil when it names none). Right after the
	// leader was killed it may still name that node, until a new leader is
	// elected (see WaitQueueLeader).
	Leader *Node
	// Members are a quorum queue's members; Online those of them running.
	Members, Online []*Node
}

// Queue looks queue up in vhost ("" is "/") through a running member.
// While a quorum queue's leader is down and no new one is elected,
// list_queues leaves the queue out: Queue then reports no such queue.
func (c *Cluster) Queue(ctx context.Context, vhost, queue string) (Queue, error) {
	if vhost == "" {
		vhost = "/"
	}
	out, via, err := c.ask(ctx, "list_queues", "-p", vhost, "name", "type", "leader", "members", "online", "--formatter", "json")
	if err != nil {
		return Queue{}, err
	}
	var rows []struct {
		Name    string   `json:"name"`
		Type    string   `json:"type"`
		Leader  string   `json:"leader"`
		Members nameList `json:"members"`
		Online  nameList `json:"online"`
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		return Queue{}, permanent(fmt.Errorf("rabbitnode: list_queues on %s: %w: %q", via.name, err, out))
	}
	for _, r := range rows {
		if r.Name != queue {
			continue
		}
		q := Queue{Name: r.Name, Type: r.Type}
		var err error
		if r.Leader != "" {
			q.Leader, err = c.member(r.Leader)
		}
		for _, m := range r.Members {
			n, merr := c.member(m)
			q.Members, err = append(q.Members, n), errors.Join(err, merr)
		}
		for _, m := range r.Online {
			n, merr := c.member(m)
			q.Online, err = append(q.Online, n), errors.Join(err, merr)
		}
		if err != nil {
			return Queue{}, permanent(fmt.Errorf("rabbitnode: queue %q in vhost %q: %w", queue, vhost, err))
		}
		return q, nil
	}
	// Not permanent: while a quorum queue's leader is down and no new one
	// is elected, list_queues leaves the queue out.
	return Queue{}, fmt.Errorf("rabbitnode: no queue %q in vhost %q (asked %s)", queue, vhost, via.name)
}

// QueueLeader returns the member that leads quorum queue queue in vhost
// ("" is "/"), as RabbitMQ's metadata says (see Queue.Leader).
func (c *Cluster) QueueLeader(ctx context.Context, vhost, queue string) (*Node, error) {
	q, err := c.Queue(ctx, vhost, queue)
	if err != nil {
		return nil, err
	}
	if q.Type != "quorum" {
		return nil, permanent(fmt.Errorf("rabbitnode: queue %q is a %s queue, not a quorum queue", queue, q.Type))
	}
	if q.Leader == nil {
		return nil, fmt.Errorf("rabbitnode: quorum queue %q has no leader", queue)
	}
	return q.Leader, nil
}

// WaitQueueLeader waits until RabbitMQ's metadata names a running member
// other than old (nil: any running member) as the leader of quorum queue
// queue in vhost, and returns it. After old was killed that is the newly
// elected leader. Until then list_queues may name old or leave the queue
// out altogether (3.10 does so while the leader is down), so both are
// waited out. Bounded by ctx; an answer waiting cannot change (not a quorum
// queue, output it cannot read) ends it at once.
func (c *Cluster) WaitQueueLeader(ctx context.Context, vhost, queue string, old *Node) (*Node, error) {
	begin := time.Now()
	var last error
	for {
		l, err := c.QueueLeader(ctx, vhost, queue)
		var perm permanentError
		switch {
		case errors.As(err, &perm):
			return nil, err // waiting cannot help
		case err != nil:
			last = err // a member unreachable mid-call; or no leader yet
		case l != old && l.Running():
			return l, nil
		default:
			last = fmt.Errorf("metadata still names %s (running: %v)", l.name, l.Running())
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("rabbitnode: no new leader of queue %q after %v: %v: %w", queue, time.Since(begin).Round(time.Millisecond), last, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Connection is one client connection as rabbitmqctl list_connections
// reports it.
type Connection struct {
	// Name is RabbitMQ's name of it ("127.0.0.1:54321 -> 127.0.0.1:5672").
	Name string
	// ClientName is the client property connection_name ("" when unset).
	ClientName string
	// Node is the member the client is connected to.
	Node        *Node
	User, VHost string
}

// Connections lists the client connections of every running member.
func (c *Cluster) Connections(ctx context.Context) ([]Connection, error) {
	out, via, err := c.ask(ctx, "list_connections", "name", "port", "user", "vhost", "client_properties", "--formatter", "json")
	if err != nil {
		return nil, err
	}
	var rows []struct {
		Name       string          `json:"name"`
		Port       int             `json:"port"`
		User       string          `json:"user"`
		VHost      string          `json:"vhost"`
		ClientProp json.RawMessage `json:"client_properties"`
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		return nil, permanent(fmt.Errorf("rabbitnode: list_connections on %s: %w: %q", via.name, err, out))
	}
	byPort := map[int]*Node{}
	for _, n := range c.Nodes() {
		byPort[n.port] = n
	}
	var conns []Connection
	for _, r := range rows {
		conns = append(conns, Connection{
			Name:       r.Name,
			ClientName: clientProperty(r.ClientProp, "connection_name"),
			Node:       byPort[r.Port],
			User:       r.User,
			VHost:      r.VHost,
		})
	}
	return conns, nil
}

// ConnectionNodes maps the connection_name of every client connection that
// has one to the member it is connected to. When several connections share
// a name, the last listed wins; Connections lists them all.
func (c *Cluster) ConnectionNodes(ctx context.Context) (map[string]*Node, error) {
	conns, err := c.Connections(ctx)
	if err != nil {
		return nil, err
	}
	m := map[string]*Node{}
	for _, cn := range conns {
		if cn.ClientName != "" && cn.Node != nil {
			m[cn.ClientName] = cn.Node
		}
	}
	return m, nil
}

// clientProperty finds key in list_connections' JSON rendering of the
// client properties: a list of [name, type, value] triples (or an object).
func clientProperty(raw json.RawMessage, key string) string {
	var triples [][]json.RawMessage
	if json.Unmarshal(raw, &triples) == nil {
		for _, tr := range triples {
			if len(tr) < 3 {
				continue
			}
			var k, v string
			if json.Unmarshal(tr[0], &k) == nil && k == key && json.Unmarshal(tr[len(tr)-1], &v) == nil {
				return v
			}
		}
		return ""
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) == nil {
		var v string
		if json.Unmarshal(obj[key], &v) == nil {
			return v
		}
	}
	return ""
}

// nameList decodes a JSON list of node names. RabbitMQ's JSON formatter
// renders an empty Erlang list as "" (an empty string is the same term):
// list_queues shows a classic queue's members and online so.
type nameList []string

func (l *nameList) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		if s != "" {
			return fmt.Errorf("rabbitnode: %s is not a list of node names", b)
		}
		*l = nil
		return nil
	}
	var names []string
	if err := json.Unmarshal(b, &names); err != nil {
		return err
	}
	*l = names
	return nil
}

// permanentError marks an answer that asking again cannot change.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

func permanent(err error) error { return permanentError{err} }
