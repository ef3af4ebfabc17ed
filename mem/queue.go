package mem

import (
	"container/list"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/isobroker/broker"
)

// errStopped is returned by put when the broker closes while it waits.
var errStopped = errors.New("mem: stopped")

// item is one message waiting in, or in flight from, a queue. msg is the
// broker's private copy, shared by every group's item and never modified
// after Publish; deliveries get clones.
type item struct {
	msg   *broker.Message
	key   string
	count int // earlier deliveries
}

// queue is one group's backlog. Ordering rule: items with the same
// non-empty key are handed out one at a time in publish order (the key is
// "busy" while one is in flight); nacked items go back to the front.
//
// ready holds, in arrival order, entries that can be handed out now: an
// *item without a key, or a string key whose head item is waiting in
// byKey and that has nothing in flight.
type queue struct {
	mu       sync.Mutex
	ready    *list.List
	byKey    map[string]*list.List // per key, waiting items in order
	busy     map[string]bool       // keys with an item in flight
	pending  int                   // items waiting (not in flight)
	capacity int
	changed  chan struct{} // closed and replaced on every change
	private  bool
	dropped  bool                     // removed from its topic; takers stop
	held     map[*time.Timer]struct{} // items waiting out a redelivery delay
}

func newQueue(capacity int, private bool) *queue {
	return &queue{
		ready:    list.New(),
		byKey:    make(map[string]*list.List),
		busy:     make(map[string]bool),
		capacity: capacity,
		changed:  make(chan struct{}),
		private:  private,
		held:     make(map[*time.Timer]struct{}),
	}
}

// broadcast wakes every waiter. The caller holds q.mu.
func (q *queue) broadcast() {
	close(q.changed)
	q.changed = make(chan struct{})
}

// put appends it, waiting while the queue is full until ctx or stop ends.
func (q *queue) put(ctx context.Context, stop <-chan struct{}, it *item) error {
	q.mu.Lock()
	for q.pending >= q.capacity && !q.dropped {
		wait := q.changed
		q.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		case <-stop:
			return errStopped
		}
		q.mu.Lock()
	}
	defer q.mu.Unlock()
	if q.dropped {
		return nil // nobody will ever read it: same as a topic with no group
	}
	q.enqueue(it)
	q.broadcast()
	return nil
}

// enqueue appends a new item. The caller holds q.mu.
func (q *queue) enqueue(it *item) {
	q.pending++
	if it.key == "" {
		q.ready.PushBack(it)
		return
	}
	l := q.byKey[it.key]
	if l == nil {
		l = list.New()
		q.byKey[it.key] = l
	}
	if l.Len() == 0 && !q.busy[it.key] {
		q.ready.PushBack(it.key) // the key becomes deliverable
	}
	l.PushBack(it)
}

// take removes and returns the next deliverable item, waiting until one is
// available, ctx ends or stop is closed (then it returns nil).
func (q *queue) take(ctx context.Context, stop <-chan struct{}) *item {
	q.mu.Lock()
	for {
		if q.dropped || ctx.Err() != nil || isDone(stop) {
			q.mu.Unlock()
			return nil
		}
		if e := q.ready.Front(); e != nil {
			q.ready.Remove(e)
			it := q.claim(e.Value)
			q.pending--
			q.broadcast() // space for publishers
			q.mu.Unlock()
			return it
		}
		wait := q.changed
		q.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil
		case <-stop:
			return nil
		}
		q.mu.Lock()
	}
}

// claim turns a ready entry into the item to hand out. The caller holds q.mu.
func (q *queue) claim(entry any) *item {
	if it, ok := entry.(*item); ok {
		return it
	}
	key := entry.(string)
	l := q.byKey[key]
	it := l.Remove(l.Front()).(*item)
	if l.Len() == 0 {
		delete(q.byKey, key)
	}
	q.busy[key] = true
	return it
}

// settle finishes an item handed out by take: acked items are gone, nacked
// ones go back to the front of their order with their count raised.
func (q *queue) settle(it *item, ack bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if it.key != "" {
		delete(q.busy, it.key)
	}
	if ack || q.dropped {
		if l := q.byKey[it.key]; it.key != "" && l != nil && l.Len() > 0 {
			q.ready.PushBack(it.key)
		}
		q.broadcast()
		return
	}
	it.count++
	q.pending++
	q.pushFront(it)
}

// settleAfter nacks it and hands it out again after d: meanwhile other
// items are handed out, except those behind it with the same key (the key
// stays busy, so the order holds). The held item counts towards the
// capacity. d <= 0 is settle(it, false).
func (q *queue) settleAfter(it *item, d time.Duration) {
	if d <= 0 {
		q.settle(it, false)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.dropped {
		return
	}
	it.count++
	q.pending++
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		if _, ok := q.held[t]; !ok {
			return // dropped meanwhile
		}
		delete(q.held, t)
		if it.key != "" {
			delete(q.busy, it.key)
		}
		q.pushFront(it)
	})
	q.held[t] = struct{}{}
}

// pushFront puts a redelivered item first in its order and wakes the
// takers. The caller holds q.mu and has counted it in pending; its key,
// if any, is not busy.
func (q *queue) pushFront(it *item) {
	if it.key == "" {
		q.ready.PushFront(it)
	} else {
		// The key was busy, so it is not in ready: its successors wait in
		// byKey behind the redelivered item.
		l := q.byKey[it.key]
		if l == nil {
			l = list.New()
			q.byKey[it.key] = l
		}
		l.PushFront(it)
		q.ready.PushFront(it.key)
	}
	q.broadcast()
}

// drop marks the queue removed and wakes everyone waiting on it.
func (q *queue) drop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.dropped = true
	for t := range q.held {
		t.Stop()
	}
	clear(q.held)
	q.broadcast()
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
