package azurite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"go.uber.org/goleak"

	"github.com/isobroker/broker/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartServeStop(t *testing.T) {
	began := time.Now()
	s := StartTest(t, Options{Logger: nil})
	t.Logf("azurite answered after %v on port %d (pid %d)", time.Since(began).Round(time.Millisecond), s.Port(), s.Pid())
	if !strings.Contains(s.ConnectionString(), fmt.Sprintf("BlobEndpoint=http://127.0.0.1:%d/devstoreaccount1;", s.Port())) {
		t.Fatalf("connection string %q does not name the port", s.ConnectionString())
	}

	// The connection string works: create a container, write and list a blob.
	_, cc := NewContainer(t, s.ConnectionString())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v := "x"
	if _, err := cc.NewBlockBlobClient("a/b").Upload(ctx, streaming.NopCloser(bytes.NewReader([]byte("hi"))), nil); err != nil {
		t.Fatalf("upload: %v", err)
	}
	if _, err := cc.NewBlockBlobClient("a/b").SetMetadata(ctx, map[string]*string{"k": &v}, nil); err != nil {
		t.Fatalf("set metadata: %v", err)
	}
	pager := cc.NewListBlobsFlatPager(nil)
	page, err := pager.NextPage(ctx)
	if err != nil || len(page.Segment.BlobItems) != 1 || *page.Segment.BlobItems[0].Name != "a/b" {
		t.Fatalf("list: %v %+v", err, page)
	}

	pid, port, dir := s.Pid(), s.Port(), s.dir
	stopBegan := time.Now()
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	t.Logf("azurite stopped in %v", time.Since(stopBegan).Round(time.Millisecond))
	if err := s.Stop(ctx); err != nil { // idempotent
		t.Fatalf("second stop: %v", err)
	}
	// No process left: neither the pid nor anything in its group.
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("process %d still there after Stop (kill 0: %v)", pid, err)
	}
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("process group %d still there after Stop (kill 0: %v)", pid, err)
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		_ = c.Close()
		t.Fatalf("port %d still accepts connections after Stop", port)
	}
	if _, err := syscall.Getpgid(pid); err == nil {
		t.Fatalf("pid %d still exists", pid)
	}
	if dirExists(dir) {
		t.Fatalf("temp dir %s left behind", dir)
	}
}

func dirExists(dir string) bool {
	var st syscall.Stat_t
	return syscall.Stat(dir, &st) == nil
}

func TestTwoServersAreIndependent(t *testing.T) {
	a := StartTest(t, Options{})
	b := StartTest(t, Options{})
	if a.Port() == b.Port() {
		t.Fatalf("both servers on port %d", a.Port())
	}
	_, ca := NewContainer(t, a.ConnectionString())
	cb := ContainerClient(t, b.ConnectionString(), "absent")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := ca.GetProperties(ctx, nil); err != nil {
		t.Fatalf("container on a: %v", err)
	}
	if _, err := cb.GetProperties(ctx, nil); err == nil {
		t.Fatal("container of a visible on b")
	}
	// Stopping a leaves b serving.
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	_, cb2 := NewContainer(t, b.ConnectionString())
	if _, err := cb2.GetProperties(ctx, nil); err != nil {
		t.Fatalf("b after a stopped: %v", err)
	}
}

func TestStartCanceledLeavesNothing(t *testing.T) {
	testenv.NeedsServer(t, Needs) // starts Azurite, if only for 20ms
	if _, err := FindBin(""); err != nil {
		Require(t, err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	base := t.TempDir()
	s, err := Start(ctx, Options{BaseDir: base})
	if err == nil {
		// A very fast machine: fine, but then stop it.
		_ = s.Stop(context.Background())
		t.Skip("azurite started within 20ms")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	entries, _ := os.ReadDir(base)
	if len(entries) != 0 {
		t.Fatalf("left behind in base dir: %v", entries)
	}
}

func TestNotInstalled(t *testing.T) {
	_, err := Start(t.Context(), Options{Bin: "/nonexistent/azurite-blob"})
	if !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("err = %v, want ErrNotInstalled", err)
	}
	t.Setenv(EnvBin, "/nonexistent/azurite-blob")
	if _, err := FindBin(""); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("FindBin with %s set to a missing file: %v", EnvBin, err)
	}
}

// fakeTB records what Require does instead of ending the test.
type fakeTB struct {
	testing.TB
	fatal, skip string
}

func (f *fakeTB) Helper()                           {}
func (f *fakeTB) Fatalf(format string, args ...any) { f.fatal = fmt.Sprintf(format, args...) }
func (f *fakeTB) Skipf(format string, args ...any)  { f.skip = fmt.Sprintf(format, args...) }

func TestRequireFailsInCI(t *testing.T) {
	t.Setenv("CI", "true")
	f := &fakeTB{TB: t}
	Require(f, "no azurite")
	if f.fatal == "" || f.skip != "" {
		t.Fatalf("in CI: fatal %q skip %q; want a failure", f.fatal, f.skip)
	}
	t.Setenv("CI", "")
	f = &fakeTB{TB: t}
	Require(f, "no azurite")
	if f.skip == "" || f.fatal != "" || !strings.Contains(f.skip, "no azurite") {
		t.Fatalf("outside CI: fatal %q skip %q; want a skip with the reason", f.fatal, f.skip)
	}
}

func TestSharedMissingFailsInCI(t *testing.T) {
	t.Setenv("CI", "1")
	t.Setenv(EnvConnectionString, "")
	sh := NewShared(Options{Bin: "/nonexistent/azurite-blob"})
	defer sh.Close()
	f := &fakeTB{TB: t}
	func() {
		defer func() { _ = recover() }() // Server goes on after the fake Fatalf
		sh.ConnectionString(f)
	}()
	if f.fatal == "" {
		t.Fatal("a missing Azurite did not fail the test in CI")
	}
}

func TestListenPort(t *testing.T) {
	for line, want := range map[string]int{
		"Azurite Blob service successfully listens on http://127.0.0.1:41151": 41151,
		"Azurite Blob service successfully listens on https://[::1]:443/":     443,
		"Azurite Blob service is starting on 127.0.0.1:0":                     0,
		"listens on http://127.0.0.1:notaport":                                0,
	} {
		if got := listenPort(line); got != want {
			t.Errorf("listenPort(%q) = %d, want %d", line, got, want)
		}
	}
}
