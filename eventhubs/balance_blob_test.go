package eventhubs_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2/checkpoints"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/checkpoint"
	"github.com/isobroker/broker/eventhubs/checkpoint/blobstore"
	"github.com/isobroker/broker/eventhubs/emulator"
	"github.com/isobroker/broker/internal/azurite"
)

// TestBalancedBlobStore runs the load balancer on the blob store against
// one Azurite of its own (the last subtest stops it).
func TestBalancedBlobStore(t *testing.T) {
	began := time.Now()
	srv := azurite.StartTest(t, azurite.Options{})
	t.Logf("Azurite started in %v", time.Since(began).Round(time.Millisecond))
	cs := srv.ConnectionString()

	t.Run("scale-out", func(t *testing.T) {
		_, cc := azurite.NewContainer(t, cs)
		opts := testBalanceOptions(eventhubs.StrategyBalanced)
		opts.UpdateInterval = 300 * time.Millisecond // blob calls take milliseconds each
		scaleOut(t, newBlobStore(t, cc), opts, roundBounds{8 + 2, 4 + 3, 2 + 4})
	})
	t.Run("leave", func(t *testing.T) {
		// TestBalancedLeave on blobs: a closed member's partitions are
		// taken over at once, a killed one's only after they expire.
		opts := testBalanceOptions(eventhubs.StrategyBalanced)
		opts.UpdateInterval = 300 * time.Millisecond // blob calls take milliseconds each
		opts.OwnershipExpiration = 3 * time.Second
		balancedLeave(t, func(t *testing.T) checkpoint.Store {
			_, cc := azurite.NewContainer(t, cs)
			return newBlobStore(t, cc)
		}, opts)
	})
	t.Run("sdk-processor-interop", func(t *testing.T) { sdkProcessorInterop(t, cs) })
	t.Run("azurite-stopped", func(t *testing.T) { azuriteStopped(t, srv) })
}

func newBlobStore(t *testing.T, cc *container.Client) *blobstore.Store {
	t.Helper()
	s, err := blobstore.New(cc, blobstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sdkProcessorInterop: checkpoints written by our members are honoured by
// the official SDK's Processor with its own blob store on the same
// container, and the other way round; then both consume one consumer
// group side by side and split its partitions.
//
// Every reader falls back to the earliest event when it finds no
// checkpoint, so a reader that ignored the other's checkpoints would
// read the earlier rounds' events again and fail the test.
func sdkProcessorInterop(t *testing.T, cs string) {
	e := startEmulator(t, emulator.Config{})
	hub := newHub(t, e, 2)
	name, cc := azurite.NewContainer(t, cs)
	ours := newBlobStore(t, cc)
	sdkStore, err := checkpoints.NewBlobStore(azurite.ContainerClient(t, cs, name), nil)
	if err != nil {
		t.Fatal(err)
	}
	pub := open(t, e, nil)
	ns := mustNamespace(t, e)
	send := func(round string) []string {
		t.Helper()
		var ms []*broker.Message
		for i := range 5 {
			for p := range 2 {
				ms = append(ms, &broker.Message{ID: fmt.Sprintf("%s-%d-%d", round, p, i), Headers: map[string]string{eventhubs.PartitionIDHeader: fmt.Sprint(p)}})
			}
		}
		if err := pub.Publish(ctxT(t, 10*time.Second), hub, ms...); err != nil {
			t.Fatal(err)
		}
		ids := make([]string, len(ms))
		for i, m := range ms {
			ids[i] = m.ID
		}
		slices.Sort(ids)
		return ids
	}
	opts := testBalanceOptions(eventhubs.StrategyGreedy)
	opts.UpdateInterval = 300 * time.Millisecond
	// Should a Processor fail to relinquish (its Close cancels a claim in
	// flight at times), do not wait long for the expiry.
	opts.OwnershipExpiration = 2 * time.Second
	began := time.Now()
	phase := func(what string) { t.Logf("%v: %s", time.Since(began).Round(time.Millisecond), what) }
	defer phase("done")

	// 1. Ours first: it reads round one, checkpoints and relinquishes.
	one := send("one")
	if got := consumeOurs(t, e, hub, ours, opts, len(one)); !slices.Equal(got, one) {
		t.Fatalf("our member read %v, want %v", got, one)
	}
	cps, err := sdkStore.ListCheckpoints(ctxT(t, 10*time.Second), ns, hub, azeventhubs.DefaultConsumerGroup, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(cps) != 2 {
		t.Fatalf("the SDK's store lists %d checkpoints, want 2", len(cps))
	}
	for _, cp := range cps {
		if cp.SequenceNumber == nil || *cp.SequenceNumber != 4 || cp.Offset == nil || *cp.Offset == "" {
			t.Errorf("checkpoint of partition %s as the SDK reads it: %+v", cp.PartitionID, cp)
		}
	}

	phase("ours read round one")
	// 2. The SDK's Processor continues after our checkpoints.
	two := send("two")
	if got := consumeSDK(t, e, hub, sdkStore, len(two)); !slices.Equal(got, two) {
		t.Fatalf("the SDK Processor read %v, want %v", got, two)
	}

	phase("the SDK read round two")
	// 3. Ours continues after the SDK's checkpoints.
	three := send("three")
	if got := consumeOurs(t, e, hub, ours, opts, len(three)); !slices.Equal(got, three) {
		t.Fatalf("our member read %v after the SDK, want %v", got, three)
	}
	list, err := ours.ListCheckpoints(ctxT(t, 10*time.Second), ns, hub, eventhubs.DefaultConsumerGroup)
	if err != nil {
		t.Fatal(err)
	}
	for _, cp := range list {
		if cp.SequenceNumber != 14 {
			t.Errorf("partition %s: checkpoint %d, want 14", cp.PartitionID, cp.SequenceNumber)
		}
	}

	phase("ours read round three")
	// 4. Side by side in one group: ours holds both partitions; a
	// balanced SDK Processor joins and takes one over (our receiver is
	// stolen, and we let it go); every event is read by one of them.
	// When the Processor stops, ours takes its partition back.
	opts.Strategy = eventhubs.StrategyBalanced
	r := startOurs(t, e, hub, ours, opts)
	waitOwned(t, r, 2)
	sdk := startSDK(t, e, hub, sdkStore, azeventhubs.ProcessorStrategyBalanced)
	four := send("four")
	waitOwned(t, r, 1)
	phase("the SDK took a partition over")
	owners := map[string]string{}
	for _, o := range ownershipList(t, ours, ns, hub) {
		owners[o.PartitionID] = o.OwnerID
	}
	if mine := r.sub.Owned()[0]; owners[mine] != r.sub.OwnerID() || owners[otherPartition(mine)] == r.sub.OwnerID() || owners[otherPartition(mine)] == "" {
		t.Errorf("side by side: we own %v, the store says %v", r.sub.Owned(), owners)
	}
	five := send("five")
	both := append(slices.Clone(four), five...)
	waitUnion(t, both, r.idSet, sdk.idSet)
	phase("side by side read rounds four and five")
	sdk.stop(t)
	phase("the SDK stopped")
	waitOwned(t, r, 2)
	six := send("six")
	waitUnion(t, six, r.idSet)
	r.stop(t)
	// Handed over when its receiver was stolen, or when its update saw the
	// Processor's claim first (on a loaded machine the Processor may
	// attach after that).
	if n := r.logs.count(`msg="partition handed over"`); n == 0 {
		t.Errorf("our member logged no hand-over to the Processor")
	}
}

func otherPartition(p string) string {
	if p == "0" {
		return "1"
	}
	return "0"
}

func ownershipList(t *testing.T, s checkpoint.Store, ns, hub string) []checkpoint.Ownership {
	t.Helper()
	list, err := s.ListOwnership(ctxT(t, 10*time.Second), ns, hub, eventhubs.DefaultConsumerGroup)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// waitOwned waits until r owns n partitions.
func waitOwned(t *testing.T, r *ourRunner, n int) {
	t.Helper()
	guard := time.Now().Add(60 * time.Second)
	for len(r.sub.Owned()) != n {
		if time.Now().After(guard) {
			t.Fatalf("our member owns %v, want %d partitions", r.sub.Owned(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitUnion waits until every id of want was read by one of sets.
func waitUnion(t *testing.T, want []string, sets ...*idSet) {
	t.Helper()
	guard := time.Now().Add(60 * time.Second)
	for {
		got := map[string]bool{}
		for _, s := range sets {
			for _, id := range s.ids() {
				got[id] = true
			}
		}
		var miss []string
		for _, id := range want {
			if !got[id] {
				miss = append(miss, id)
			}
		}
		if len(miss) == 0 {
			return
		}
		if time.Now().After(guard) {
			t.Fatalf("events never read: %v", miss)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// consumeOurs runs one member until it handled n events, closes it and
// returns the ids it handled, sorted.
func consumeOurs(t *testing.T, e *emulator.Emulator, hub string, store checkpoint.Store, opts eventhubs.BalanceOptions, n int) []string {
	t.Helper()
	r := startOurs(t, e, hub, store, opts)
	r.waitCount(t, n)
	time.Sleep(2 * opts.UpdateInterval) // any event beyond n would show up
	r.stop(t)
	return r.ids()
}

// consumeSDK runs an azeventhubs Processor until it received n events,
// stops it and returns the event ids, sorted.
func consumeSDK(t *testing.T, e *emulator.Emulator, hub string, store azeventhubs.CheckpointStore, n int) []string {
	t.Helper()
	r := startSDK(t, e, hub, store, azeventhubs.ProcessorStrategyGreedy)
	r.waitCount(t, n)
	time.Sleep(600 * time.Millisecond) // any event beyond n would show up
	r.stop(t)
	return r.ids()
}

// idSet collects event ids from handler goroutines.
type idSet struct {
	mu   sync.Mutex
	list []string
	more chan struct{}
}

func newIDSet() *idSet { return &idSet{more: make(chan struct{}, 1)} }

func (s *idSet) add(ids ...string) {
	s.mu.Lock()
	s.list = append(s.list, ids...)
	s.mu.Unlock()
	select {
	case s.more <- struct{}{}:
	default:
	}
}

func (s *idSet) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.list)
}

// ids returns the ids collected, sorted.
func (s *idSet) ids() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.list)
	slices.Sort(out)
	return out
}

func (s *idSet) waitCount(t *testing.T, n int) {
	t.Helper()
	guard := time.After(60 * time.Second)
	for s.count() < n {
		select {
		case <-s.more:
		case <-guard:
			t.Fatalf("received %d of %d events", s.count(), n)
		}
	}
}

// ourRunner is one of our load-balanced members.
type ourRunner struct {
	*idSet
	logs *logBuffer
	b    *eventhubs.Broker
	sub  *eventhubs.BalancedSubscription
}

func startOurs(t *testing.T, e *emulator.Emulator, hub string, store checkpoint.Store, opts eventhubs.BalanceOptions) *ourRunner {
	t.Helper()
	logs := &logBuffer{}
	r := &ourRunner{idSet: newIDSet(), logs: logs, b: open(t, e, logs)}
	sub, err := r.b.Subscribe(ctxT(t, 30*time.Second), hub, func(_ context.Context, d *broker.Delivery) error {
		r.add(d.ID)
		return nil
	}, broker.StartAt(broker.Earliest()), broker.WithDriverOption(eventhubs.Balanced(store, opts)))
	if err != nil {
		t.Fatal(err)
	}
	r.sub = sub.(*eventhubs.BalancedSubscription)
	return r
}

func (r *ourRunner) stop(t *testing.T) {
	t.Helper()
	if err := r.sub.Close(ctxT(t, 30*time.Second)); err != nil {
		t.Errorf("close: %v", err)
	}
	if err := r.b.Close(ctxT(t, 30*time.Second)); err != nil {
		t.Errorf("broker close: %v", err)
	}
}

// sdkRunner is an azeventhubs Processor that checkpoints after every
// batch it receives.
type sdkRunner struct {
	*idSet
	cc     *azeventhubs.ConsumerClient
	cancel context.CancelFunc
	runErr chan error
	wg     sync.WaitGroup
}

func startSDK(t *testing.T, e *emulator.Emulator, hub string, store azeventhubs.CheckpointStore, strategy azeventhubs.ProcessorStrategy) *sdkRunner {
	t.Helper()
	cc, err := azeventhubs.NewConsumerClientFromConnectionString(e.ConnectionString(hub), "", azeventhubs.DefaultConsumerGroup, nil)
	if err != nil {
		t.Fatal(err)
	}
	earliest := true
	proc, err := azeventhubs.NewProcessor(cc, store, &azeventhubs.ProcessorOptions{
		LoadBalancingStrategy:       strategy,
		UpdateInterval:              300 * time.Millisecond,
		PartitionExpirationDuration: 2 * time.Second,
		StartPositions:              azeventhubs.StartPositions{Default: azeventhubs.StartPosition{Earliest: &earliest}},
	})
	if err != nil {
		_ = cc.Close(context.Background())
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &sdkRunner{idSet: newIDSet(), cc: cc, cancel: cancel, runErr: make(chan error, 1)}
	go func() { r.runErr <- proc.Run(ctx) }()
	r.wg.Go(func() {
		for {
			pc := proc.NextPartitionClient(ctx)
			if pc == nil {
				return
			}
			r.wg.Go(func() {
				defer pc.Close(context.Background())
				for ctx.Err() == nil {
					rctx, rcancel := context.WithTimeout(ctx, 200*time.Millisecond)
					evs, err := pc.ReceiveEvents(rctx, 10, nil)
					rcancel()
					if len(evs) > 0 {
						for _, ev := range evs {
							r.add(*ev.MessageID)
						}
						if err := pc.UpdateCheckpoint(ctx, evs[len(evs)-1], nil); err != nil && ctx.Err() == nil {
							t.Errorf("SDK checkpoint: %v", err)
						}
					}
					if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
						return // ownership lost: the Processor may hand the partition out again
					}
				}
			})
		}
	})
	return r
}

func (r *sdkRunner) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	if err := <-r.runErr; err != nil {
		t.Errorf("Processor.Run: %v", err)
	}
	r.wg.Wait()
	if err := r.cc.Close(context.Background()); err != nil {
		t.Errorf("SDK consumer close: %v", err)
	}
}

// azuriteStopped: two members on the blob store converge; then Azurite is
// stopped for good. They keep consuming what they own, log the store
// failures, and Close still returns by its context (the final
// checkpoints and the relinquishing fail, logged).
func azuriteStopped(t *testing.T, srv *azurite.Server) {
	e := startEmulator(t, emulator.Config{})
	_, cc := azurite.NewContainer(t, srv.ConnectionString())
	opts := testBalanceOptions(eventhubs.StrategyGreedy)
	opts.UpdateInterval = 300 * time.Millisecond
	opts.StoreTimeout = 3 * time.Second
	opts.CloseTimeout = 5 * time.Second
	c := newCluster(t, e, 4, newBlobStore(t, cc), opts)
	a, b := c.join("a"), c.join("b")
	c.waitConverged("2 members on Azurite", []*member{a, b}, nil, 10)
	ownedA, ownedB := a.sub.Owned(), b.sub.Owned()

	// Stopped with a context that has ended: the process is killed, as in
	// a crash, not given time to shut down.
	stop, cancel := context.WithCancel(context.Background())
	cancel()
	if err := srv.Stop(stop); err != nil {
		t.Fatalf("stop Azurite: %v", err)
	}
	began := time.Now()
	c.publishNow("after-stop", 5)
	waitRounds(t, []*member{a, b}, 3)
	c.waitHandled("with Azurite stopped")
	if got := a.sub.Owned(); !slices.Equal(got, ownedA) {
		t.Errorf("a owns %v with Azurite stopped, %v before", got, ownedA)
	}
	if got := b.sub.Owned(); !slices.Equal(got, ownedB) {
		t.Errorf("b owns %v with Azurite stopped, %v before", got, ownedB)
	}
	if countLogs([]*member{a, b}, "level=WARN", "checkpoint store failed") == 0 {
		t.Errorf("store failures not logged")
	}
	t.Logf("%v: events handled, ownership unchanged over 3 rounds", time.Since(began).Round(time.Millisecond))
	for _, m := range []*member{a, b} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		closing := time.Now()
		err := m.sub.Close(ctx)
		cancel()
		t.Logf("member %s: Close took %v with Azurite stopped", m.name, time.Since(closing).Round(time.Millisecond))
		if err != nil {
			t.Errorf("member %s: Close with Azurite stopped: %v", m.name, err)
		}
		if m.logs.count("level=WARN", "relinquishing failed") != 1 {
			t.Errorf("member %s: failed relinquish not logged", m.name)
		}
		if m.logs.count("checkpoint write failed", "reason=close") == 0 {
			t.Errorf("member %s: failed final checkpoint not logged", m.name)
		}
	}
}
