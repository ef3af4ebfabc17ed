package pubsub_test

import (
	"context"
	"os"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"go.uber.org/goleak"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/mem"
	"github.com/isobroker/broker/pubsub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// backend is one broker row of the Watermill suite.
type backend struct {
	name string
	// open returns the Broker every Publisher and Subscriber of one suite
	// run shares: it plays the part of the server.
	open     func(t *testing.T) broker.Broker
	features tests.Features
}

// long reports whether the full (slow) variants of Watermill's suite run:
// `make test-long` sets ISOBROKER_LONG; `make test` runs its short mode.
func long() bool { return os.Getenv("ISOBROKER_LONG") != "" }

func backends(t *testing.T) []backend {
	return []backend{{
		name: "mem",
		open: func(t *testing.T) broker.Broker {
			b, err := mem.New(mem.WithQueueCapacity(20000))
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
			// Broker, which keeps a group's messages while the group has
			// no subscriber — the same contract as a server.
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
	}}
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
					return newPubSub(t, b, "watermill-tests")
				},
				func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
					return newPubSub(t, b, group)
				},
			)
		})
	}
}

func newPubSub(t *testing.T, b broker.Broker, group string) (message.Publisher, message.Subscriber) {
	t.Helper()
	pub, err := pubsub.NewPublisher(b)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := pubsub.NewSubscriber(b, group)
	if err != nil {
		t.Fatal(err)
	}
	return pub, sub
}
