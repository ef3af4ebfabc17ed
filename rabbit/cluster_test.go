package rabbit_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/internal/rabbitnode"
	"github.com/isobroker/broker/rabbit"
	"go.uber.org/goleak"
)

// TestCluster runs the production scenarios on a three-node RabbitMQ
// cluster on loopback, each instance connected through the cluster's
// multi-host URL: a poison message in a quorum group, a stream group
// replaying after its consumer's restart, and publishers with a quorum
// group riding out kill -9 of the queue leader's node and then of the node
// the client is connected to. Each logs its tally.
func TestCluster(t *testing.T) {
	c := rabbitnode.StartClusterT(t, 3)
	// A member restarted by a scenario runs under goroutines of the
	// cluster's (os/exec's and rabbitnode's), which outlive the brokers.
	leakCheck(t, goleak.IgnoreAnyFunction("github.com/isobroker/broker/internal/rabbitnode.(*proc).wait"),
		goleak.IgnoreAnyFunction("os/exec.(*Cmd).Start.func2"))
	t.Run("PoisonDeadLettered", func(t *testing.T) { testClusterPoison(t, c) })
	t.Run("StreamReplaysAfterRestart", func(t *testing.T) { testClusterStreamReplay(t, c) })
	t.Run("Failover", func(t *testing.T) { testClusterFailover(t, c) })
}

// testClusterPoison: a message that always fails is delivered exactly
// MaxDeliveries times and then dead-lettered, while 50 others are handled,
// some of them between its first and its last failure.
func testClusterPoison(t *testing.T, c *rabbitnode.Cluster) {
	b := open(t, c.URL())
	topic := brokertest.RandomName("cpoison")
	const limit = 4
	dead := newInbox()
	subscribeT(t, b, broker.DeadLetterTopic(topic), dead.handle, broker.Group(broker.DeadLetterGroup))
	var mu sync.Mutex
	var failedAt, goodAt []time.Time
	good := newInbox()
	subscribeT(t, b, topic, func(ctx context.Context, d *broker.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		if d.ID == "poison" {
			failedAt = append(failedAt, time.Now())
			return errors.New("poison")
		}
		goodAt = append(goodAt, time.Now())
		return good.handle(ctx, d)
	}, broker.Group("g"), broker.MaxDeliveries(limit))
	ids := []string{"poison"}
	for i := range 50 {
		ids = append(ids, fmt.Sprint("good-", i))
	}
	publishT(t, b, topic, ids...)
	good.wait(t, 50)
	d := dead.wait(t, 1)[0]
	mu.Lock()
	defer mu.Unlock()
	between := 0
	if len(failedAt) > 0 {
		for _, at := range goodAt {
			if at.After(failedAt[0]) && at.Before(failedAt[len(failedAt)-1]) {
				between++
			}
		}
	}
	t.Logf("tally: poison delivered %d times, dead-lettered with %s=%s; 50 good handled, %d of them between its first and last failure",
		len(failedAt), broker.HeaderDeliveryCount, d.Headers[broker.HeaderDeliveryCount], between)
	if len(failedAt) != limit || d.ID != "poison" || d.Headers[broker.HeaderDeliveryCount] != fmt.Sprint(limit) {
		t.Errorf("poison delivered %d times, dead-lettered %q with count %q; want %d", len(failedAt), d.ID, d.Headers[broker.HeaderDeliveryCount], limit)
	}
	if between == 0 {
		t.Errorf("no other message was handled while the poison message was being retried")
	}
	if n := good.count(); n != 50 {
		t.Errorf("good messages handled %d times, want 50", n)
	}
}

// testClusterStreamReplay: a stream group's consumer reads 100 messages,
// is closed with its instance, and a new instance connected through
// another node replays all of them, in order, from earliest.
func testClusterStreamReplay(t *testing.T, c *rabbitnode.Cluster) {
	topic := brokertest.RandomName("cstream")
	stream := broker.WithDriverOption(rabbit.Stream)
	first := open(t, c.URL())
	in := newInbox()
	sub := subscribeT(t, first, topic, in.handle, broker.Group("log"), stream)
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = fmt.Sprintf("m%03d", i)
	}
	publishT(t, first, topic, ids...)
	in.wait(t, len(ids))
	if err := sub.Close(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	restarted := open(t, c.Nodes()[2].URL())
	again := newInbox()
	subscribeT(t, restarted, topic, again.handle, broker.Group("log"), stream, broker.StartAt(broker.Earliest()))
	got := idsOf(again.wait(t, len(ids)))
	t.Logf("tally: %d published, %d read, restarted consumer on %s replayed %d from earliest", len(ids), in.count(), c.Nodes()[2].Name(), len(got))
	if !slices.Equal(got, ids) {
		t.Errorf("replay from earliest = %v…, want m000..m099 in order", got[:min(5, len(got))])
	}
}

// publishRecord is one Publish call of the failover scenario.
type publishRecord struct {
	id         string
	start, end time.Time
	err        error
}

// testClusterFailover: 4 publishers and a quorum group (Concurrency 4)
// run while the node leading the group's queue is killed with kill -9,
// restarted, and then the node the instance's publishing connection is on
// is killed. Every confirmed message must be consumed; the scenario
// measures, after each kill, the time to the first confirmed publish
// issued after it and to the first consumed message published after it.
func testClusterFailover(t *testing.T, c *rabbitnode.Cluster) {
	ctx := ctxFor(t, 5*time.Minute)
	topic := brokertest.RandomName("cfail")
	queue := topic + ".g"
	b := open(t, c.URL(), rabbit.WithName("failover"), rabbit.WithDialTimeout(5*time.Second),
		rabbit.WithBackoff(broker.Backoff{Initial: 50 * time.Millisecond, Max: time.Second}))

	var cmu sync.Mutex
	consumed := map[string]int{}
	consumedAt := map[string]time.Time{}
	subscribeT(t, b, topic, func(_ context.Context, d *broker.Delivery) error {
		cmu.Lock()
		consumed[d.ID]++
		if _, ok := consumedAt[d.ID]; !ok {
			consumedAt[d.ID] = time.Now()
		}
		cmu.Unlock()
		return nil
	}, broker.Group("g"), broker.Concurrency(4))

	var pmu sync.Mutex
	var records []publishRecord
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var seq atomic.Int64
	for p := range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("p%d-%d", p, seq.Add(1))
				r := publishRecord{id: id, start: time.Now()}
				pctx, cancel := context.WithTimeout(ctx, 60*time.Second)
				r.err = b.Publish(pctx, topic, &broker.Message{ID: id, Key: "k", Body: []byte(id)})
				cancel()
				r.end = time.Now()
				pmu.Lock()
				records = append(records, r)
				pmu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	// firstAfter waits for the first confirmed publish issued after at and
	// for the first consumed message among those; it returns both delays.
	firstAfter := func(at time.Time) (confirmed, handled time.Duration) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			pmu.Lock()
			var ok []publishRecord
			for _, r := range records {
				if r.err == nil && r.start.After(at) {
					ok = append(ok, r)
				}
			}
			pmu.Unlock()
			if len(ok) > 0 {
				sort.Slice(ok, func(i, j int) bool { return ok[i].end.Before(ok[j].end) })
				confirmed = ok[0].end.Sub(at)
				cmu.Lock()
				var earliest time.Time
				for _, r := range ok {
					if ct, seen := consumedAt[r.id]; seen && (earliest.IsZero() || ct.Before(earliest)) {
						earliest = ct
					}
				}
				cmu.Unlock()
				if !earliest.IsZero() {
					return confirmed, earliest.Sub(at)
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		pmu.Lock()
		var ok, bad int
		for _, r := range records {
			if r.start.After(at) {
				if r.err == nil {
					ok++
				} else {
					bad++
				}
			}
		}
		pmu.Unlock()
		t.Fatalf("no publish issued after %v was confirmed and consumed within 2 minutes (%d confirmed, %d failed since)", at.Format(time.StampMilli), ok, bad)
		return 0, 0
	}

	// Warm up: messages flow.
	firstAfter(time.Now())

	// Kill 1: the node leading the group's quorum queue.
	leader, err := c.QueueLeader(ctx, "/", queue)
	if err != nil {
		t.Fatal(err)
	}
	conns, err := c.ConnectionNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pubName, conName := "isobroker failover (publish)", "isobroker failover (consume)"
	t.Logf("before kill 1: leader %s, publisher on %s, consumer on %s", leader.Name(), nodeName(conns[pubName]), nodeName(conns[conName]))
	killed := time.Now()
	if err := leader.Kill(); err != nil {
		t.Fatal(err)
	}
	newLeader, err := c.WaitQueueLeader(ctx, "/", queue, leader)
	if err != nil {
		t.Fatal(err)
	}
	conf1, cons1 := firstAfter(killed)
	t.Logf("kill 1 (leader %s): first confirm after %v, first consumed after %v; new leader %s",
		leader.Name(), conf1.Round(time.Millisecond), cons1.Round(time.Millisecond), newLeader.Name())
	// Bring it back before the next kill, so that a majority stays.
	if err := c.Up(ctx, leader); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRunning(ctx); err != nil {
		t.Fatal(err)
	}

	// Kill 2: the node the instance publishes through.
	conns, err = c.ConnectionNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	target := conns[pubName]
	if target == nil {
		t.Fatalf("publishing connection not listed: %v", conns)
	}
	leader, err = c.QueueLeader(ctx, "/", queue)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("before kill 2: leader %s, publisher on %s, consumer on %s", leader.Name(), target.Name(), nodeName(conns[conName]))
	killed = time.Now()
	if err := target.Kill(); err != nil {
		t.Fatal(err)
	}
	conf2, cons2 := firstAfter(killed)
	after, err := c.ConnectionNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kill 2 (client's node %s): first confirm after %v, first consumed after %v; publisher now on %s, consumer on %s",
		target.Name(), conf2.Round(time.Millisecond), cons2.Round(time.Millisecond), nodeName(after[pubName]), nodeName(after[conName]))
	if n := after[pubName]; n == nil || n == target {
		t.Errorf("publishing connection after the kill on %v, want a surviving node", nodeName(n))
	}
	time.Sleep(500 * time.Millisecond) // some traffic after the second recovery
	close(stop)
	wg.Wait()

	// Every confirmed message is consumed, however long it takes.
	pmu.Lock()
	all := append([]publishRecord(nil), records...)
	pmu.Unlock()
	confirmed, failed := 0, 0
	for _, r := range all {
		if r.err == nil {
			confirmed++
		} else {
			failed++
			t.Logf("publish %s failed after %v: %v", r.id, r.end.Sub(r.start).Round(time.Millisecond), r.err)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	var lost []string
	for {
		lost = lost[:0]
		cmu.Lock()
		for _, r := range all {
			if r.err == nil && consumed[r.id] == 0 {
				lost = append(lost, r.id)
			}
		}
		cmu.Unlock()
		if len(lost) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	cmu.Lock()
	distinct, dups, extra := tallyDeliveries(consumed)
	cmu.Unlock()
	t.Logf("tally: %d publishes, %d confirmed, %d failed; %d distinct consumed (%d delivered more than once, %d extra deliveries); %d confirmed and not consumed",
		len(all), confirmed, failed, distinct, dups, extra, len(lost))
	if len(lost) > 0 {
		t.Errorf("%d confirmed messages never consumed: %v", len(lost), lost[:min(10, len(lost))])
	}
	if failed > 0 {
		t.Errorf("%d publishes failed (each had 60 s to ride out the failover)", failed)
	}
}

func nodeName(n *rabbitnode.Node) string {
	if n == nil {
		return "<none>"
	}
	return n.Name()
}
