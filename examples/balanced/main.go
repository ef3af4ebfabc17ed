// Command balanced shows Event Hubs partition load balancing: three
// members of one consumer group, started one after another in one process
// against the in-process emulator, share the 8 partitions of a hub through
// an ownership store. It prints the ownership table (which member owns
// which partition, as each member reports it) whenever it changes, until
// the three hold 3, 3 and 2 partitions; then the members close one by one,
// each relinquishing its partitions to the others at once. Meanwhile events
// are published to every partition; at the end the program checks that
// each was handled.
//
//	go run ./examples/balanced
//	go run ./examples/balanced -strategy greedy
//
// The store is in memory here; members in different processes would share
// an Azure Blob Storage container through eventhubs/checkpoint/blobstore.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/checkpoint"
	"github.com/isobroker/broker/eventhubs/emulator"
)

const (
	hub        = "orders"
	partitions = 8
	members    = 3
)

func main() {
	strategy := flag.String("strategy", "balanced", "load-balancing strategy: balanced or greedy")
	interval := flag.Duration("interval", 250*time.Millisecond, "ownership update interval")
	flag.Parse()
	s := eventhubs.StrategyBalanced
	switch *strategy {
	case "balanced":
	case "greedy":
		s = eventhubs.StrategyGreedy
	default:
		fmt.Fprintf(os.Stderr, "balanced: unknown strategy %q\n", *strategy)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout, s, *interval); err != nil {
		fmt.Fprintln(os.Stderr, "balanced:", err)
		os.Exit(1)
	}
}

// member is one consumer of the group, with a Broker of its own, as a
// separate process would have.
type member struct {
	name    string
	b       *eventhubs.Broker
	sub     *eventhubs.BalancedSubscription
	handled *atomic.Int64
}

// tally counts the events handled, and those handled more than once
// (replayed after a hand-over, from the new owner's checkpoint).
type tally struct {
	mu      sync.Mutex
	seen    map[string]bool
	replays int
}

func (t *tally) add(d *broker.Delivery) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := d.Metadata.Partition + "/" + strconv.FormatInt(d.Metadata.SequenceNumber, 10)
	if t.seen[k] {
		t.replays++
	}
	t.seen[k] = true
}

func (t *tally) counts() (distinct, replays int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.seen), t.replays
}

func run(ctx context.Context, out io.Writer, strategy eventhubs.Strategy, interval time.Duration) error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	emu, err := emulator.New(emulator.Config{Hubs: []emulator.HubConfig{{Name: hub, Partitions: partitions}}, Logger: logger})
	if err != nil {
		return err
	}
	if err := emu.Start(ctx); err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = emu.Close(ctx)
	}()
	open := func(name string) (*eventhubs.Broker, error) {
		return eventhubs.OpenURL(ctx, emu.ConnectionString(""), eventhubs.WithName(name), eventhubs.WithLogger(logger))
	}
	closeBroker := func(b *eventhubs.Broker) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	}

	// Events keep arriving while the members come and go.
	pub, err := open("publisher")
	if err != nil {
		return err
	}
	defer closeBroker(pub)
	var published atomic.Int64
	pubCtx, stopPublishing := context.WithCancel(ctx)
	var pubWG sync.WaitGroup
	pubErr := make(chan error, 1)
	pubWG.Go(func() { pubErr <- publish(pubCtx, pub, &published) })
	defer func() { stopPublishing(); pubWG.Wait() }()

	store := checkpoint.NewMemoryStore()
	opts := eventhubs.BalanceOptions{
		Strategy:            strategy,
		UpdateInterval:      interval,
		OwnershipExpiration: 10 * interval,
		CheckpointEvery:     10,
		CheckpointInterval:  interval,
	}
	fmt.Fprintf(out, "%d partitions, strategy %s, update interval %v\n\n", partitions, strategy, interval)
	header := "  time "
	for p := range partitions {
		header += fmt.Sprintf(" %3d", p)
	}
	fmt.Fprintln(out, header+"   (owner of each partition; -- none, ** two members)")

	start := time.Now()
	var (
		group []*member
		last  string
		all   = &tally{seen: map[string]bool{}}
	)
	// show prints the table row when it changed, and reports whether the
	// live members hold an even spread.
	show := func() bool {
		owners := make([][]string, partitions)
		counts := map[string]int{}
		for _, m := range group {
			for _, id := range m.sub.Owned() {
				p, _ := strconv.Atoi(id)
				owners[p] = append(owners[p], m.name)
				counts[m.name]++
			}
		}
		row, spread := "", []string{}
		even := len(group) > 0
		for _, o := range owners {
			switch len(o) {
			case 0:
				row += "  --"
				even = false
			case 1:
				row += fmt.Sprintf(" %3s", o[0])
			default:
				row += "  **"
				even = false
			}
		}
		for _, m := range group {
			n := counts[m.name]
			spread = append(spread, fmt.Sprintf("%s:%d", m.name, n))
			if n < partitions/len(group) || n > (partitions+len(group)-1)/len(group) {
				even = false
			}
		}
		if row != last {
			last = row
			fmt.Fprintf(out, "%5.2fs %s   %s\n", time.Since(start).Seconds(), row, strings.Join(spread, " "))
		}
		return even
	}
	// settle polls the table until the spread is even and has stayed so
	// for a few intervals.
	settle := func(what string) error {
		stableSince := time.Time{}
		for {
			if show() {
				if stableSince.IsZero() {
					stableSince = time.Now()
				}
				if time.Since(stableSince) > 3*interval {
					fmt.Fprintf(out, "        %s\n", what)
					return nil
				}
			} else {
				stableSince = time.Time{}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("waiting for an even spread (%s): %w", what, ctx.Err())
			case err := <-pubErr:
				return fmt.Errorf("publishing: %w", err)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}

	defer func() {
		for _, m := range group {
			closeBroker(m.b)
		}
	}()
	for i := range members {
		name := fmt.Sprintf("m%d", i+1)
		b, err := open(name)
		if err != nil {
			return err
		}
		m := &member{name: name, b: b, handled: new(atomic.Int64)}
		group = append(group, m)
		o := opts
		o.OwnerID = name
		sub, err := b.Subscribe(ctx, hub, func(_ context.Context, d *broker.Delivery) error {
			m.handled.Add(1)
			all.add(d)
			return nil
		}, broker.StartAt(broker.Earliest()), broker.WithDriverOption(eventhubs.Balanced(store, o)))
		if err != nil {
			return fmt.Errorf("member %s: %w", name, err)
		}
		m.sub = sub.(*eventhubs.BalancedSubscription)
		fmt.Fprintf(out, "        %s joined\n", name)
		if err := settle(fmt.Sprintf("even spread over %d member(s)", len(group))); err != nil {
			return err
		}
	}

	// Scale in: each Close checkpoints and relinquishes, so the others
	// take the partitions over at their next update, not after expiry.
	for len(group) > 1 {
		m := group[len(group)-1]
		if err := m.sub.Close(ctx); err != nil {
			return fmt.Errorf("close %s: %w", m.name, err)
		}
		closeBroker(m.b)
		group = group[:len(group)-1]
		fmt.Fprintf(out, "        %s closed after handling %d events\n", m.name, m.handled.Load())
		if err := settle(fmt.Sprintf("even spread over %d member(s)", len(group))); err != nil {
			return err
		}
	}
	stopPublishing()
	pubWG.Wait()
	if err := <-pubErr; err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("publishing: %w", err)
	}
	// Every event is handled at least once; some twice, where a new owner
	// started from a checkpoint a few events behind the old owner.
	for {
		distinct, replays := all.counts()
		if int64(distinct) >= published.Load() {
			fmt.Fprintf(out, "\n%d events published, all handled (%d twice, after a hand-over); %s\n",
				published.Load(), replays, summary(group))
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d events handled: %w", distinct, published.Load(), ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func summary(group []*member) string {
	var parts []string
	for _, m := range group {
		parts = append(parts, fmt.Sprintf("%s owns %v", m.name, m.sub.Owned()))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

// publish sends one event to every partition each 20 ms until ctx ends.
func publish(ctx context.Context, b *eventhubs.Broker, n *atomic.Int64) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		ms := make([]*broker.Message, partitions)
		for p := range ms {
			ms[p] = &broker.Message{Body: []byte("order"), Headers: map[string]string{eventhubs.PartitionIDHeader: strconv.Itoa(p)}}
		}
		if err := b.Publish(ctx, hub, ms...); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		n.Add(int64(len(ms)))
	}
}
