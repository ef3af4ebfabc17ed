package jsinterop_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/isobroker/broker/internal/testenv"
)

// Where the SDK is and how it gets there.
const (
	// envSDKDir names the folder the SDK was installed into, overriding
	// the search for defaultSDKRel.
	envSDKDir = "ISOBROKER_JSSDK_DIR"
	// defaultSDKRel is scripts/install-jssdk.sh's folder, relative to the
	// repository root; it is looked for in the working dir and its parents.
	defaultSDKRel = ".tools/jssdk"
	installHint   = "run scripts/install-jssdk.sh (it needs node >= 20 and npm: Debian's nodejs and npm packages)"
	sdkPackage    = "@azure/event-hubs"
	emulatorPkg   = "github.com/isobroker/broker/cmd/eventhubs-emulator"
)

// Time limits: generous bounds for a loaded 2-core machine, never
// expectations of speed.
const (
	buildTimeout = 3 * time.Minute
	readyTimeout = 30 * time.Second
	stopTimeout  = 10 * time.Second
	nodeTimeout  = 60 * time.Second
)

// emulatorBinary is built once per test binary, on first use; TestMain
// removes it.
var emulatorBinary = &binary{}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { emulatorBinary.remove() }))
}

// require fails the test in CI (environment variable CI set) and skips it,
// saying so, elsewhere — the rule of the project's other external-server
// tests (internal/rabbitnode, internal/azurite).
func require(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("CI: %s", reason)
	}
	t.Skipf("SKIPPED (would fail in CI): %s", reason)
}

// jsSDK is an installed SDK and the node that runs it.
type jsSDK struct {
	node string // node executable
	dir  string // install folder holding node_modules
}

// requireSDK finds node and the SDK pinned in package.json, or goes
// through require. Under -short it skips the test (testenv.NeedsServer):
// every test here runs node and the emulator binary.
func requireSDK(t *testing.T) jsSDK {
	t.Helper()
	testenv.NeedsServer(t, "node.js and the JavaScript Event Hubs SDK, against the emulator binary")
	node, err := exec.LookPath("node")
	if err != nil {
		require(t, "node is not on PATH; "+installHint)
	}
	dir := os.Getenv(envSDKDir)
	if dir == "" {
		dir = findUp(defaultSDKRel)
	}
	if dir == "" {
		require(t, fmt.Sprintf("the JavaScript SDK is not installed (no %s in the working dir or its parents, and %s unset); %s", defaultSDKRel, envSDKDir, installHint))
	}
	want, err := pinnedVersion()
	if err != nil {
		t.Fatalf("package.json: %v", err)
	}
	got, err := installedVersion(dir)
	if err != nil {
		require(t, fmt.Sprintf("the JavaScript SDK in %s is not usable (%v); %s", dir, err, installHint))
	}
	if got != want {
		require(t, fmt.Sprintf("%s %s is installed in %s, package.json pins %s; %s", sdkPackage, got, dir, want, installHint))
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return jsSDK{node: node, dir: abs}
}

// findUp returns rel under the working dir or its nearest parent that has
// it, or "".
func findUp(rel string) string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// pinnedVersion is the SDK version package.json (beside this file) pins.
func pinnedVersion() (string, error) {
	b, err := os.ReadFile("package.json")
	if err != nil {
		return "", err
	}
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		return "", err
	}
	v := pkg.Dependencies[sdkPackage]
	if v == "" {
		return "", fmt.Errorf("no %s dependency", sdkPackage)
	}
	return v, nil
}

func installedVersion(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "node_modules", filepath.FromSlash(sdkPackage), "package.json"))
	if err != nil {
		return "", err
	}
	var pkg struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		return "", err
	}
	return pkg.Version, nil
}

// run runs conformance.mjs operation op with spec (as JSON on its stdin)
// and decodes the JSON line it prints into out. Any failure of the script fails the test, with its
// stderr and the emulator's log.
func (js jsSDK) run(t *testing.T, e *emulatorProc, op string, spec, out any) {
	t.Helper()
	in, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), nodeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, js.node, "conformance.mjs", op)
	cmd.Env = append(os.Environ(), envSDKDir+"="+js.dir)
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	t.Logf("node conformance.mjs %s: %v", op, time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("node conformance.mjs %s: %v\nstderr:\n%s\nemulator log:\n%s", op, err, stderr.String(), e.logs.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), out); err != nil {
		t.Fatalf("node conformance.mjs %s: result %q: %v", op, stdout.String(), err)
	}
}

// binary is the emulator program, built on first use.
type binary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func (b *binary) get(t *testing.T) string {
	t.Helper()
	b.once.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			b.err = fmt.Errorf("the go command is not on PATH: %w", err)
			return
		}
		if b.dir, b.err = os.MkdirTemp("", "jsinterop-"); b.err != nil {
			return
		}
		b.path = filepath.Join(b.dir, "eventhubs-emulator")
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, goBin, "build", "-o", b.path, emulatorPkg).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build %s: %w\n%s", emulatorPkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func (b *binary) remove() {
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// emulatorProc is one running eventhubs-emulator process.
type emulatorProc struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	// namespace is the namespace connection string the process printed;
	// hubs maps each hub to its connection string.
	namespace string
	hubs      map[string]string
	key       string
	exited    chan struct{}
	waitErr   error // valid after exited is closed
}

// testKey is the shared access key the emulators of these tests use.
const testKey = "anMtaW50ZXJvcC10ZXN0LWtleQ=="

// startEmulator builds (once) and starts the emulator binary on a free
// loopback port with args and a known key, and waits for its ready output:
// the namespace connection string and one per hub on stdout. The process
// is stopped with SIGTERM at cleanup and must exit cleanly.
func startEmulator(t *testing.T, args ...string) *emulatorProc {
	t.Helper()
	bin := emulatorBinary.get(t)
	args = append([]string{"-addr", "127.0.0.1:0", "-key", testKey, "-log-level", "debug"}, args...)
	e := &emulatorProc{logs: &syncBuffer{}, hubs: map[string]string{}, key: testKey, exited: make(chan struct{})}
	e.cmd = exec.Command(bin, args...)
	e.cmd.Stderr = e.logs
	// Die with the test binary.
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := e.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	// The reader never blocks: stdout must be read to its end for Wait,
	// and nothing reads lines after the ready output.
	lines := make(chan string, 64)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	go func() {
		<-readerDone // Wait must not run before stdout is read to its end
		e.waitErr = e.cmd.Wait()
		close(e.exited)
	}()
	t.Cleanup(func() { e.stop(t) })

	want := 1 // the namespace, then each hub
	for _, v := range hubArgs(args) {
		want += len(strings.Split(v, ","))
	}
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	for got := 0; got < want; got++ {
		select {
		case line := <-lines:
			if got == 0 {
				e.namespace = line
				continue
			}
			i := strings.LastIndex(line, ";EntityPath=")
			if i < 0 {
				t.Fatalf("emulator printed %q, want a hub's connection string", line)
			}
			e.hubs[line[i+len(";EntityPath="):]] = line
		case <-e.exited:
			t.Fatalf("emulator exited before it was ready: %v\n%s", e.waitErr, e.logs.String())
		case <-timer.C:
			t.Fatalf("emulator not ready within %v\n%s", readyTimeout, e.logs.String())
		}
	}
	if !strings.HasPrefix(e.namespace, "Endpoint=sb://127.0.0.1:") || !strings.Contains(e.namespace, "UseDevelopmentEmulator=true") {
		t.Fatalf("emulator printed %q, want a namespace connection string", e.namespace)
	}
	return e
}

// hubArgs returns the values of every -hubs flag in args.
func hubArgs(args []string) []string {
	var out []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-hubs" {
			out = append(out, args[i+1])
		}
	}
	return out
}

// hub returns the connection string of a hub the emulator was started with.
func (e *emulatorProc) hub(t *testing.T, name string) string {
	t.Helper()
	cs, ok := e.hubs[name]
	if !ok {
		t.Fatalf("no hub %q (have %v)", name, e.hubs)
	}
	return cs
}

// stop sends SIGTERM and waits for a clean exit; a process that does not
// exit in time is killed and fails the test.
func (e *emulatorProc) stop(t *testing.T) {
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-e.exited:
	case <-timer.C:
		_ = e.cmd.Process.Kill()
		<-e.exited
		t.Errorf("emulator did not exit within %v of SIGTERM", stopTimeout)
	}
	if e.waitErr != nil {
		t.Errorf("emulator exit after SIGTERM: %v (want a clean exit)", e.waitErr)
	}
	if t.Failed() {
		t.Logf("emulator log:\n%s", e.logs.String())
	}
}
