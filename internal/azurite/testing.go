package azurite

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/isobroker/broker/internal/testenv"
)

// Needs is the server testenv.NeedsServer names for the tests that use
// Azurite (also those given AZURITE_CONNECTION_STRING: -short reaches no
// server at all).
const Needs = "Azurite (the Azure Storage emulator, node.js)"

// Require marks the running test as needing something that is missing:
// it fails the test in CI (environment variable CI set) and skips it,
// saying so, elsewhere. It does not return.
func Require(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("CI: %s", reason)
		return
	}
	t.Skipf("SKIPPED (would fail in CI): %s", reason)
}

// StartTest starts a server for one test and stops it in t.Cleanup. A
// missing Azurite goes through Require (fail in CI, skip elsewhere); any
// other failure to start fails the test. Under -short it skips the test
// (testenv.NeedsServer).
func StartTest(t testing.TB, opts Options) *Server {
	t.Helper()
	testenv.NeedsServer(t, Needs)
	ctx, cancel := context.WithTimeout(context.Background(), opts.withDefaults().StartTimeout)
	defer cancel()
	s, err := Start(ctx, opts)
	if errors.Is(err, ErrNotInstalled) {
		Require(t, err.Error())
	}
	if err != nil {
		t.Fatalf("azurite: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opts.withDefaults().StopTimeout+10*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("azurite: stop: %v", err)
		}
	})
	return s
}

// Shared is the blob service shared by the tests of one test binary. The
// binary's TestMain creates it and closes it after m.Run:
//
//	var blobs = azurite.NewShared(azurite.Options{})
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		blobs.Close()
//		os.Exit(code)
//	}
//
// The server is started lazily by the first ConnectionString call, once;
// later calls share it (or its failure). When AZURITE_CONNECTION_STRING is
// set, that service is used and nothing is started.
type Shared struct {
	opts Options

	once   sync.Once
	server *Server
	err    error
}

// NewShared returns a Shared that starts its server with opts on first
// use. It starts nothing itself.
func NewShared(opts Options) *Shared { return &Shared{opts: opts} }

// ConnectionString returns $AZURITE_CONNECTION_STRING when set, otherwise
// the connection string of the shared server, starting it on first use.
// A missing Azurite goes through Require (fail in CI, skip elsewhere); any
// other failure to start fails the test. Under -short it skips the test
// (testenv.NeedsServer).
func (s *Shared) ConnectionString(t testing.TB) string {
	t.Helper()
	testenv.NeedsServer(t, Needs)
	if cs := os.Getenv(EnvConnectionString); cs != "" {
		return cs
	}
	return s.Server(t).ConnectionString()
}

// Server returns the shared server, starting it on first use, for tests
// that must control the process. With AZURITE_CONNECTION_STRING set there
// is none: such a test goes through Require. Under -short it skips the
// test (testenv.NeedsServer).
func (s *Shared) Server(t testing.TB) *Server {
	t.Helper()
	testenv.NeedsServer(t, Needs)
	if os.Getenv(EnvConnectionString) != "" {
		Require(t, "this test needs an Azurite it controls, but "+EnvConnectionString+" points to an external service")
	}
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.withDefaults().StartTimeout)
		defer cancel()
		s.server, s.err = Start(ctx, s.opts)
	})
	if errors.Is(s.err, ErrNotInstalled) {
		Require(t, s.err.Error())
	}
	if s.err != nil {
		t.Fatalf("no Azurite for this test: %v", s.err)
	}
	return s.server
}

// Close stops the shared server if it was started. Safe to call when
// nothing was started, and more than once.
func (s *Shared) Close() {
	s.once.Do(func() { s.err = errors.New("azurite: shared server closed") })
	if s.server != nil {
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.withDefaults().StopTimeout+10*time.Second)
		defer cancel()
		_ = s.server.Stop(ctx)
	}
}

// ContainerClient returns a client for container name on the service of
// connStr, with an HTTP transport of its own that t.Cleanup closes (so that
// no keep-alive goroutine outlives the test) and short retries suited to a
// loopback emulator. It creates nothing.
func ContainerClient(t testing.TB, connStr, name string) *container.Client {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	cc, err := container.NewClientFromConnectionString(connStr, name, &container.ClientOptions{
		ClientOptions: azcore.ClientOptions{
			Transport: &http.Client{Transport: tr},
			Retry: policy.RetryOptions{
				MaxRetries:    2,
				TryTimeout:    10 * time.Second,
				RetryDelay:    50 * time.Millisecond,
				MaxRetryDelay: 500 * time.Millisecond,
			},
		},
	})
	if err != nil {
		t.Fatalf("azurite: container client: %v", err)
	}
	return cc
}

// NewContainer creates a container with a random name on the service of
// connStr and returns its name and a client for it (see ContainerClient).
// The container is deleted in t.Cleanup.
func NewContainer(t testing.TB, connStr string) (string, *container.Client) {
	t.Helper()
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := "test-" + hex.EncodeToString(b[:])
	cc := ContainerClient(t, connStr, name)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cc.Create(ctx, nil); err != nil {
		t.Fatalf("azurite: create container %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = cc.Delete(ctx, nil)
	})
	return name, cc
}
