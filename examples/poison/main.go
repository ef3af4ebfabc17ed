// Command poison shows poison-message handling on the embedded default (no
// server): a handler that cannot process one message fails it three
// times, further apart each time, while the other
// messages flow; the message then lands in the dead-letter topic, where an
// operator reads it with the reason it failed.
//
//	go run ./examples/poison
//
// Pass -url to run it against a broker whose Capabilities claim
// DeadLetter and RedeliveryDelay.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/registry"
)

func main() {
	target := flag.String("url", "mem://", "broker URL or connection string")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, *target); err != nil {
		fmt.Fprintln(os.Stderr, "poison:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, target string) error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	reg := registry.New(registry.WithLogger(logger))
	defer reg.CloseAll(context.Background())
	b, err := reg.Open(ctx, target)
	if err != nil {
		return err
	}
	caps := b.Capabilities()
	if !caps.DeadLetter || !caps.RedeliveryDelay {
		return fmt.Errorf("%s does not dead-letter or delay redeliveries (Capabilities %+v)", target, caps)
	}

	// The operator's side: read what was dead-lettered, and why.
	dead := make(chan *broker.Delivery, 1)
	if _, err := b.Subscribe(ctx, broker.DeadLetterTopic("orders"), func(_ context.Context, d *broker.Delivery) error {
		dead <- d
		return nil
	}, broker.Group(broker.DeadLetterGroup)); err != nil {
		return err
	}

	// The application's side: three tries per message, the second about
	// 200 ms after the first failure and the third about 400 ms after the
	// second (each wait drawn from half to all of its step).
	start := time.Now()
	handled := make(chan string, 10)
	if _, err := b.Subscribe(ctx, "orders", func(_ context.Context, d *broker.Delivery) error {
		if string(d.Body) == "not json" {
			fmt.Printf("%5dms  %s: delivery %d failed\n", since(start), d.ID, d.Metadata.DeliveryCount+1)
			return errors.New("order is not JSON")
		}
		handled <- d.ID
		return nil
	}, broker.Group("billing"),
		broker.MaxDeliveries(3),
		broker.RedeliveryBackoff(broker.Backoff{Initial: 200 * time.Millisecond, Max: time.Second})); err != nil {
		return err
	}

	if err := b.Publish(ctx, "orders",
		&broker.Message{ID: "order-1", Body: []byte("not json")},
		&broker.Message{ID: "order-2", Body: []byte(`{"sku":"a"}`)},
		&broker.Message{ID: "order-3", Body: []byte(`{"sku":"b"}`)}); err != nil {
		return err
	}
	for range 2 {
		select {
		case id := <-handled:
			fmt.Printf("%5dms  %s: handled\n", since(start), id)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	select {
	case d := <-dead:
		fmt.Printf("%5dms  %s dead-lettered from %s/%s after %s deliveries: %s\n", since(start), d.ID,
			d.Headers[broker.HeaderOriginalTopic], d.Headers[broker.HeaderOriginalGroup],
			d.Headers[broker.HeaderDeliveryCount], d.Headers[broker.HeaderLastError])
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

func since(t time.Time) int64 { return time.Since(t).Milliseconds() }
