package rabbit_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/rabbit"
)

// class is what the topology does with a message, by its routing key.
type class int

const (
	stored  class = iota // stored.N: bound to Qs, always accepted
	nowhere              // nowhere.N: no binding, returned (mandatory)
	reject               // reject.N: bound to Qr (max length 0, reject-publish), nacked
	flap                 // flap.N: bound to Qf by a binding that comes and goes
)

func (c class) String() string { return [...]string{"stored", "nowhere", "reject", "flap"}[c] }

// home is the queue a message of the class may legitimately end up in
// ("" for none).
func (c class) home() string {
	switch c {
	case stored:
		return "Qs"
	case flap:
		return "Qf"
	}
	return ""
}

// oracleCall is one Publish call: its messages, their classes, its result.
type oracleCall struct {
	msgs    []*broker.Message
	classes []class
	err     error
}

// oracle holds every Publish call of the run and judges them against
// what the queues held afterwards.
type oracle struct {
	calls []oracleCall
}

// oracleTally is the judge's verdict.
type oracleTally struct {
	calls, messages                 int
	nilCalls, nacked, unroutable    int
	other, unattributed             int // unattributed: ErrNacked/ErrUnroutable without a *broker.MessageError
	duplicates, deliveredDespiteErr int
	returnedYetStored               int // a flap message reported unroutable that an earlier (unconfirmed) send had stored
	lies                            []string
	lieKinds                        map[string]int
	exampleUnattributed             error
}

// newOracle draws calls (1–8 messages, mostly 1, classes mixed) until
// total messages.
func newOracle(rng *rand.Rand, total int) *oracle {
	o := &oracle{}
	for n := 0; n < total; {
		size := 1
		if rng.IntN(10) >= 6 {
			size = 2 + rng.IntN(7)
		}
		size = min(size, total-n)
		c := oracleCall{}
		for range size {
			var cl class
			switch r := rng.IntN(100); {
			case r < 55:
				cl = stored
			case r < 75:
				cl = flap
			case r < 98:
				cl = nowhere
			default:
				cl = reject
			}
			c.msgs = append(c.msgs, &broker.Message{
				ID:   fmt.Sprintf("o-%06d", n),
				Key:  fmt.Sprintf("%s.%d", cl, n),
				Body: []byte("oracle"),
			})
			c.classes = append(c.classes, cl)
			n++
		}
		o.calls = append(o.calls, c)
	}
	return o
}

// judge compares every call's result with found (queue name → message ID
// → times found).
func (o *oracle) judge(found map[string]map[string]int) oracleTally {
	var t oracleTally
	t.lieKinds = make(map[string]int)
	lie := func(kind, format string, args ...any) {
		t.lies = append(t.lies, fmt.Sprintf(format, args...))
		t.lieKinds[kind]++
	}
	known := make(map[string]bool)
	for _, c := range o.calls {
		t.calls++
		t.messages += len(c.msgs)
		// Where each message was found, whatever the call returned.
		for i, m := range c.msgs {
			known[m.ID] = true
			for _, q := range []string{"Qs", "Qf", "Qr"} {
				n := found[q][m.ID]
				switch {
				case n == 0:
				case q != c.classes[i].home():
					lie("in a queue not of its class", "%s (%s) found %d× in %s", m.ID, c.classes[i], n, q)
				case n > 1:
					t.duplicates++
				}
			}
		}
		present := func(i int) bool { h := c.classes[i].home(); return h != "" && found[h][c.msgs[i].ID] > 0 }

		if c.err == nil {
			t.nilCalls++
			for i, m := range c.msgs {
				switch {
				case c.classes[i] == nowhere || c.classes[i] == reject:
					lie("nil for a nowhere/reject message", "Publish returned nil for a call holding %s (%s)", m.ID, c.classes[i])
				case !present(i):
					lie("nil but absent", "Publish returned nil but %s (%s) is not in %s", m.ID, c.classes[i], c.classes[i].home())
				}
			}
			continue
		}
		isNack, isUnroutable := errors.Is(c.err, broker.ErrNacked), errors.Is(c.err, broker.ErrUnroutable)
		if isNack {
			t.nacked++
		}
		if isUnroutable {
			t.unroutable++
		}
		var me *broker.MessageError
		if !errors.As(c.err, &me) {
			if isNack || isUnroutable {
				// Which message failed is unknown: judged by location only.
				t.unattributed++
				t.exampleUnattributed = c.err
				continue
			}
			t.other++
			for i := range c.msgs {
				if present(i) {
					t.deliveredDespiteErr++
				}
			}
			continue
		}
		if me.Index < 0 || me.Index >= len(c.msgs) || me.ID != c.msgs[me.Index].ID {
			lie("MessageError names no message of its call", "MessageError{Index %d, ID %q} names no message of its call (%d messages, first %s): %v",
				me.Index, me.ID, len(c.msgs), c.msgs[0].ID, c.err)
			continue
		}
		i, cl := me.Index, c.classes[me.Index]
		switch {
		case errors.Is(me.Err, broker.ErrNacked):
			if cl != reject {
				lie("nacked, not a reject message", "%s (%s) reported nacked: %v", me.ID, cl, c.err)
			}
		case errors.Is(me.Err, broker.ErrUnroutable):
			if cl != nowhere && cl != flap {
				lie("unroutable, not a nowhere/flap message", "%s (%s) reported unroutable: %v", me.ID, cl, c.err)
			}
			if cl == flap && present(i) {
				t.returnedYetStored++
			}
		default:
			t.other++
			for j := range c.msgs {
				if present(j) {
					t.deliveredDespiteErr++
				}
			}
		}
	}
	for q, ids := range found {
		for id, n := range ids {
			if !known[id] {
				lie("never published", "%s holds %d× %q, which was never published", q, n, id)
			}
		}
	}
	return t
}

// TestPublishOracle: every Publish result is the server's own answer.
// 16 callers publish ≥ 50,000 messages of four key classes — stored,
// returned (no binding), nacked (a full reject-publish queue), and
// flapping between stored and returned — through a proxy that cuts the
// connections about 10 times. Afterwards the queues are drained and every
// call's result judged against what they held: a nil result means every
// message of the call is in its queue; a *broker.MessageError with
// ErrNacked names a message the server nacks, with ErrUnroutable one it
// returns. Anything else is a lie.
func TestPublishOracle(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t, ignoreToxiproxy...)
	total, cuts := 50000, 10
	if testing.Short() {
		total, cuts = 5000, 3
	}
	const callers = 16
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	o := newOracle(rand.New(rand.NewPCG(seed, 0)), total)

	// Topology, declared directly on the node.
	exchange := brokertest.RandomName("oracle")
	queues := map[string]string{"Qs": exchange + ".stored", "Qf": exchange + ".flap", "Qr": exchange + ".reject"}
	admin, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close() })
	ch, err := admin.Channel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, q := range queues {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		_ = ch.ExchangeDelete(exchange, false, false)
	})
	if err := ch.ExchangeDeclare(exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct {
		name, key string
		durable   bool
		args      amqp.Table
	}{
		{queues["Qs"], "stored.#", true, nil},
		{queues["Qf"], "flap.#", true, nil},
		{queues["Qr"], "reject.#", false, amqp.Table{"x-max-length": int32(0), "x-overflow": "reject-publish"}},
	} {
		if _, err := ch.QueueDeclare(q.name, q.durable, false, false, false, q.args); err != nil {
			t.Fatal(err)
		}
		if err := ch.QueueBind(q.name, q.key, exchange, false, nil); err != nil {
			t.Fatal(err)
		}
	}

	px := newFaultProxy(t, url)
	b := open(t, px.url, rabbit.WithBackoff(broker.Backoff{Initial: 20 * time.Millisecond, Max: 300 * time.Millisecond}))
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	var reconnects atomic.Int64
	states := b.WatchState(watchCtx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for c := range states {
			if c.To == broker.StateReconnecting {
				reconnects.Add(1)
			}
		}
	}()

	// Flap: the flap.# binding comes and goes every 20–50 ms.
	running := make(chan struct{})
	var bg sync.WaitGroup
	bg.Go(func() {
		fch, err := admin.Channel()
		if err != nil {
			t.Errorf("flap channel: %v", err)
			return
		}
		defer fch.Close()
		for bound := true; ; bound = !bound {
			select {
			case <-running:
				return
			case <-time.After(time.Duration(20+rand.IntN(31)) * time.Millisecond):
			}
			if bound {
				err = fch.QueueUnbind(queues["Qf"], "flap.#", exchange, nil)
			} else {
				err = fch.QueueBind(queues["Qf"], "flap.#", exchange, false, nil)
			}
			if err != nil {
				t.Errorf("flap the binding: %v", err)
				return
			}
		}
	})

	// Cut: spread over the run by the number of calls returned.
	var returned, cutsDone atomic.Int64
	bg.Go(func() {
		for i := range cuts {
			for returned.Load() < int64((i+1)*len(o.calls)/(cuts+1)) {
				select {
				case <-running:
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
			if err := px.cut(50 * time.Millisecond); err != nil {
				t.Errorf("cut %d: %v", i+1, err)
				return
			}
			cutsDone.Add(1)
		}
	})

	begin := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for {
				k := int(next.Add(1) - 1)
				if k >= len(o.calls) {
					return
				}
				c := &o.calls[k]
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				c.err = b.Publish(ctx, exchange, c.msgs...)
				cancel()
				returned.Add(1)
			}
		})
	}
	wg.Wait()
	publishTime := time.Since(begin)
	close(running)
	bg.Wait()
	// Nothing of the adapter's may still be on its way to the queues.
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if err := b.Close(cctx); err != nil {
		t.Logf("close: %v", err)
	}
	cancel()
	stopWatch()
	<-watched

	found := make(map[string]map[string]int)
	for name, q := range queues {
		found[name] = drainQueue(t, admin, q)
	}
	v := o.judge(found)
	t.Logf("oracle: %d calls, %d messages in %v; %d nil, %d nacked, %d unroutable, %d other errors, %d lies, "+
		"%d duplicates, %d delivered despite error, %d returned yet stored, %d unattributed; %d cuts, %d reconnects",
		v.calls, v.messages, publishTime.Round(time.Millisecond), v.nilCalls, v.nacked, v.unroutable, v.other,
		len(v.lies), v.duplicates, v.deliveredDespiteErr, v.returnedYetStored, v.unattributed, cutsDone.Load(), reconnects.Load())
	if len(v.lies) > 0 {
		t.Logf("lies by kind: %v", v.lieKinds)
	}
	for i, l := range v.lies {
		if i == 20 {
			t.Errorf("… and %d more lies", len(v.lies)-20)
			break
		}
		t.Errorf("lie: %s", l)
	}
	if v.unattributed > 0 {
		t.Errorf("%d calls failed with ErrNacked or ErrUnroutable without a *broker.MessageError naming the message "+
			"(errors.As failed), e.g. %v", v.unattributed, v.exampleUnattributed)
	}
	if v.nilCalls == 0 || v.nacked == 0 || v.unroutable == 0 {
		t.Errorf("the mix did not exercise every outcome: %d nil, %d nacked, %d unroutable calls", v.nilCalls, v.nacked, v.unroutable)
	}
	if cutsDone.Load() < int64(cuts) {
		t.Errorf("%d of %d cuts happened", cutsDone.Load(), cuts)
	}
	if reconnects.Load() == 0 {
		t.Errorf("no reconnect observed; the cuts did not bite")
	}
}

// drainQueue takes every message off queue (on its own channel of conn)
// until the server counts none left, and returns the IDs with counts.
func drainQueue(t *testing.T, conn *amqp.Connection, queue string) map[string]int {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	count := func() int {
		q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
		if err != nil {
			t.Fatalf("inspect %s: %v", queue, err)
		}
		return q.Messages
	}
	want := count()
	deliveries, err := ch.Consume(queue, "drain", true, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume %s: %v", queue, err)
	}
	ids := make(map[string]int)
	take := func(d amqp.Delivery) { ids[strings.Clone(d.MessageId)]++ }
	for got := 0; ; {
		for ; got < want; got++ {
			select {
			case d := <-deliveries:
				take(d)
			case <-time.After(30 * time.Second):
				t.Fatalf("drain %s: %d of %d messages", queue, got, want)
			}
		}
		n := count()
		if n == 0 {
			break
		}
		want += n
	}
	// Deliveries the server pushed before the last count said 0.
	for {
		select {
		case d := <-deliveries:
			take(d)
		case <-time.After(100 * time.Millisecond):
			if err := ch.Cancel("drain", false); err != nil {
				t.Fatalf("cancel drain of %s: %v", queue, err)
			}
			for d := range deliveries {
				take(d)
			}
			return ids
		}
	}
}
