package runner

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// The runner's servers that run in Go — the Event Hubs emulator and the
// latency proxies — run in child processes (this same binary, re-executed
// with one of the environment variables below set), so that the CPU time,
// allocations, goroutines and memory measured in the runner are the
// clients' alone. The parent drives a child over stdin/stdout, one
// command per line, one reply line per command ("ok ..." or "err ...");
// the child's first line says it is ready. A child exits when its stdin
// closes.

// MaybeChild runs a child and exits when this process was started as
// one; otherwise it returns at once. Call it first in main and in
// TestMain.
func MaybeChild() {
	var serve func(io.Reader, io.Writer) error
	switch {
	case os.Getenv(emulatorEnv) == "1":
		serve = serveEmulator
	case os.Getenv(proxyEnv) == "1":
		serve = serveProxies
	default:
		return
	}
	if err := serve(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// child is the parent's side of one child process. Its methods are not
// safe for concurrent use: the owner serializes them.
type child struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// startChild starts this binary as the child env names and returns it
// with its first line.
func startChild(env string) (*child, string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), env+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, "", err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	c := &child{cmd: cmd, in: in, out: bufio.NewScanner(outPipe)}
	if !c.out.Scan() {
		c.stop()
		return nil, "", fmt.Errorf("child did not start: %v", c.out.Err())
	}
	return c, strings.TrimSpace(c.out.Text()), nil
}

// command sends one command line and returns its reply after "ok".
func (c *child) command(line string) (string, error) {
	if c == nil {
		return "", errors.New("child not running")
	}
	if _, err := fmt.Fprintln(c.in, line); err != nil {
		return "", err
	}
	if !c.out.Scan() {
		return "", fmt.Errorf("child gone: %v", c.out.Err())
	}
	reply := c.out.Text()
	if !strings.HasPrefix(reply, "ok") {
		return "", fmt.Errorf("%s: %s", line, reply)
	}
	return strings.TrimSpace(strings.TrimPrefix(reply, "ok")), nil
}

// stop closes the child's stdin (it exits) and waits for it; nil does
// nothing.
func (c *child) stop() {
	if c == nil {
		return
	}
	_ = c.in.Close()
	_ = c.cmd.Wait()
}
