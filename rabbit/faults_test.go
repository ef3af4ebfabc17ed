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

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/internal/rabbitnode"
	"github.com/isobroker/broker/internal/testenv"
	"github.com/isobroker/broker/rabbit"
)

// ignoreToxiproxy leaves toxiproxy's own link goroutines, which wind down
// after the proxy stops, out of the leak checks.
var ignoreToxiproxy = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2.(*ToxicLink).read"),
	goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2.(*ToxicLink).write"),
	goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2/toxics.(*ToxicStub).Run"),
}

// faultProxy is an embedded toxiproxy between the client and a node.
type faultProxy struct {
	p   *toxiproxy.Proxy
	url string
}

func newFaultProxy(t testing.TB, nodeURL string) *faultProxy {
	t.Helper()
	upstream := strings.TrimSuffix(strings.TrimPrefix(nodeURL, "amqp://guest:guest@"), "/")
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "rabbit", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("start proxy: %v", err)
	}
	t.Cleanup(p.Stop)
	return &faultProxy{p: p, url: "amqp://guest:guest@" + p.Listen + "/"}
}

// cut drops every connection through the proxy; down keeps new ones out
// for that long. It reports a failed restart instead of failing the test
// itself, so that it can run on any goroutine.
func (f *faultProxy) cut(down time.Duration) error {
	f.p.Stop()
	time.Sleep(down)
	if err := f.p.Start(); err != nil {
		return fmt.Errorf("restart proxy: %w", err)
	}
	return nil
}

// stall makes the proxy swallow all data in both directions, keeping the
// connections open.
func (f *faultProxy) stall(t testing.TB) {
	t.Helper()
	for _, dir := range []string{"upstream", "downstream"} {
		js := fmt.Sprintf(`{"name":"stall-%s","type":"timeout","stream":"%s","toxicity":1,"attributes":{"timeout":0}}`, dir, dir)
		if _, err := f.p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
			t.Fatalf("add toxic: %v", err)
		}
	}
}

// latency delays all data through the proxy by d in each direction.
func (f *faultProxy) latency(t testing.TB, d time.Duration) {
	t.Helper()
	for _, dir := range []string{"upstream", "downstream"} {
		js := fmt.Sprintf(`{"name":"latency-%s","type":"latency","stream":"%s","toxicity":1,"attributes":{"latency":%d}}`, dir, dir, d.Milliseconds())
		if _, err := f.p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
			t.Fatalf("add toxic: %v", err)
		}
	}
}

// TestCutConnections: the proxy drops the connections 20 times while 10,000
// messages are published with confirms and consumed. Every message Publish
// confirmed is consumed at least once; duplicates are counted.
func TestCutConnections(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t, ignoreToxiproxy...)
	total, cuts := 10000, 20
	if testing.Short() {
		total, cuts = 2000, 5
	}
	px := newFaultProxy(t, url)
	logs := &logBuffer{}
	b := open(t, px.url, rabbit.WithLogger(logs.logger()), rabbit.WithBackoff(broker.Backoff{Initial: 20 * time.Millisecond, Max: 500 * time.Millisecond}))
	topic := brokertest.RandomName("cut")
	// abort ends publishing and consuming early when the proxy cannot be
	// restarted: nothing could be confirmed any more.
	ctx, abort := context.WithCancel(ctxFor(t, 3*time.Minute))
	defer abort()

	var mu sync.Mutex
	seen := make(map[string]int, total)
	progress := make(chan struct{}, 1)
	sub, err := b.Subscribe(ctx, topic, func(_ context.Context, d *broker.Delivery) error {
		mu.Lock()
		seen[d.ID]++
		mu.Unlock()
		select {
		case progress <- struct{}{}:
		default:
		}
		return nil
	}, broker.Group("g"), broker.Concurrency(4), broker.Prefetch(200))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())

	states := b.WatchState(ctx)
	var reconnects atomic.Int64
	go func() {
		for c := range states {
			if c.To == broker.StateReconnecting {
				reconnects.Add(1)
			}
		}
	}()

	const publishers = 8
	var confirmed sync.Map
	var nConfirmed, publishErrors atomic.Int64
	var cutFailed atomic.Bool
	var wg sync.WaitGroup
	next := atomic.Int64{}
	begin := time.Now()
	for range publishers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(total) {
					return
				}
				m := &broker.Message{ID: fmt.Sprintf("m-%05d", i), Key: fmt.Sprint(i % 7), Body: []byte("payload")}
				for {
					pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
					err := b.Publish(pctx, topic, m)
					cancel()
					if err == nil {
						confirmed.Store(m.ID, true)
						nConfirmed.Add(1)
						break
					}
					publishErrors.Add(1)
					if cutFailed.Load() {
						return // aborted; the cutting goroutine reported why
					}
					if !broker.IsRetryable(err) || ctx.Err() != nil {
						t.Errorf("publish %s: %v", m.ID, err)
						return
					}
				}
			}
		})
	}
	cutDone := make(chan struct{})
	go func() {
		defer close(cutDone)
		for i := range cuts {
			// Spread the cuts over the publishing.
			for nConfirmed.Load() < int64((i+1)*total/(cuts+2)) && ctx.Err() == nil {
				time.Sleep(5 * time.Millisecond)
			}
			// Not t.Fatal: this is not the test's goroutine.
			if err := px.cut(time.Duration(rand.IntN(50)) * time.Millisecond); err != nil {
				t.Errorf("cut %d: %v", i+1, err)
				cutFailed.Store(true)
				abort()
				return
			}
		}
	}()
	wg.Wait()
	<-cutDone
	if cutFailed.Load() {
		t.FailNow()
	}
	publishTime := time.Since(begin)

	// Wait until every confirmed message was consumed.
	missing := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		confirmed.Range(func(k, _ any) bool {
			if seen[k.(string)] == 0 {
				out = append(out, k.(string))
			}
			return true
		})
		return out
	}
	deadline := time.After(60 * time.Second)
	for len(missing()) > 0 {
		select {
		case <-progress:
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			m := missing()
			t.Fatalf("%d confirmed messages never consumed, e.g. %v", len(m), m[:min(10, len(m))])
		}
	}
	mu.Lock()
	distinct, dups, extra := tallyDeliveries(seen)
	mu.Unlock()
	if int(nConfirmed.Load()) != total {
		t.Errorf("confirmed %d of %d", nConfirmed.Load(), total)
	}
	t.Logf("%d messages confirmed in %v across %d connection cuts (%d state changes to reconnecting, %d publish errors retried by the caller)",
		total, publishTime.Round(time.Millisecond), cuts, reconnects.Load(), publishErrors.Load())
	t.Logf("consumed %d distinct, lost 0; %d messages delivered more than once (%d extra deliveries)", distinct, dups, extra)
	if reconnects.Load() == 0 {
		t.Errorf("no reconnect observed; the cuts did not bite")
	}
	if !strings.Contains(logs.String(), "reconnect") {
		t.Errorf("no reconnect logged")
	}
}

// TestStalledProxy: the proxy swallows everything while keeping the TCP
// connection open. Publish returns by its deadline, and so does Close.
func TestStalledProxy(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t, ignoreToxiproxy...)
	px := newFaultProxy(t, url)
	ctx := ctxFor(t, 60*time.Second)
	b, err := rabbit.OpenURL(ctx, px.url, rabbit.WithLogger(testLogger()), rabbit.WithName("stalled"))
	if err != nil {
		t.Fatal(err)
	}
	topic := brokertest.RandomName("stall")
	got := make(chan struct{}, 10)
	sub, err := b.Subscribe(ctx, topic, func(context.Context, *broker.Delivery) error { got <- struct{}{}; return nil }, broker.Group("g"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, topic, &broker.Message{ID: "before"}); err != nil {
		t.Fatal(err)
	}
	<-got
	px.stall(t)

	check := func(what string, limit time.Duration, f func(ctx context.Context) error) error {
		t.Helper()
		c, cancel := context.WithTimeout(context.Background(), limit)
		defer cancel()
		begin := time.Now()
		err := f(c)
		took := time.Since(begin)
		t.Logf("%s with a %v deadline: %v after %v", what, limit, err, took.Round(time.Millisecond))
		if took > limit+time.Second {
			t.Errorf("%s took %v with a %v deadline", what, took, limit)
		}
		return err
	}
	for i := range 3 {
		err := check("Publish", 300*time.Millisecond, func(c context.Context) error {
			return b.Publish(c, topic, &broker.Message{ID: fmt.Sprint("stalled-", i), Body: make([]byte, 64<<10)})
		})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Publish on a stalled connection = %v, want DeadlineExceeded", err)
		}
	}
	err = check("Subscribe", 300*time.Millisecond, func(c context.Context) error {
		_, err := b.Subscribe(c, brokertest.RandomName("other"), func(context.Context, *broker.Delivery) error { return nil }, broker.Group("h"))
		return err
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Subscribe on a stalled connection = %v, want DeadlineExceeded", err)
	}
	// The subscription's channel close cannot complete: Close returns by
	// its deadline.
	err = check("Subscription.Close", 300*time.Millisecond, sub.Close)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Subscription.Close = %v", err)
	}
	err = check("Close", time.Second, b.Close)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v", err)
	}
	if b.State() != broker.StateClosed {
		t.Errorf("state after Close = %v", b.State())
	}
}

// TestStalledSubscribe: Subscribe on a stalled connection returns by its
// deadline.
func TestStalledSubscribe(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t, ignoreToxiproxy...)
	px := newFaultProxy(t, url)
	b := open(t, px.url, rabbit.WithConfig(func(c *rabbit.Config) { c.SingleConnection = true }))
	px.stall(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	begin := time.Now()
	_, err := b.Subscribe(ctx, "t", func(context.Context, *broker.Delivery) error { return nil })
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(begin) > 2*time.Second {
		t.Errorf("Subscribe on a stalled connection = %v after %v", err, time.Since(begin))
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer ccancel()
	begin = time.Now()
	_ = b.Close(cctx)
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("Close took %v", d)
	}

	// Open against a proxy that is stalled from the start (the AMQP
	// handshake never completes) returns by its deadline.
	octx, ocancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer ocancel()
	begin = time.Now()
	_, err = rabbit.OpenURL(octx, px.url, rabbit.WithLogger(testLogger()))
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(begin) > 2*time.Second {
		t.Errorf("Open through a stalled proxy = %v after %v", err, time.Since(begin))
	}
}

// TestFailover: the broker is given two independent nodes; when the first
// is killed, publishing and consuming continue on the second. Both
// connections (publish and consume) fail over in their first recovery
// round: one refused attempt on the dead node, then the second node,
// without backing off.
func TestFailover(t *testing.T) {
	testenv.NeedsServer(t, rabbitnode.Needs) // here: StartT runs in goroutines, where a skip cannot end the test
	leakCheck(t)
	var n1, n2 *rabbitnode.Node
	var wg sync.WaitGroup
	wg.Go(func() { n1 = rabbitnode.StartT(t, rabbitnode.Options{Name: "failover1"}) })
	wg.Go(func() { n2 = rabbitnode.StartT(t, rabbitnode.Options{Name: "failover2"}) })
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	ctx := ctxFor(t, 2*time.Minute)
	logs := &logRecords{}
	cfg := rabbit.Config{
		URLs:    []string{n1.URL(), n2.URL()},
		Name:    "failover",
		Logger:  logs.logger(),
		Backoff: broker.Backoff{Initial: 50 * time.Millisecond, Max: time.Second},
	}
	b, err := rabbit.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(c)
	}()
	topic := brokertest.RandomName("fo")
	got := make(chan string, 1000)
	if _, err := b.Subscribe(ctx, topic, func(_ context.Context, d *broker.Delivery) error { got <- d.ID; return nil },
		broker.Group("g")); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, topic, &broker.Message{ID: "on-node-1"}); err != nil {
		t.Fatal(err)
	}
	if id := <-got; id != "on-node-1" {
		t.Fatalf("got %s", id)
	}
	// Both connections are on node 1 (the first host) before the kill.
	for _, r := range logs.since(0, "rabbit: connection open") {
		if !onNode(r, n1) {
			t.Fatalf("connection opened on %s before the kill, want node 1 (%s)", r.str("host"), n1.Addr())
		}
	}

	mark := logs.len()
	if err := n1.Kill(); err != nil {
		t.Fatal(err)
	}
	// Kill returns once node 1 is gone; time from there, not from before
	// the kill, which itself may take long on a loaded machine.
	killed := time.Now()
	// Publish until it succeeds on node 2. ErrUnroutable is expected while
	// the subscription has not yet declared its queue there.
	var first time.Duration
	for {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := b.Publish(pctx, topic, &broker.Message{ID: "on-node-2"})
		cancel()
		if err == nil {
			first = time.Since(killed)
			break
		}
		if !errors.Is(err, broker.ErrUnroutable) {
			t.Fatalf("publish after failover: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case id := <-got:
		if id != "on-node-2" {
			t.Errorf("got %s", id)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("nothing consumed on node 2")
	}
	t.Logf("first confirmed publish on node 2 %v after node 1 was gone", first.Round(time.Millisecond))

	// Each connection reconnected exactly once, to node 2, in its first
	// round: the only failed attempt is the one on node 1 (refused at once
	// by the dead node's closed port), so node 2 is attempt 2 and no
	// backoff wait happened. A supervisor that retried node 1, skipped the
	// second host or backed off before trying it fails here.
	for _, role := range []string{"publish", "consume"} {
		var failed, connected []logRecord
		for _, r := range logs.since(mark, "") {
			if r.str("connection") != role {
				continue
			}
			switch r.msg {
			case "rabbit: reconnect attempt failed":
				failed = append(failed, r)
				if !onNode(r, n1) {
					t.Errorf("%s: reconnect attempt failed on %s, want only node 1 (%s) to fail: %v", role, r.str("host"), n1.Addr(), r)
				}
			case "rabbit: connected":
				connected = append(connected, r)
			case "rabbit: backing off before next reconnect round":
				t.Errorf("%s: backed off although node 2 was up: %v", role, r)
			}
		}
		if len(failed) > 1 {
			t.Errorf("%s: %d failed reconnect attempts, want at most 1 (node 1, once): %v", role, len(failed), failed)
		}
		if len(connected) != 1 {
			t.Errorf("%s: reconnected %d times after the kill, want 1: %v", role, len(connected), connected)
			continue
		}
		c := connected[0]
		t.Logf("%s connection: %d failed attempt(s), then connected to %s at attempt %s after %s down",
			role, len(failed), c.str("host"), c.str("attempt"), c.str("downtime"))
		if !onNode(c, n2) {
			t.Errorf("%s: reconnected to %s, want node 2 (%s)", role, c.str("host"), n2.Addr())
		}
		if a, want := c.str("attempt"), fmt.Sprint(len(failed)+1); a != want {
			t.Errorf("%s: connected at attempt %q after %d failed attempts, want attempt %s", role, a, len(failed), want)
		}
	}

	// Time bound. Correct failover needs no backoff wait at all (checked
	// above); allow the supervisor's first backoff step (Backoff.Initial)
	// and one full step (Backoff.Max) in case a consumer setup is retried
	// once, plus a generous 5 s for the refused dial, the dial and AMQP
	// handshake to node 2, the publishing channels, and the subscription's
	// redeclaration on a slow shared machine: about 6 s here. Waits the
	// configuration does not call for exceed it — a fixed multi-second
	// retry delay, the default 10 s Backoff.Max instead of the configured
	// 1 s, or a dial to the dead node left to run into DialTimeout (10 s).
	bound := cfg.Backoff.Initial + cfg.Backoff.Max + 5*time.Second
	if first > bound {
		t.Errorf("failover took %v, want ≤ %v (Backoff.Initial %v + Backoff.Max %v + 5 s slack)",
			first, bound, cfg.Backoff.Initial, cfg.Backoff.Max)
	}
	if t.Failed() {
		for _, r := range logs.since(mark, "") {
			t.Logf("log after the kill: %v", r)
		}
	}
	if b.State() != broker.StateConnected {
		t.Errorf("state = %v", b.State())
	}
	for i := range 50 {
		if err := b.Publish(ctx, topic, &broker.Message{ID: fmt.Sprint("more-", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for range 50 {
		select {
		case <-got:
		case <-time.After(20 * time.Second):
			t.Fatal("consumption stalled on node 2")
		}
	}
}

// onNode reports whether a log record's host attribute (a redacted URL,
// amqp://guest:***@127.0.0.1:port/) names node n.
func onNode(r logRecord, n *rabbitnode.Node) bool {
	return strings.Contains(r.str("host"), "@"+n.Addr()+"/")
}

// TestBlocked: a memory alarm on node A blocks the broker connected to A:
// Publish returns by its deadline with ErrBlocked, Close is bounded, and a
// broker on node B is unaffected throughout. Once the alarm clears, A
// works again. The same node also checks the server's message size limit.
func TestBlocked(t *testing.T) {
	other := shared.URL(t)
	leakCheck(t)
	na := rabbitnode.StartT(t, rabbitnode.Options{Name: "blocked", Config: "max_message_size = 65536"})
	ctx := ctxFor(t, 2*time.Minute)

	a := open(t, na.URL(), rabbit.WithName("blocked-a"))
	bb := open(t, other, rabbit.WithName("unaffected-b"))
	topicA, topicB := brokertest.RandomName("a"), brokertest.RandomName("b")
	gotA, gotB := make(chan string, 100), make(chan string, 100)
	if _, err := a.Subscribe(ctx, topicA, func(_ context.Context, d *broker.Delivery) error { gotA <- d.ID; return nil }, broker.Group("g")); err != nil {
		t.Fatal(err)
	}
	if _, err := bb.Subscribe(ctx, topicB, func(_ context.Context, d *broker.Delivery) error { gotB <- d.ID; return nil }, broker.Group("g")); err != nil {
		t.Fatal(err)
	}
	if err := a.Publish(ctx, topicA, &broker.Message{ID: "a-before"}); err != nil {
		t.Fatal(err)
	}
	<-gotA

	// The server's own size limit (64 KiB here) below the client's.
	err := a.Publish(ctx, topicA, &broker.Message{ID: "huge", Body: make([]byte, 100<<10)})
	t.Logf("publish over the server's max_message_size: %v", err)
	if !errors.Is(err, broker.ErrMessageTooLarge) || broker.IsRetryable(err) {
		t.Errorf("publish over the server limit = %v, want fatal ErrMessageTooLarge", err)
	}
	if err := a.Publish(ctx, topicA, &broker.Message{ID: "a-small"}); err != nil {
		t.Fatalf("publish after the channel error: %v", err)
	}
	<-gotA

	if _, err := na.Ctl(ctx, "set_vm_memory_high_watermark", "0.0000001"); err != nil {
		t.Fatal(err)
	}
	cleared := false
	defer func() {
		if !cleared {
			_, _ = na.Ctl(context.Background(), "set_vm_memory_high_watermark", "0.4")
		}
	}()
	// The first publish after the alarm makes the server block the
	// connection; every publish returns by its deadline with ErrBlocked
	// (the very first may only see its deadline).
	var blockedErr error
	for i := range 5 {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		begin := time.Now()
		err := a.Publish(pctx, topicA, &broker.Message{ID: fmt.Sprint("a-blocked-", i)})
		took := time.Since(begin)
		cancel()
		if took > 1500*time.Millisecond {
			t.Errorf("blocked publish took %v with a 500ms deadline", took)
		}
		if err == nil {
			continue // confirmed before the alarm bit
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("blocked publish = %v, want DeadlineExceeded", err)
		}
		if errors.Is(err, broker.ErrBlocked) {
			blockedErr = err
			break
		}
	}
	if blockedErr == nil {
		t.Fatalf("no publish failed with ErrBlocked while the memory alarm was on")
	}
	t.Logf("blocked publish: %v", blockedErr)
	if !broker.IsRetryable(blockedErr) || !strings.Contains(blockedErr.Error(), "blocked") {
		t.Errorf("blocked error not retryable or unclear: %v", blockedErr)
	}

	// B, on another node, is unaffected.
	for i := range 20 {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := bb.Publish(pctx, topicB, &broker.Message{ID: fmt.Sprint("b-", i)})
		cancel()
		if err != nil {
			t.Fatalf("publish on the other node during the alarm: %v", err)
		}
	}
	for range 20 {
		select {
		case <-gotB:
		case <-time.After(10 * time.Second):
			t.Fatal("consumption on the other node stalled during the alarm")
		}
	}

	// A second broker on the blocked node closes by its deadline.
	c := open(t, na.URL(), rabbit.WithName("blocked-c"))
	pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_ = c.Publish(pctx, topicA, &broker.Message{ID: "c"})
	cancel()
	cctx, ccancel := context.WithTimeout(ctx, time.Second)
	begin := time.Now()
	err = c.Close(cctx)
	ccancel()
	t.Logf("Close of a blocked broker: %v after %v", err, time.Since(begin).Round(time.Millisecond))
	if d := time.Since(begin); d > 2500*time.Millisecond {
		t.Errorf("Close of a blocked broker took %v with a 1s deadline", d)
	}

	// Clearing the alarm unblocks A.
	if _, err := na.Ctl(ctx, "set_vm_memory_high_watermark", "0.4"); err != nil {
		t.Fatal(err)
	}
	cleared = true
	pctx, cancel = context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := a.Publish(pctx, topicA, &broker.Message{ID: "a-after"}); err != nil {
		t.Fatalf("publish after the alarm cleared: %v", err)
	}
	deadline := time.After(20 * time.Second)
	for {
		select {
		case id := <-gotA:
			if id == "a-after" {
				return
			}
		case <-deadline:
			t.Fatal("a-after not consumed")
		}
	}
}

// TestNodeRestart: the node restarts under a live broker. A Publish issued
// while it is down waits for recovery and succeeds; persistent messages in
// a durable group queue survive the restart; the state goes through
// reconnecting back to connected.
func TestNodeRestart(t *testing.T) {
	leakCheck(t)
	n := rabbitnode.StartT(t, rabbitnode.Options{Name: "restart"})
	ctx := ctxFor(t, 2*time.Minute)
	b := open(t, n.URL(), rabbit.WithBackoff(broker.Backoff{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond}))
	states := b.WatchState(ctx)
	topic := brokertest.RandomName("restart")
	got := make(chan *broker.Delivery, 10)
	h := func(_ context.Context, d *broker.Delivery) error { got <- d; return nil }
	sub, err := b.Subscribe(ctx, topic, h, broker.Group("g"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, topic, &broker.Message{ID: "before"}); err != nil {
		t.Fatal(err)
	}
	<-got
	if err := sub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// The group's queue outlives the subscription and keeps messages.
	if err := b.Publish(ctx, topic, &broker.Message{ID: "kept"}); err != nil {
		t.Fatal(err)
	}

	restarted := make(chan error, 1)
	go func() { restarted <- n.Restart(ctx) }()
	// Wait until the broker noticed, then publish while the node is down.
	waitState(t, states, broker.StateReconnecting)
	if err := b.Publish(ctx, topic, &broker.Message{ID: "during"}); err != nil {
		t.Fatalf("publish across the restart: %v", err)
	}
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	waitState(t, states, broker.StateConnected)

	if _, err := b.Subscribe(ctx, topic, h, broker.Group("g")); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"kept": true, "during": true}
	for len(want) > 0 {
		select {
		case d := <-got:
			delete(want, d.ID)
		case <-time.After(20 * time.Second):
			t.Fatalf("not delivered after the restart: %v", want)
		}
	}
}

func waitState(t *testing.T, ch <-chan broker.StateChange, want broker.State) {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case c, ok := <-ch:
			if !ok {
				t.Fatalf("watch ended before state %v", want)
			}
			if c.To == want {
				return
			}
		case <-timeout:
			t.Fatalf("state %v not reached", want)
		}
	}
}

// tallyDeliveries reads a count of deliveries per message ID: how many
// messages arrived, how many of them more than once, and how many
// deliveries beyond the first there were in all.
func tallyDeliveries(counts map[string]int) (distinct, dups, extra int) {
	for _, n := range counts {
		if n > 1 {
			dups++
			extra += n - 1
		}
	}
	return len(counts), dups, extra
}
