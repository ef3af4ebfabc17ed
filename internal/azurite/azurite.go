// Package azurite starts throw-away Azurite blob services for tests: the
// official Azure Storage emulator (npm package "azurite"), installed by
// scripts/install-azurite.sh into .tools/azurite.
//
// Each Server is one azurite-blob process listening on a free loopback port
// (the kernel picks it; Azurite reports it), keeping everything in memory,
// running in a temp dir of its own. Start returns once the service answers
// HTTP; Stop ends the process (its whole process group) and removes the dir.
//
// The account is Azurite's well-known development account devstoreaccount1
// with its published key (AccountName, AccountKey): not a secret.
package azurite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The well-known development account every Azurite accepts.
const (
	AccountName = "devstoreaccount1"
	AccountKey  = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Environment variables the helpers read.
const (
	// EnvBin names the azurite-blob program to run, overriding the search
	// of DefaultBinRel and PATH.
	EnvBin = "AZURITE_BLOB"
	// EnvConnectionString points Shared at an existing blob service (an
	// Azurite started elsewhere, or a real storage account) instead of a
	// process of its own.
	EnvConnectionString = "AZURITE_CONNECTION_STRING"
)

// DefaultBinRel is where scripts/install-azurite.sh puts azurite-blob,
// relative to the repository root. Start looks for it in the working
// directory and each of its parents (tests run in their package's dir).
const DefaultBinRel = ".tools/azurite/node_modules/.bin/azurite-blob"

// Defaults for Options.
const (
	// DefaultStartTimeout bounds Start when ctx has no earlier deadline.
	// Node starts Azurite in 1–3 s here; the margin is for loaded shared
	// machines.
	DefaultStartTimeout = 60 * time.Second
	// DefaultStopTimeout bounds the graceful part of Stop (SIGTERM) before
	// the process group is killed.
	DefaultStopTimeout = 10 * time.Second
	// DefaultExtentMemoryLimitMB caps Azurite's in-memory blob contents
	// (its own default is half the machine's memory).
	DefaultExtentMemoryLimitMB = 256
)

// ErrNotInstalled is returned by Start when no azurite-blob program is found.
var ErrNotInstalled = errors.New("azurite: azurite-blob is not installed (run scripts/install-azurite.sh)")

// Options configures Start. The zero value is usable.
type Options struct {
	// Bin is the azurite-blob program (default: $AZURITE_BLOB, then
	// DefaultBinRel in the working dir or a parent, then azurite-blob on
	// PATH).
	Bin string
	// BaseDir is where the server's temp dir is created (default
	// os.TempDir()).
	BaseDir string
	// StartTimeout bounds Start (default DefaultStartTimeout).
	StartTimeout time.Duration
	// StopTimeout bounds a graceful stop before the process group is
	// killed (default DefaultStopTimeout).
	StopTimeout time.Duration
	// ExtentMemoryLimitMB caps in-memory blob contents (default
	// DefaultExtentMemoryLimitMB).
	ExtentMemoryLimitMB int
	// Logger receives lifecycle logs (default: discarded).
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.BaseDir == "" {
		o.BaseDir = os.TempDir()
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = DefaultStartTimeout
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = DefaultStopTimeout
	}
	if o.ExtentMemoryLimitMB <= 0 {
		o.ExtentMemoryLimitMB = DefaultExtentMemoryLimitMB
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// FindBin returns the azurite-blob program Start would run for bin (which
// may be empty), or an error wrapping ErrNotInstalled.
func FindBin(bin string) (string, error) {
	if bin == "" {
		bin = os.Getenv(EnvBin)
	}
	if bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("%w: %v", ErrNotInstalled, err)
		}
		return bin, nil
	}
	if dir, err := os.Getwd(); err == nil {
		for {
			p := filepath.Join(dir, filepath.FromSlash(DefaultBinRel))
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	if p, err := exec.LookPath("azurite-blob"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%w: no %s in the working dir or its parents, none on PATH, and %s unset", ErrNotInstalled, DefaultBinRel, EnvBin)
}

// Server is one running (or stopped) azurite-blob process. Its methods are
// safe for concurrent use.
type Server struct {
	opts Options
	log  *slog.Logger
	dir  string
	port int
	cmd  *exec.Cmd
	out  *output

	exited  chan struct{}
	waitErr error // valid after exited is closed

	stopOnce sync.Once
	stopErr  error
}

// Start starts azurite-blob on a free loopback port with in-memory
// persistence and returns once it answers HTTP. It gives up when ctx ends
// or opts.StartTimeout passes, leaving no process and no dir behind.
func Start(ctx context.Context, opts Options) (*Server, error) {
	opts = opts.withDefaults()
	bin, err := FindBin(opts.Bin)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()

	dir, err := os.MkdirTemp(opts.BaseDir, "azurite-")
	if err != nil {
		return nil, fmt.Errorf("azurite: temp dir: %w", err)
	}
	s := &Server{
		opts:   opts,
		log:    opts.Logger,
		dir:    dir,
		out:    newOutput(),
		exited: make(chan struct{}),
	}
	// exec.Command, not CommandContext: the process must outlive Start's
	// ctx. --location cannot be combined with --inMemoryPersistence, so
	// the temp dir is the working dir instead (Azurite writes nothing
	// there in memory mode, but anything it might stays contained).
	s.cmd = exec.Command(bin,
		"--blobHost", "127.0.0.1",
		"--blobPort", "0",
		"--inMemoryPersistence",
		"--extentMemoryLimit", strconv.Itoa(opts.ExtentMemoryLimitMB),
		"--skipApiVersionCheck",
		"--loose",
		"--disableTelemetry",
		"--silent",
	)
	s.cmd.Dir = dir
	s.cmd.Stdout = s.out
	s.cmd.Stderr = s.out
	// Own process group (so Stop reaches anything Node spawns), and die
	// with the test binary.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Do not let an inherited pipe keep Wait (and its copying goroutines)
	// alive after the process is gone.
	s.cmd.WaitDelay = 2 * time.Second

	began := time.Now()
	s.log.Info("azurite: starting", "bin", bin, "dir", dir)
	if err := s.cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("azurite: start %s: %w", bin, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()

	if err := s.awaitReady(ctx); err != nil {
		stopCtx, stopCancel := context.WithTimeout(context.WithoutCancel(ctx), opts.StopTimeout+5*time.Second)
		defer stopCancel()
		_ = s.Stop(stopCtx)
		return nil, err
	}
	s.log.Info("azurite: ready", "pid", s.cmd.Process.Pid, "port", s.port, "elapsed", time.Since(began).Round(time.Millisecond))
	return s, nil
}

// awaitReady waits for Azurite to report its port and then to answer HTTP.
func (s *Server) awaitReady(ctx context.Context) error {
	select {
	case port := <-s.out.port:
		s.port = port
	case <-s.exited:
		return fmt.Errorf("azurite: exited before listening (%v); output:\n%s", s.waitErr, s.out.tail())
	case <-ctx.Done():
		return fmt.Errorf("azurite: no listening port reported: %w; output:\n%s", ctx.Err(), s.out.tail())
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.BlobEndpoint()+"?comp=list", nil)
		if err != nil {
			return fmt.Errorf("azurite: probe request: %w", err)
		}
		resp, err := hc.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			return nil // any HTTP answer (it is 403: the probe is unsigned) will do
		}
		select {
		case <-s.exited:
			return fmt.Errorf("azurite: exited before answering (%v); output:\n%s", s.waitErr, s.out.tail())
		case <-ctx.Done():
			return fmt.Errorf("azurite: port %d does not answer: %w (last error: %v)", s.port, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Port returns the blob service's loopback port.
func (s *Server) Port() int { return s.port }

// Pid returns the azurite-blob process id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// BlobEndpoint returns the account's blob endpoint URL
// (http://127.0.0.1:<port>/devstoreaccount1).
func (s *Server) BlobEndpoint() string {
	return fmt.Sprintf("http://127.0.0.1:%d/%s", s.port, AccountName)
}

// ConnectionString returns a storage connection string for the well-known
// development account on this server.
func (s *Server) ConnectionString() string {
	return fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;",
		AccountName, AccountKey, s.BlobEndpoint())
}

// Exited is closed when the process has ended (after Stop, or if it died).
func (s *Server) Exited() <-chan struct{} { return s.exited }

// Stop ends the server: SIGTERM to its process group, then SIGKILL when it
// has not exited within opts.StopTimeout or by the time ctx ends. It
// returns once the process is gone, and removes the temp dir. Safe to call
// more than once; later calls return the first call's result.
func (s *Server) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() { s.stopErr = s.stop(ctx) })
	return s.stopErr
}

func (s *Server) stop(ctx context.Context) error {
	defer func() { _ = os.RemoveAll(s.dir) }()
	pgid := s.cmd.Process.Pid
	select {
	case <-s.exited:
	default:
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		grace := time.NewTimer(s.opts.StopTimeout)
		defer grace.Stop()
		select {
		case <-s.exited:
		case <-grace.C:
			s.log.Warn("azurite: no exit after SIGTERM, killing", "pid", pgid)
		case <-ctx.Done():
			s.log.Warn("azurite: stop context ended, killing", "pid", pgid)
		}
	}
	// Whatever is left of the group (normally nothing).
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		return fmt.Errorf("azurite: process %d did not exit after SIGKILL", pgid)
	}
	s.log.Info("azurite: stopped", "pid", pgid)
	return nil
}

// listenPort parses Azurite's "... successfully listens on
// http://127.0.0.1:NNN" line; 0 if line is not that.
func listenPort(line string) int {
	const marker = "listens on http"
	i := strings.Index(line, marker)
	if i < 0 {
		return 0
	}
	rest := strings.TrimSpace(line[i+len(marker):])
	j := strings.LastIndexByte(rest, ':')
	if j < 0 {
		return 0
	}
	port, err := strconv.Atoi(strings.TrimRight(rest[j+1:], "/"))
	if err != nil || port <= 0 || port > 65535 {
		return 0
	}
	return port
}

// output collects the process's output: it reports the listening port once
// and keeps the last few KiB for error messages.
type output struct {
	port chan int

	mu       sync.Mutex
	buf      []byte
	line     []byte
	reported bool
}

const outputKeep = 8 << 10

func newOutput() *output { return &output{port: make(chan int, 1)} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf = append(o.buf, p...)
	if len(o.buf) > outputKeep {
		o.buf = append(o.buf[:0], o.buf[len(o.buf)-outputKeep:]...)
	}
	if o.reported {
		return len(p), nil
	}
	o.line = append(o.line, p...)
	for {
		i := bytes.IndexByte(o.line, '\n')
		if i < 0 {
			break
		}
		line := o.line[:i]
		o.line = o.line[i+1:]
		if port := listenPort(string(line)); port > 0 {
			o.reported = true
			o.line = nil
			o.port <- port
			break
		}
	}
	if len(o.line) > outputKeep {
		o.line = o.line[len(o.line)-outputKeep:]
	}
	return len(p), nil
}

func (o *output) tail() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return string(o.buf)
}
