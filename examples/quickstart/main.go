// Command quickstart shows isobroker on its embedded default (no server):
// two brokers opened through a registry, a publish and a consume on each,
// one closed, and the other still working.
//
//	go run ./examples/quickstart
//
// Pass -url to run the same program against a real server, for example
// -url amqp://guest:guest@localhost:5672/ for RabbitMQ or an Event Hubs
// connection string.
package main

import (
	"context"
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
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, target string) error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg := registry.New(registry.WithLogger(logger))
	defer reg.CloseAll(context.Background())

	// Two brokers from the same URL: two isolated instances.
	a, err := reg.OpenNamed(ctx, "a", target)
	if err != nil {
		return err
	}
	b, err := reg.OpenNamed(ctx, "b", target)
	if err != nil {
		return err
	}

	received := make(chan string, 16)
	handler := func(name string) broker.Handler {
		return func(ctx context.Context, d *broker.Delivery) error {
			received <- fmt.Sprintf("%s received %q (key %q)", name, d.Body, d.Key)
			return nil // nil acknowledges; an error would redeliver
		}
	}
	for name, br := range map[string]broker.Broker{"a": a, "b": b} {
		if _, err := br.Subscribe(ctx, "greetings", handler(name), broker.Group("quickstart-"+name)); err != nil {
			return fmt.Errorf("subscribe on %s: %w", name, err)
		}
	}

	for name, br := range map[string]broker.Broker{"a": a, "b": b} {
		msg := &broker.Message{ID: "hello-" + name, Key: "greeting", Body: []byte("hello from " + name)}
		if err := br.Publish(ctx, "greetings", msg); err != nil {
			return fmt.Errorf("publish on %s: %w", name, err)
		}
	}
	if err := expect(ctx, received, 2); err != nil {
		return err
	}

	// Close a; b is untouched.
	if err := reg.Close(ctx, "a"); err != nil {
		return fmt.Errorf("close a: %w", err)
	}
	fmt.Printf("a is %v; publishing on a now fails: %v\n", a.State(), a.Publish(ctx, "greetings", &broker.Message{}))
	if err := b.Publish(ctx, "greetings", &broker.Message{ID: "after", Body: []byte("b still works")}); err != nil {
		return fmt.Errorf("publish on b after closing a: %w", err)
	}
	if err := expect(ctx, received, 1); err != nil {
		return err
	}
	fmt.Printf("b is %v\n", b.State())
	return nil
}

// expect prints n deliveries or fails when ctx ends.
func expect(ctx context.Context, received <-chan string, n int) error {
	for range n {
		select {
		case line := <-received:
			fmt.Println(line)
		case <-ctx.Done():
			return fmt.Errorf("waiting for deliveries: %w", ctx.Err())
		}
	}
	return nil
}
