package runner

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	"github.com/isobroker/broker/eventhubs/emulator"
)

// The Event Hubs emulator runs in a child process (child.go), driven one
// command per line:
//
//	hub NAME PARTITIONS  → ok
//	forced               → ok N   (closes every connection with amqp:connection:forced)
//
// On start the child prints its connection string (without EntityPath).
const emulatorEnv = "ISOBROKER_BENCH_EMULATOR_CHILD"

func serveEmulator(in io.Reader, out io.Writer) error {
	e, err := emulator.New(emulator.Config{
		AutoCreate:     true,
		RetentionBytes: 64 << 20, // more than any one run keeps (the receive run: 30,000 × 1 KiB)
		IdleTimeout:    -1,       // idle closes are injected on command, not by the clock
		Logger:         slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return err
	}
	ctx := context.Background()
	if err := e.Start(ctx); err != nil {
		return err
	}
	defer e.Close(ctx)
	fmt.Fprintln(out, e.ConnectionString(""))
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "hub":
			p, _ := strconv.Atoi(f[2])
			if err := e.AddHub(f[1], p); err != nil {
				fmt.Fprintln(out, "err", err)
				continue
			}
			fmt.Fprintln(out, "ok")
		case len(f) == 1 && f[0] == "forced":
			n := e.Faults().CloseConnectionsWith("amqp:connection:forced", "The connection was inactive for more than the allowed 300000 milliseconds and is closed by container 'bench'.")
			fmt.Fprintln(out, "ok", n)
		default:
			fmt.Fprintln(out, "err unknown command")
		}
	}
	return nil // stdin closed: the parent is done (or died)
}

// emulatorProc is the parent's handle on the child. restart replaces the
// child with a fresh one (new port, new key): the bench does that before
// every Event Hubs run, so that each run starts on an empty server — the
// emulator cannot delete hubs, and the events retained by earlier runs
// would otherwise pile up in its memory and its garbage collector's work.
// Through sets the address the contenders dial instead of the emulator's
// own: a latency proxy's (scenario 8).
type emulatorProc struct {
	mu      sync.Mutex
	c       *child
	connStr string
	addr    string // the emulator's host:port, in connStr
	through func(addr string) (string, error)
	dialed  string // what connStr's endpoint names: addr, or through's result
}

func startEmulatorChild() (*emulatorProc, error) {
	p := &emulatorProc{}
	if err := p.restart(); err != nil {
		return nil, err
	}
	return p, nil
}

// restart stops the current child, if any, and starts a new one.
func (p *emulatorProc) restart() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.c.stop()
	c, first, err := startChild(emulatorEnv)
	if err != nil {
		return fmt.Errorf("emulator child: %w", err)
	}
	p.c, p.connStr = c, first
	p.addr = endpointOf(first)
	return p.route()
}

// setThrough makes the contenders dial through(emulator address) from the
// next restart on (nil: the emulator directly).
func (p *emulatorProc) setThrough(through func(addr string) (string, error)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.through = through
}

// route sets dialed for the current child.
func (p *emulatorProc) route() error {
	p.dialed = p.addr
	if p.through == nil {
		return nil
	}
	a, err := p.through(p.addr)
	if err != nil {
		return err
	}
	p.dialed = a
	return nil
}

// endpointOf is the host:port of a connection string's sb:// endpoint.
func endpointOf(connStr string) string {
	_, rest, _ := strings.Cut(connStr, "Endpoint=sb://")
	addr, _, _ := strings.Cut(rest, ";")
	return strings.TrimSuffix(addr, "/")
}

func (p *emulatorProc) command(c string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.c.command(c)
}

// namespaceConnStr is the current child's connection string (no hub),
// naming the address contenders dial.
func (p *emulatorProc) namespaceConnStr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Replace(p.connStr, "sb://"+p.addr, "sb://"+p.dialed, 1)
}

// hubConnStr is the current child's connection string for hub.
func (p *emulatorProc) hubConnStr(hub string) string {
	return p.namespaceConnStr() + ";EntityPath=" + hub
}

func (p *emulatorProc) addHub(name string, partitions int) error {
	_, err := p.command(fmt.Sprintf("hub %s %d", name, partitions))
	return err
}

func (p *emulatorProc) forceClose() (int, error) {
	r, err := p.command("forced")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(r)
}

func (p *emulatorProc) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.c.stop()
	p.c = nil
}
