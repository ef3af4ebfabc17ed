package driver

import (
	"testing"

	"go.uber.org/goleak"
)

// The subscription lifecycle starts goroutines: none may outlive a test.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
