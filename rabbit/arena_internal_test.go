package rabbit

import "testing"

func TestArenaPoolClasses(t *testing.T) {
	for _, c := range []struct{ n, class int }{
		{0, 0}, {1, 0}, {4096, 0}, {4097, 1}, {64 << 10, 4}, {8 << 20, 11}, {8<<20 + 1, -1},
	} {
		if got := arenaClass(c.n); got != c.class {
			t.Errorf("arenaClass(%d) = %d, want %d", c.n, got, c.class)
		}
	}
	var p arenaPool
	a := p.get(5000)
	if len(*a) != 5000 || cap(*a) != 8192 {
		t.Fatalf("get(5000): len %d cap %d, want 5000 and 8192", len(*a), cap(*a))
	}
	big := p.get(9 << 20)
	if len(*big) != 9<<20 {
		t.Fatalf("get(9 MiB): len %d", len(*big))
	}
	p.put(big) // not pooled: must not end up in a class
	p.put(a)
	// sync.Pool may drop what it holds at any GC, so reuse is not
	// asserted; what comes back must have the requested length and a
	// class capacity.
	for _, n := range []int{6000, 8192, 100} {
		b := p.get(n)
		if len(*b) != n || cap(*b) != 1<<(arenaMinShift+arenaClass(n)) {
			t.Errorf("get(%d): len %d cap %d", n, len(*b), cap(*b))
		}
	}
}
