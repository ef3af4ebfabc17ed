// Package testenv holds the rules by which a test steps aside in short mode.
//
// `go test -short` (make test-short) is a contributor's first loop: it
// starts no server — no RabbitMQ node, no Azurite, no node.js process — and
// runs everything else, the in-process Event Hubs emulator included, in
// well under a minute. Every helper that would start or reach such a server
// calls NeedsServer first, so the tests that use them skip with the reason;
// the few emulator tests that take several seconds of wall time each call
// Slow. Without -short neither does anything: make test (CI) runs every
// test, and a missing server there still fails the test (see
// internal/rabbitnode and internal/azurite).
package testenv

import "testing"

// NeedsServer skips t under -short, naming the server it needs; otherwise
// it returns at once. It must be called from the test's own goroutine.
func NeedsServer(t testing.TB, server string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("SKIPPED under -short: needs %s (make test runs it)", server)
	}
}

// Slow skips t under -short, saying why it is slow (and, where one does,
// which faster test covers the same path); otherwise it returns at once. It
// must be called from the test's own goroutine.
func Slow(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("SKIPPED under -short: slow, %s (make test runs it)", why)
	}
}
