package broker_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/mem"
)

// A Broker round trip: subscribe a group, publish, handle, close.
func Example() {
	ctx := context.Background()
	b, err := mem.New()
	if err != nil {
		panic(err)
	}
	defer b.Close(ctx)

	done := make(chan struct{})
	sub, err := b.Subscribe(ctx, "orders", func(ctx context.Context, d *broker.Delivery) error {
		fmt.Printf("%s: %s\n", d.Key, d.Body)
		close(done)
		return nil // acknowledge
	}, broker.Group("billing"), broker.Concurrency(4))
	if err != nil {
		panic(err)
	}
	defer sub.Close(ctx)

	err = b.Publish(ctx, "orders", &broker.Message{ID: "o-1", Key: "customer-7", Body: []byte("created")})
	if err != nil {
		panic(err)
	}
	<-done
	// Output: customer-7: created
}

// Errors say whether trying again can help.
func ExampleIsRetryable() {
	b, _ := mem.New()
	_ = b.Close(context.Background())
	err := b.Publish(context.Background(), "orders", &broker.Message{})
	fmt.Println(errors.Is(err, broker.ErrClosed), broker.IsRetryable(err))
	fmt.Println(broker.IsRetryable(fmt.Errorf("publish: %w", broker.ErrBlocked)))
	// Output:
	// true false
	// true
}

// Watching the connection state never blocks the broker.
func ExampleBroker_watchState() {
	b, _ := mem.New()
	changes := b.WatchState(context.Background())
	_ = b.Close(context.Background())
	for c := range changes {
		fmt.Println(c.From, "->", c.To)
	}
	// Output: connected -> closed
}
