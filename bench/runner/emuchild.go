package runner

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"

	"github.com/isobroker/broker/eventhubs/emulator"
)

// The Event Hubs emulator runs in a child process (this same binary,
// re-executed with emulatorEnv set), so that the allocations, goroutines
// and memory measured in the runner are the clients' alone. The parent
// drives it over stdin/stdout, one command per line:
//
//	hub NAME PARTITIONS  → ok
//	forced               → ok N   (closes every connection with amqp:connection:forced)
//
// On start the child prints its connection string (without EntityPath).
const emulatorEnv = "ISOBROKER_BENCH_EMULATOR_CHILD"

// MaybeEmulatorChild runs the emulator child and exits when this process
// was started as one; otherwise it returns at once. Call it first in main
// and in TestMain.
func MaybeEmulatorChild() {
	if os.Getenv(emulatorEnv) != "1" {
		return
	}
	if err := serveEmulator(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "emulator child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

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
type emulatorProc struct {
	mu      sync.Mutex
	cmd     *exec.Cmd
	in      io.WriteCloser
	out     *bufio.Scanner
	connStr string
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
	p.stopLocked()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), emulatorEnv+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	p.cmd, p.in, p.out = cmd, in, bufio.NewScanner(outPipe)
	if !p.out.Scan() {
		p.stopLocked()
		return fmt.Errorf("emulator child did not start: %v", p.out.Err())
	}
	p.connStr = strings.TrimSpace(p.out.Text())
	return nil
}

func (p *emulatorProc) command(c string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return "", errors.New("emulator child not running")
	}
	if _, err := fmt.Fprintln(p.in, c); err != nil {
		return "", err
	}
	if !p.out.Scan() {
		return "", fmt.Errorf("emulator child gone: %v", p.out.Err())
	}
	reply := p.out.Text()
	if !strings.HasPrefix(reply, "ok") {
		return "", fmt.Errorf("emulator: %s: %s", c, reply)
	}
	return strings.TrimSpace(strings.TrimPrefix(reply, "ok")), nil
}

// namespaceConnStr is the current child's connection string (no hub).
func (p *emulatorProc) namespaceConnStr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.connStr
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
	p.stopLocked()
}

// stopLocked closes the child's stdin (it exits) and waits for it.
func (p *emulatorProc) stopLocked() {
	if p.cmd == nil {
		return
	}
	_ = p.in.Close()
	_ = p.cmd.Wait()
	p.cmd = nil
}
