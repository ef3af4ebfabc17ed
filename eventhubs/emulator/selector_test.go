package emulator

import "testing"

func TestSplitSelector(t *testing.T) {
	good := map[string][3]string{
		"amqp.annotation.x-opt-offset > '-1'":                   {"x-opt-offset", ">", "-1"},
		"  amqp.annotation.x-opt-offset>'@latest'  ":            {"x-opt-offset", ">", "@latest"},
		"amqp.annotation.x-opt-sequence-number >= '42'":         {"x-opt-sequence-number", ">=", "42"},
		"amqp.annotation.x-opt-enqueued-time > '1700000000000'": {"x-opt-enqueued-time", ">", "1700000000000"},
	}
	for expr, want := range good {
		m := splitSelector(expr)
		if m == nil || m[1] != want[0] || m[2] != want[1] || m[3] != want[2] {
			t.Errorf("splitSelector(%q) = %q, want %q", expr, m, want)
		}
	}
	for _, bad := range []string{
		"", "amqp.annotation.x-opt-offset", "amqp.annotation.x-opt-other > '1'",
		"amqp.annotation.x-opt-offset < '1'", "amqp.annotation.x-opt-offset > 1",
		"amqp.annotation.x-opt-offset > '1' OR 1=1", "amqp.annotation.x-opt-offset > 'a'b'",
		"x-opt-offset > '1'",
	} {
		if m := splitSelector(bad); m != nil {
			t.Errorf("splitSelector(%q) = %q, want no match", bad, m)
		}
	}
}
