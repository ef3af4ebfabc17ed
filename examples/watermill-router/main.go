// Command watermill-router runs a Watermill Router over two isobroker
// Brokers on the embedded default (no server): it consumes orders from one
// broker, produces invoices to another, retries failing messages and moves
// poison messages to a poison queue.
//
//	go run ./examples/watermill-router
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/pubsub"
	"github.com/isobroker/broker/registry"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, 5); err != nil {
		fmt.Fprintln(os.Stderr, "watermill-router:", err)
		os.Exit(1)
	}
}

// run routes the given number of good orders and one poison order, and returns once
// every invoice and the poison message have arrived.
func run(ctx context.Context, orders int) error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg := registry.New(registry.WithLogger(logger))
	defer reg.CloseAll(context.Background())
	in, err := reg.OpenNamed(ctx, "in", "mem://in")
	if err != nil {
		return err
	}
	out, err := reg.OpenNamed(ctx, "out", "mem://out")
	if err != nil {
		return err
	}

	ordersSub, err := pubsub.NewSubscriber(in, "invoicing", pubsub.WithLogger(logger))
	if err != nil {
		return err
	}
	outPub, err := pubsub.NewPublisher(out, pubsub.WithLogger(logger))
	if err != nil {
		return err
	}
	wlog := pubsub.NewLogger(logger)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, wlog)
	if err != nil {
		return err
	}
	poison, err := middleware.PoisonQueue(outPub, "orders.poison")
	if err != nil {
		return err
	}
	router.AddMiddleware(
		poison, // outermost: gets the error once retries are exhausted
		middleware.Retry{MaxRetries: 2, InitialInterval: 10 * time.Millisecond, Logger: wlog}.Middleware,
	)
	router.AddHandler("invoice", "orders", ordersSub, "invoices", outPub,
		func(m *message.Message) ([]*message.Message, error) {
			if strings.Contains(string(m.Payload), "poison") {
				return nil, errors.New("cannot invoice this order")
			}
			return []*message.Message{message.NewMessage("invoice-"+m.UUID, []byte("invoice for "+string(m.Payload)))}, nil
		})

	// Watch the output broker with the plain Broker API.
	seen := make(chan string, orders+1)
	for _, topic := range []string{"invoices", "orders.poison"} {
		if _, err := out.Subscribe(ctx, topic, func(_ context.Context, d *broker.Delivery) error {
			seen <- fmt.Sprintf("%s: %s", d.Metadata.Topic, d.Body)
			return nil
		}); err != nil {
			return err
		}
	}

	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(ctx) }()
	select {
	case <-router.Running():
	case err := <-routerDone:
		return fmt.Errorf("router stopped: %w", err)
	}

	ordersPub, err := pubsub.NewPublisher(in)
	if err != nil {
		return err
	}
	defer ordersPub.Close()
	for i := range orders {
		if err := ordersPub.Publish("orders", message.NewMessage(fmt.Sprintf("order-%d", i), fmt.Appendf(nil, "order %d", i))); err != nil {
			return err
		}
	}
	if err := ordersPub.Publish("orders", message.NewMessage("order-poison", []byte("poison order"))); err != nil {
		return err
	}

	for range orders + 1 {
		select {
		case line := <-seen:
			fmt.Println(line)
		case <-ctx.Done():
			return fmt.Errorf("waiting for invoices: %w", ctx.Err())
		}
	}
	if err := router.Close(); err != nil {
		return err
	}
	return <-routerDone
}
