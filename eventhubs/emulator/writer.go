package emulator

// The socket's write side: the writer queues encoded frames, which one
// goroutine writes to the connection, and wakes the loop when the queue
// drains below the low-water mark; send is how the loop queues a frame
// (and drops a peer that lets writeHardLimit bytes pile up).

import (
	"net"
	"sync"
	"time"

	"github.com/isobroker/broker/internal/amqp10"
)

// send queues one frame.
func (c *conn) send(ch uint16, body amqp10.Body, payload []byte) {
	b, err := amqp10.AppendFrame(nil, amqp10.FrameAMQP, ch, body, payload)
	if err != nil {
		c.log.Error("encoding frame failed", "err", err)
		c.finished = true
		return
	}
	if c.out.pending() > writeHardLimit {
		c.log.Warn("peer is not reading; dropping connection", "queued_bytes", c.out.pending())
		c.finished = true
		return
	}
	c.out.enqueue(b)
}

// writer owns the socket's write side.
type writer struct {
	c      *conn
	mu     sync.Mutex
	bufs   [][]byte
	n      int
	fin    bool
	err    error
	signal chan struct{}
	failed chan struct{} // closed on a write error
	done   chan struct{} // closed when run returns
}

func newWriter(c *conn) *writer {
	return &writer{c: c, signal: make(chan struct{}, 1), failed: make(chan struct{}), done: make(chan struct{})}
}

// enqueue queues b, unless the writer is finishing or has failed.
func (w *writer) enqueue(b []byte) {
	w.mu.Lock()
	if w.fin || w.err != nil {
		w.mu.Unlock()
		return
	}
	w.bufs = append(w.bufs, b)
	w.n += len(b)
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// pending is the number of queued bytes not yet written.
func (w *writer) pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// error is the write error, if any.
func (w *writer) error() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// finish makes run return once the queue is written.
func (w *writer) finish() {
	w.mu.Lock()
	w.fin = true
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// run writes the queue until finish or a write error; it wakes the loop
// when the queue falls below writeLowWater.
func (w *writer) run() {
	defer close(w.done)
	for {
		w.mu.Lock()
		bufs, n, fin := w.bufs, w.n, w.fin
		w.bufs = nil
		w.mu.Unlock()
		if len(bufs) == 0 {
			if fin {
				return
			}
			<-w.signal
			continue
		}
		_ = w.c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
		nb := net.Buffers(bufs)
		_, err := nb.WriteTo(w.c.nc)
		w.mu.Lock()
		w.n -= n
		left := w.n
		if err != nil {
			w.err = err
			w.bufs, w.n = nil, 0
		}
		w.mu.Unlock()
		if err != nil {
			close(w.failed)
			return
		}
		if n+left >= writeLowWater && left < writeLowWater {
			w.c.notify()
		}
	}
}
