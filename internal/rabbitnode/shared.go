package rabbitnode

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/isobroker/broker/internal/testenv"
)

// Needs is the server testenv.NeedsServer names for the tests that use a
// node (also those given RABBITMQ_URL: -short reaches no server at all).
const Needs = "RabbitMQ (rabbitmq-server)"

// EnvURL names the environment variable that points tests at an existing
// RabbitMQ instead of a node of their own.
const EnvURL = "RABBITMQ_URL"

// Shared is the RabbitMQ node shared by the tests of one test binary. The
// binary's TestMain creates it and closes it after m.Run:
//
//	var rabbit *rabbitnode.Shared
//
//	func TestMain(m *testing.M) {
//		rabbit = rabbitnode.NewShared(rabbitnode.Options{})
//		code := m.Run()
//		rabbit.Close()
//		os.Exit(code)
//	}
//
// The node is started lazily by the first URL call, once; later calls share
// it (or its failure).
type Shared struct {
	opts Options

	once sync.Once
	node *Node
	url  string
	err  error
}

// NewShared returns a Shared that starts its node with opts on first use.
// It starts nothing itself.
func NewShared(opts Options) *Shared { return &Shared{opts: opts} }

// URL returns RABBITMQ_URL when set, otherwise the URL of the shared node,
// starting it on first use. When no server is available the test fails —
// also outside CI: a missing server is a broken test setup, not a reason to
// pass. (Install it with scripts/install-rabbitmq.sh.) Under -short the
// test is skipped instead (testenv.NeedsServer), and nothing is started.
func (s *Shared) URL(t testing.TB) string {
	t.Helper()
	testenv.NeedsServer(t, Needs)
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.withDefaults().StartTimeout)
		defer cancel()
		s.node, s.err = Start(ctx, s.opts)
		if s.err == nil {
			s.url = s.node.URL()
		}
	})
	if s.err != nil {
		t.Fatalf("no RabbitMQ for this test: %s is not set and a local node could not be started: %v", EnvURL, s.err)
	}
	return s.url
}

// Node returns the shared node, starting it on first use, for tests that
// need rabbitmqctl. When RABBITMQ_URL points elsewhere there is no local
// node: such a test is skipped outside CI and fails in CI (env CI set).
// Under -short it skips the test (testenv.NeedsServer).
func (s *Shared) Node(t testing.TB) *Node {
	t.Helper()
	testenv.NeedsServer(t, Needs)
	if os.Getenv(EnvURL) != "" {
		Require(t, fmt.Sprintf("this test needs a local node it controls, but %s points to an external server", EnvURL))
	}
	s.URL(t)
	return s.node
}

// Close stops the shared node, if it was started. It is safe to call when
// nothing was started, and more than once.
func (s *Shared) Close() {
	if s.node != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = s.node.Stop(ctx)
	}
}

// StartT starts a private node for one test and stops it (removing its
// dir) when the test ends. Without a local server it fails the test.
// Under -short it skips the test (testenv.NeedsServer).
func StartT(t testing.TB, opts Options) *Node {
	t.Helper()
	testenv.NeedsServer(t, Needs)
	if os.Getenv(EnvURL) != "" {
		if _, err := os.Stat(opts.withDefaults().Server); err != nil {
			Require(t, fmt.Sprintf("this test needs local nodes, but rabbitmq-server is not installed (%s is set)", EnvURL))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.withDefaults().StartTimeout)
	defer cancel()
	n, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start RabbitMQ node: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Stop(ctx); err != nil {
			t.Errorf("stop RabbitMQ node: %v", err)
		}
	})
	return n
}

// Require fails the test with reason in CI (env CI set), and skips it
// loudly elsewhere.
func Require(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("CI: %s", reason)
	}
	t.Skipf("SKIPPED (would fail in CI): %s", reason)
}
