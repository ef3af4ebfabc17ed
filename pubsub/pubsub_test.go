package pubsub_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"go.uber.org/goleak"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
	"github.com/isobroker/broker/internal/rabbitnode"
	"github.com/isobroker/broker/mem"
	"github.com/isobroker/broker/pubsub"
	"github.com/isobroker/broker/rabbit"
)

// sharedRabbit is the RabbitMQ node of the rabbit rows (or RABBITMQ_URL).
var sharedRabbit = rabbitnode.NewShared(rabbitnode.Options{Name: "watermill"})

func TestMain(m *testing.M) {
	code := m.Run()
	sharedRabbit.Close()
	if code == 0 {
		if err := goleak.Find(
			goleak.IgnoreAnyFunction(rabbitnode.WaitFunction),
			// Watermill's suite fans several subscribers into one
			// unbuffered channel (its internal multiplier) and stops
			// reading it once it has counted enough messages. Where
			// every reader of a group reads everything (Event Hubs), a
			// forwarder is left blocked on that send after our
			// subscription closed its channel: the suite's goroutine,
			// not ours. Everything of ours is still checked.
			goleak.IgnoreAnyFunction("github.com/ThreeDotsLabs/watermill/internal/subscriber.(*multiplier).Subscribe.func2"),
			goleak.IgnoreAnyFunction("github.com/ThreeDotsLabs/watermill/internal/subscriber.(*multiplier).Subscribe.func3"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// backend is one broker row of the Watermill suite.
type backend struct {
	name string
	// open returns the Broker every Publisher and Subscriber of one suite
	// run shares: it plays the part of the server.
	open     func(t *testing.T) broker.Broker
	features tests.Features
	// subscribe holds broker options for every Subscriber.
	subscribe []broker.SubscribeOption
}

// long reports whether the full (slow) variants of Watermill's suite run:
// `make test-long` sets ISOBROKER_LONG; `make test` runs its short mode.
func long() bool { return os.Getenv("ISOBROKER_LONG") != "" }

// backends returns the broker rows. Every Broker a row opens during the
// test t talks to one server: the shared RabbitMQ node, or one Event Hubs
// emulator started on first use and stopped when t ends.
func backends(t *testing.T) []backend {
	quiet := slog.New(slog.DiscardHandler)
	var emuMu sync.Mutex
	var emu *emulator.Emulator
	sharedEmulator := func() *emulator.Emulator {
		emuMu.Lock()
		defer emuMu.Unlock()
		if emu == nil {
			// The service allows 5 readers per partition and consumer
			// group; Watermill's suite subscribes 10–20 subscribers of
			// one group at once. A group of plain Event Hubs readers
			// does not compete (each reads everything), so the
			// emulator's limit is raised for this row only.
			emu = startEmulator(t, testLogger(t), 64)
		}
		return emu
	}
	return []backend{
		{
			name: "mem",
			open: func(t *testing.T) broker.Broker {
				b, err := mem.New(mem.WithQueueCapacity(20000), mem.WithLogger(quiet))
				if err != nil {
					t.Fatal(err)
				}
				return b
			},
			features: tests.Features{
				ConsumerGroups: true,
				// A group is ordered with one subscriber; competing
				// subscribers keep only per-key order.
				GuaranteedOrder:                     true,
				GuaranteedOrderWithSingleSubscriber: true,
				// Every Publisher and Subscriber of a run shares one mem
				// Broker, which keeps a group's messages while the group
				// has no subscriber — the same contract as a server.
				Persistent: true,
				// Redelivery after a nack or a closed subscriber means
				// at-least-once, never exactly-once.
				ExactlyOnceDelivery: false,
				// mem keeps no history for new groups.
				NewSubscriberReceivesOldMessages: false,
				// A context cannot cross a broker: the message context is
				// the subscriber's.
				ContextPreserved: false,
				ForceShort:       !long(),
			},
		},
		{
			name: "rabbit",
			open: func(t *testing.T) broker.Broker {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				b, err := rabbit.OpenURL(ctx, sharedRabbit.URL(t), rabbit.WithLogger(quiet))
				if err != nil {
					t.Fatal(err)
				}
				return b
			},
			features: tests.Features{
				ConsumerGroups: true,
				// One consumer of a queue sees publish order, and a
				// requeued message goes back to its place; competing
				// consumers do not keep order.
				GuaranteedOrder:                     true,
				GuaranteedOrderWithSingleSubscriber: true,
				// Durable queues and persistent messages.
				Persistent:          true,
				ExactlyOnceDelivery: false,
				// A new queue starts empty: RabbitMQ keeps no history.
				NewSubscriberReceivesOldMessages: false,
				ContextPreserved:                 false,
				// Watermill's TestReconnect reads its list of published
				// messages while its publishers still append to it (a data
				// race that -race reports, and a count that can come up one
				// short). TestWatermillReconnect runs the same scenario
				// race-free, so the suite's copy is not enabled here.
				RestartServiceCommand: nil,
				ForceShort:            !long(),
			},
		},
		{
			name: "eventhubs",
			open: func(t *testing.T) broker.Broker {
				emu := sharedEmulator()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				b, err := eventhubs.OpenURL(ctx, emu.ConnectionString(""), eventhubs.WithLogger(quiet))
				if err != nil {
					t.Fatal(err)
				}
				return b
			},
			// Event Hubs keeps its log: every subscription reads from the
			// start of the retained events.
			subscribe: []broker.SubscribeOption{broker.StartAt(broker.Earliest())},
			features: tests.Features{
				// Each consumer group reads every event.
				ConsumerGroups: true,
				// Events without a key are spread over partitions: there
				// is no order across partitions, and two readers of one
				// group both read everything (no competing consumers).
				GuaranteedOrder: false,
				Persistent:      true,
				// A new subscription reads the retained log from the start.
				NewSubscriberReceivesOldMessages: true,
				ExactlyOnceDelivery:              false,
				ContextPreserved:                 false,
				ForceShort:                       !long(),
			},
		},
	}
}

// startEmulator starts an Event Hubs emulator that creates hubs and
// consumer groups on first use, stopped when t ends.
func startEmulator(t *testing.T, logger *slog.Logger, readersPerPartition int) *emulator.Emulator {
	t.Helper()
	emu, err := emulator.New(emulator.Config{AutoCreate: true, Logger: logger, MaxNonEpochReceivers: readersPerPartition})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := emu.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close(context.Background()) })
	return emu
}

func TestWatermillUniversalSuite(t *testing.T) {
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			b := be.open(t)
			// Cleanup, not defer: the suite's subtests are parallel and
			// run after this function returns.
			t.Cleanup(func() { b.Close(context.Background()) })
			tests.TestPubSub(t, be.features,
				func(t *testing.T) (message.Publisher, message.Subscriber) {
					return newPubSub(t, b, "watermill-tests", be.subscribe)
				},
				func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
					return newPubSub(t, b, group, be.subscribe)
				},
			)
		})
	}
}

func newPubSub(t *testing.T, b broker.Broker, group string, opts []broker.SubscribeOption) (message.Publisher, message.Subscriber) {
	t.Helper()
	pub, err := pubsub.NewPublisher(b)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := pubsub.NewSubscriber(b, group, pubsub.WithSubscribeOptions(opts...))
	if err != nil {
		t.Fatal(err)
	}
	return pub, sub
}

// testLogger logs at info level into t's log, which go test shows only
// when t fails (or with -v).
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
