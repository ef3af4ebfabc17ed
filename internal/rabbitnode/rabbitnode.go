// Package rabbitnode starts throw-away RabbitMQ nodes for tests: the real
// server from Debian's rabbitmq-server package, each node on free loopback
// ports in its own temp dir, with its own private epmd, so that any number
// of nodes (and any number of test binaries) run side by side without
// touching a system node or each other.
//
// A node is started directly from /usr/lib/rabbitmq/bin/rabbitmq-server
// (not the /usr/sbin wrapper, which switches to the rabbitmq user), so it
// runs as the calling user and writes only below its own dir. Everything
// listens on 127.0.0.1 only: AMQP, the distribution port and epmd.
//
// Start returns once the node answers a real AMQP handshake. Stop ends the
// node, its epmd and any straggler process, and removes the dir.
//
// StartCluster starts several nodes joined into one RabbitMQ cluster: they
// share a private epmd and a fresh Erlang cookie of their own, so a cluster
// reaches neither another cluster nor a single node (see Cluster).
package rabbitnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Default locations of the Debian package's programs.
const (
	DefaultServer = "/usr/lib/rabbitmq/bin/rabbitmq-server"
	DefaultCtl    = "/usr/lib/rabbitmq/bin/rabbitmqctl"
	DefaultEpmd   = "/usr/bin/epmd"
)

// Defaults for Options.
const (
	// DefaultStartTimeout bounds Start and Up when ctx has no earlier
	// deadline. A fresh node answers in 5–15 s here; the margin is for
	// loaded shared machines.
	DefaultStartTimeout = 60 * time.Second
	// DefaultStopTimeout bounds the graceful part of Stop and Down before
	// the node is killed.
	DefaultStopTimeout = 15 * time.Second
)

// ErrNotInstalled is returned by Start when the server program is missing.
var ErrNotInstalled = errors.New("rabbitnode: rabbitmq-server is not installed (run scripts/install-rabbitmq.sh)")

// Options configures Start. The zero value is usable.
type Options struct {
	// Name prefixes the node name and temp dir (default "isobroker").
	Name string
	// BaseDir is where the node's temp dir is created (default os.TempDir()).
	BaseDir string
	// Server, Ctl and Epmd are the programs (defaults DefaultServer,
	// DefaultCtl, DefaultEpmd; Epmd falls back to "epmd" on PATH).
	Server, Ctl, Epmd string
	// Config holds extra rabbitmq.conf lines (sysctl format), appended to
	// the generated listener settings.
	Config string
	// StartTimeout bounds Start and Up (default DefaultStartTimeout).
	StartTimeout time.Duration
	// StopTimeout bounds a graceful stop before the node is killed
	// (default DefaultStopTimeout).
	StopTimeout time.Duration
	// Logger receives lifecycle logs (default: discarded).
	Logger *slog.Logger
}

// Node is one running (or stopped) throw-away node. Its methods are safe for
// concurrent use; lifecycle methods (Up, Down, Restart, Stop) are
// serialized.
type Node struct {
	opts     Options
	log      *slog.Logger
	dir      string
	name     string // node name, e.g. isobroker-1a2b@localhost
	port     int    // AMQP
	distPort int
	epmdPort int
	cookie   string // set for cluster members: written to $HOME/.erlang.cookie
	env      []string

	life sync.Mutex // serializes Up/Down/Stop

	mu     sync.Mutex
	server *proc
	epmd   *proc
	gone   bool // Stop was called
}

// proc is a started child and the channel closed when it exits.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // valid after exited is closed
	out    *tailBuffer
}

// Start creates a temp dir, starts a private epmd and a RabbitMQ node on
// free loopback ports, and returns once the node completes an AMQP
// handshake as guest. It gives up when ctx ends or opts.StartTimeout
// passes, stopping whatever it started and removing the dir. A port taken
// by someone else between choosing and binding makes it retry with new
// ports (three attempts).
func Start(ctx context.Context, opts Options) (*Node, error) {
	opts = opts.withDefaults()
	if _, err := os.Stat(opts.Server); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotInstalled, err)
	}
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		n, err := start(ctx, opts)
		if err == nil {
			return n, nil
		}
		lastErr = err
		if ctx.Err() != nil || !errors.Is(err, errPortInUse) {
			break
		}
		opts.Logger.Warn("rabbitnode: port clash, retrying with new ports", "attempt", attempt, "err", err)
	}
	return nil, lastErr
}

var errPortInUse = errors.New("rabbitnode: port in use")

func (o Options) withDefaults() Options {
	if o.Name == "" {
		o.Name = "isobroker"
	}
	if o.BaseDir == "" {
		o.BaseDir = os.TempDir()
	}
	if o.Server == "" {
		o.Server = DefaultServer
	}
	if o.Ctl == "" {
		o.Ctl = DefaultCtl
	}
	if o.Epmd == "" {
		o.Epmd = DefaultEpmd
		if _, err := os.Stat(o.Epmd); err != nil {
			if p, err := exec.LookPath("epmd"); err == nil {
				o.Epmd = p
			}
		}
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = DefaultStartTimeout
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = DefaultStopTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

func start(ctx context.Context, opts Options) (*Node, error) {
	dir, err := os.MkdirTemp(opts.BaseDir, "rabbitnode-"+opts.Name+"-")
	if err != nil {
		return nil, fmt.Errorf("rabbitnode: temp dir: %w", err)
	}
	ports, err := freePorts(3)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	n := &Node{
		opts:     opts,
		dir:      dir,
		name:     opts.Name + "-" + filepath.Base(dir)[len("rabbitnode-"+opts.Name+"-"):] + "@localhost",
		port:     ports[0],
		distPort: ports[1],
		epmdPort: ports[2],
	}
	n.log = opts.Logger.With("node", n.name, "port", n.port)
	if err := n.writeFiles(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	n.env = n.environ()
	if err := n.startEpmd(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := n.Up(ctx); err != nil {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = n.Stop(stopCtx)
		return nil, err
	}
	return n, nil
}

// freePorts reserves n distinct free loopback ports by binding them at once
// and releasing them. Another process may still take one before the node
// binds it; Start retries then.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("rabbitnode: free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (n *Node) writeFiles() error {
	for _, d := range []string{"mnesia", "log"} {
		if err := os.MkdirAll(filepath.Join(n.dir, d), 0o755); err != nil {
			return fmt.Errorf("rabbitnode: %w", err)
		}
	}
	conf := fmt.Sprintf("listeners.tcp.1 = 127.0.0.1:%d\nloopback_users = none\n", n.port)
	if n.opts.Config != "" {
		conf += strings.TrimSpace(n.opts.Config) + "\n"
	}
	files := map[string]string{
		"rabbitmq.conf":     conf,
		"enabled_plugins":   "[].\n",
		"rabbitmq-env.conf": "",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(n.dir, name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("rabbitnode: %w", err)
		}
	}
	if n.cookie != "" {
		// The server and rabbitmqctl both run with HOME=dir and read the
		// cookie from there; Erlang insists it be private to the owner.
		if err := os.WriteFile(filepath.Join(n.dir, ".erlang.cookie"), []byte(n.cookie), 0o400); err != nil {
			return fmt.Errorf("rabbitnode: %w", err)
		}
	}
	return nil
}

func (n *Node) environ() []string {
	loopback := "-kernel inet_dist_use_interface {127,0,0,1}"
	set := map[string]string{
		"HOME":                                n.dir,
		"RABBITMQ_NODENAME":                   n.name,
		"RABBITMQ_NODE_IP_ADDRESS":            "127.0.0.1",
		"RABBITMQ_NODE_PORT":                  strconv.Itoa(n.port),
		"RABBITMQ_DIST_PORT":                  strconv.Itoa(n.distPort),
		"RABBITMQ_MNESIA_BASE":                filepath.Join(n.dir, "mnesia"),
		"RABBITMQ_LOG_BASE":                   filepath.Join(n.dir, "log"),
		"RABBITMQ_PID_FILE":                   filepath.Join(n.dir, "rabbitmq.pid"),
		"RABBITMQ_CONFIG_FILE":                filepath.Join(n.dir, "rabbitmq.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE":       filepath.Join(n.dir, "enabled_plugins"),
		"RABBITMQ_CONF_ENV_FILE":              filepath.Join(n.dir, "rabbitmq-env.conf"),
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": loopback,
		"RABBITMQ_CTL_ERL_ARGS":               loopback,
		"ERL_EPMD_PORT":                       strconv.Itoa(n.epmdPort),
		"ERL_EPMD_ADDRESS":                    "127.0.0.1",
	}
	return childEnv(set)
}

// childEnv is the test binary's environment without any RABBITMQ_ setting
// of its own (or NOTIFY_SOCKET), plus set.
func childEnv(set map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ours := set[k]; ours || strings.HasPrefix(k, "RABBITMQ_") || k == "NOTIFY_SOCKET" {
			continue
		}
		env = append(env, kv)
	}
	for k, v := range set {
		env = append(env, k+"="+v)
	}
	return env
}

// spawn starts a child in its own session (so signals to the test binary's
// process group do not reach it, and its whole group can be killed), dying
// with the test binary if that is killed.
func (n *Node) spawn(path string, args ...string) (*proc, error) {
	return spawn(n.dir, n.env, path, args...)
}

func spawn(dir string, env []string, path string, args ...string) (*proc, error) {
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Env = env
	out := &tailBuffer{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("rabbitnode: start %s: %w", filepath.Base(path), err)
	}
	p := &proc{cmd: cmd, exited: make(chan struct{}), out: out}
	go p.wait()
	return p, nil
}

// WaitFunction names the goroutine that waits for each child process of a
// running node, for goleak.IgnoreAnyFunction in test binaries that check
// for leaks while a shared node runs.
const WaitFunction = "github.com/isobroker/broker/internal/rabbitnode.(*proc).wait"

// wait reaps the child and reports its exit.
func (p *proc) wait() {
	p.err = p.cmd.Wait()
	close(p.exited)
}

func (n *Node) startEpmd() error {
	p, err := startEpmd(n.opts.Epmd, n.dir, n.env, n.epmdPort)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.epmd = p
	n.mu.Unlock()
	return nil
}

// startEpmd starts an epmd on 127.0.0.1:port and waits until it accepts.
func startEpmd(path, dir string, env []string, port int) (*proc, error) {
	p, err := spawn(dir, env, path, "-port", strconv.Itoa(port), "-address", "127.0.0.1")
	if err != nil {
		return nil, err
	}
	// epmd binds at once; wait until it accepts, or exits (port clash).
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err == nil {
			_ = c.Close()
			return p, nil
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("%w: epmd on %d exited: %v: %s", errPortInUse, port, p.err, p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			killGroup(p)
			<-p.exited
			return nil, fmt.Errorf("rabbitnode: epmd on port %d not answering", port)
		}
	}
}

// Up starts the server on the node's dir and ports (again, after Down) and
// waits until it answers an AMQP handshake, ctx ends, or StartTimeout
// passes. It is a no-op when the server is running.
func (n *Node) Up(ctx context.Context) error {
	n.life.Lock()
	defer n.life.Unlock()
	n.mu.Lock()
	if n.gone {
		n.mu.Unlock()
		return errors.New("rabbitnode: node was stopped")
	}
	if n.server != nil {
		n.mu.Unlock()
		return nil
	}
	n.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, n.opts.StartTimeout)
	defer cancel()
	begin := time.Now()
	p, err := n.spawn(n.opts.Server)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.server = p
	n.mu.Unlock()
	n.log.Info("rabbitnode: starting", "dir", n.dir)

	for {
		err := handshake(ctx, n.URL())
		if err == nil {
			n.log.Info("rabbitnode: ready", "after", time.Since(begin).Round(time.Millisecond))
			return nil
		}
		select {
		case <-p.exited:
			n.mu.Lock()
			n.server = nil
			n.mu.Unlock()
			out := p.out.String()
			if strings.Contains(out, "eaddrinuse") || strings.Contains(out, "address already in use") {
				return fmt.Errorf("%w: node %s exited: %s", errPortInUse, n.name, lastLines(out, 15))
			}
			return fmt.Errorf("rabbitnode: node %s exited during start (%v):\n%s", n.name, p.err, lastLines(out, 30))
		case <-ctx.Done():
			n.downLocked(context.Background(), false)
			return fmt.Errorf("rabbitnode: node %s not ready after %v (last handshake error: %v): %w\n%s",
				n.name, time.Since(begin).Round(time.Millisecond), err, ctx.Err(), lastLines(p.out.String(), 30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// handshake completes an AMQP handshake with url and closes the connection.
func handshake(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var raw net.Conn
	conn, err := amqp.DialConfig(url, amqp.Config{
		Dial: func(network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			dl, _ := ctx.Deadline()
			_ = c.SetDeadline(dl)
			raw = c
			return c, nil
		},
	})
	if err != nil {
		if raw != nil {
			_ = raw.Close()
		}
		return err
	}
	return conn.CloseDeadline(time.Now().Add(time.Second))
}

// Down stops the server gracefully (SIGTERM, which the start script turns
// into an orderly shutdown), killing it if it has not exited within
// StopTimeout or by ctx. The dir, ports and epmd are kept, so Up can start
// it again with its durable state. It is a no-op when the server is not
// running.
func (n *Node) Down(ctx context.Context) error {
	n.life.Lock()
	defer n.life.Unlock()
	return n.downLocked(ctx, true)
}

// Kill ends the server at once with SIGKILL, as in a crash. Up starts it
// again.
func (n *Node) Kill() error {
	n.life.Lock()
	defer n.life.Unlock()
	return n.downLocked(context.Background(), false)
}

func (n *Node) downLocked(ctx context.Context, graceful bool) error {
	n.mu.Lock()
	p := n.server
	n.server = nil
	n.mu.Unlock()
	if p == nil {
		return nil
	}
	begin := time.Now()
	if graceful {
		ctx, cancel := context.WithTimeout(ctx, n.opts.StopTimeout)
		defer cancel()
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-ctx.Done():
			n.log.Warn("rabbitnode: graceful stop timed out; killing", "after", time.Since(begin).Round(time.Millisecond))
		}
	}
	killGroup(p)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("rabbitnode: node %s did not exit after SIGKILL", n.name)
	}
	n.killStragglers()
	n.log.Info("rabbitnode: server down", "graceful", graceful, "took", time.Since(begin).Round(time.Millisecond))
	return nil
}

// Restart is Down followed by Up: the same node, dir, ports and durable
// state.
func (n *Node) Restart(ctx context.Context) error {
	if err := n.Down(ctx); err != nil {
		return err
	}
	return n.Up(ctx)
}

// Stop ends the node (gracefully when ctx allows, else by SIGKILL) and its
// epmd, kills any process still running from the node's dir, and removes
// the dir. Calling it again is a no-op.
func (n *Node) Stop(ctx context.Context) error {
	return n.stop(ctx, true)
}

// stop is Stop; graceful false kills the server at once (for throw-away
// state after a failed start).
func (n *Node) stop(ctx context.Context, graceful bool) error {
	n.life.Lock()
	defer n.life.Unlock()
	n.mu.Lock()
	if n.gone {
		n.mu.Unlock()
		return nil
	}
	n.gone = true
	n.mu.Unlock()
	err := n.downLocked(ctx, graceful)
	n.mu.Lock()
	ep := n.epmd
	n.epmd = nil
	n.mu.Unlock()
	if ep != nil {
		killGroup(ep)
		select {
		case <-ep.exited:
		case <-time.After(5 * time.Second):
			err = errors.Join(err, fmt.Errorf("rabbitnode: epmd on port %d did not exit", n.epmdPort))
		}
	}
	n.killStragglers()
	if rerr := os.RemoveAll(n.dir); rerr != nil {
		err = errors.Join(err, fmt.Errorf("rabbitnode: remove dir: %w", rerr))
	}
	return err
}

// killGroup sends SIGKILL to p's process group (its session leader is p).
func killGroup(p *proc) {
	if p.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	_ = p.cmd.Process.Kill()
}

// killStragglers kills every process whose command line mentions the
// node's dir (beam, erl_child_setup, a CLI run): they may have left the
// process group.
func (n *Node) killStragglers() {
	for _, pid := range n.pids() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// pids lists processes whose command line mentions the node's dir.
func (n *Node) pids() []int { return pidsMentioning(n.dir) }

// pidsMentioning lists processes (other than this one) whose command line
// mentions dir as a path: dir itself or a path below it, so that a dir
// ".../n1" does not match ".../n10".
func pidsMentioning(dir string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if mentionsPath(cmdline, dir) {
			out = append(out, pid)
		}
	}
	return out
}

// mentionsPath reports whether cmdline (NUL-separated arguments) holds dir
// followed by the end of the command line or by a character that cannot
// continue a file name component of it ('/', NUL, a quote or a space).
func mentionsPath(cmdline []byte, dir string) bool {
	d := []byte(dir)
	for i := 0; ; {
		j := bytes.Index(cmdline[i:], d)
		if j < 0 {
			return false
		}
		end := i + j + len(d)
		if end == len(cmdline) || bytes.IndexByte([]byte("/\x00\"' "), cmdline[end]) >= 0 {
			return true
		}
		i += j + 1
	}
}

// Processes reports the ids of processes still running for this node: the
// server and its helpers (found by the node's dir in their command line)
// and its epmd. Tests use it to prove Stop leaves nothing behind.
func (n *Node) Processes() []int {
	pids := n.pids()
	n.mu.Lock()
	ep := n.epmd
	n.mu.Unlock()
	if ep != nil {
		select {
		case <-ep.exited:
		default:
			pids = append(pids, ep.cmd.Process.Pid)
		}
	}
	return pids
}

// Ctl runs rabbitmqctl against this node (for example
// "set_vm_memory_high_watermark", "0.0000001" or "list_connections") and
// returns its standard output. It is bounded by ctx; its whole process
// group is killed when ctx ends. A non-zero exit is an error that includes
// the tool's output.
func (n *Node) Ctl(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"-n", n.name, "-q"}, args...)
	cmd := exec.CommandContext(ctx, n.opts.Ctl, full...)
	cmd.Dir = n.dir
	cmd.Env = n.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("rabbitnode: rabbitmqctl %s: %w: %s%s", strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()), ctxNote(ctx))
	}
	return stdout.String(), nil
}

func ctxNote(ctx context.Context) string {
	if ctx.Err() != nil {
		return " (" + ctx.Err().Error() + ")"
	}
	return ""
}

// URL is the AMQP URL of the node's default vhost as guest.
func (n *Node) URL() string {
	return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", n.port)
}

// Addr is the node's AMQP listener, host:port.
func (n *Node) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)) }

// Port is the node's AMQP port.
func (n *Node) Port() int { return n.port }

// Name is the Erlang node name (name@localhost).
func (n *Node) Name() string { return n.name }

// Dir is the node's temp dir (data, logs, config).
func (n *Node) Dir() string { return n.dir }

// Log returns the last lines of the server's console output, for test
// failure messages.
func (n *Node) Log(lines int) string {
	n.mu.Lock()
	p := n.server
	n.mu.Unlock()
	if p == nil {
		return ""
	}
	return lastLines(p.out.String(), lines)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

var _ io.Writer = (*tailBuffer)(nil)

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
