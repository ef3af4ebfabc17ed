package rabbit

import "sync"

// Publish copies the bodies of a call into one buffer (an arena), because
// the caller may reuse a Body as soon as Publish returns while a message
// of the call may still be on its way out: a Publish that returns by its
// ctx leaves the channel's writer behind. Allocating that copy for every
// call was the adapter's main cost on large messages (the allocation and
// the garbage collections it drives, not the copy itself), so a Broker
// recycles its arenas. An arena goes back to the pool only once no writer
// can read it any more (see batch.recycle); otherwise it is left to the
// garbage collector. The pool is the Broker's own, and sync.Pool empties
// itself when unused, so an idle Broker holds no arenas.

const (
	arenaMinShift = 12 // the smallest pooled arena: 4 KiB
	arenaClasses  = 12 // the largest: 4 KiB << 11 = 8 MiB; larger calls are not pooled
)

// arenaPool holds recycled arenas in power-of-two size classes.
type arenaPool struct {
	classes [arenaClasses]sync.Pool // of *[]byte
}

// arenaClass returns the class of the smallest arena that holds n bytes,
// or -1 when n is larger than any class.
func arenaClass(n int) int {
	for c := range arenaClasses {
		if n <= 1<<(arenaMinShift+c) {
			return c
		}
	}
	return -1
}

// get returns a buffer of length n, recycled when one of its class is
// free.
func (p *arenaPool) get(n int) *[]byte {
	c := arenaClass(n)
	if c < 0 {
		b := make([]byte, n)
		return &b
	}
	if v, ok := p.classes[c].Get().(*[]byte); ok {
		*v = (*v)[:n]
		return v
	}
	b := make([]byte, n, 1<<(arenaMinShift+c))
	return &b
}

// put gives back a buffer from get; the caller must not touch it again.
func (p *arenaPool) put(b *[]byte) {
	c := arenaClass(cap(*b))
	if c < 0 || cap(*b) != 1<<(arenaMinShift+c) {
		return // not one of ours (an unpooled size)
	}
	p.classes[c].Put(b)
}
