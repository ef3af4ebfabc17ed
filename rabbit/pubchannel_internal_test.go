package rabbit

import (
	"strconv"
	"strings"
	"testing"
)

// TestStampAppID: a stamp's app-id is the prefix and the number, read
// back by recordLocked's parse, and costs one allocation per message.
func TestStampAppID(t *testing.T) {
	for _, n := range []int64{1, 9, 10, 123456789, 1<<63 - 1} {
		id := stampAppID(n)
		got, err := strconv.ParseInt(strings.TrimPrefix(id, stampPrefix), 10, 64)
		if !strings.HasPrefix(id, stampPrefix) || err != nil || got != n {
			t.Errorf("stampAppID(%d) = %q, parsed back as %d (%v)", n, id, got, err)
		}
	}
	if a := testing.AllocsPerRun(100, func() { _ = stampAppID(987654321) }); a > 1 {
		t.Errorf("stampAppID allocates %.0f times, want 1", a)
	}
}
