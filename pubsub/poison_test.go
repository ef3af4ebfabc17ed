package pubsub_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/mem"
	"github.com/isobroker/broker/pubsub"
)

// Through Watermill, a Nack redelivers without limit by default (the
// middleware decides what is poison), even past the broker's own
// DefaultMaxDeliveries; a MaxDeliveries in WithSubscribeOptions turns the
// broker's dead-lettering back on.
func TestWatermillNackLimit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  []pubsub.Option
		nacks int // Nacks before the test acks; -1: never ack, expect a dead-letter
	}{
		{"unlimited by default", nil, broker.DefaultMaxDeliveries + 5},
		{"MaxDeliveries passed through", []pubsub.Option{pubsub.WithSubscribeOptions(broker.MaxDeliveries(3))}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := mem.New()
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close(context.Background())
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			dead := make(chan *broker.Delivery, 1)
			if _, err := b.Subscribe(ctx, broker.DeadLetterTopic("t"), func(_ context.Context, d *broker.Delivery) error {
				dead <- d
				return nil
			}, broker.Group(broker.DeadLetterGroup)); err != nil {
				t.Fatal(err)
			}
			sub, err := pubsub.NewSubscriber(b, "g", tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			msgs, err := sub.Subscribe(ctx, "t")
			if err != nil {
				t.Fatal(err)
			}
			pub, err := pubsub.NewPublisher(b)
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			if err := pub.Publish("t", message.NewMessage("m-1", []byte("x"))); err != nil {
				t.Fatal(err)
			}
			for n := 0; ; n++ {
				select {
				case m := <-msgs:
					if tc.nacks >= 0 && n == tc.nacks {
						m.Ack()
						select {
						case d := <-dead:
							t.Fatalf("dead-lettered after %s deliveries although Watermill nacked only %d times", d.Headers[broker.HeaderDeliveryCount], n)
						case <-time.After(100 * time.Millisecond):
						}
						return
					}
					m.Nack()
				case d := <-dead:
					if tc.nacks >= 0 {
						t.Fatalf("dead-lettered after %d deliveries with no limit set", n)
					}
					if d.Headers[broker.HeaderDeliveryCount] != "3" || n != 3 {
						t.Errorf("dead-lettered after %d deliveries (header %s), want 3", n, d.Headers[broker.HeaderDeliveryCount])
					}
					return
				case <-ctx.Done():
					t.Fatalf("after %d deliveries: %v", n, ctx.Err())
				}
			}
		})
	}
}
