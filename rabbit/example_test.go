package rabbit_test

import (
	"context"
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/rabbit"
)

// Open takes a Config: the servers, and the settings every adapter shares
// (Name, Logger, TLSConfig, DialTimeout, Backoff, MaxMessageSize). It needs
// a running RabbitMQ.
func ExampleOpen() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := rabbit.Open(ctx, rabbit.Config{
		// Tried in turn on every (re)connect.
		URLs:        []string{"amqps://app:secret@rabbit-1.example:5671/orders", "amqps://app:secret@rabbit-2.example:5671/orders"},
		Name:        "orders-service",
		Logger:      slog.Default(),
		TLSConfig:   &tls.Config{MinVersion: tls.VersionTLS13},
		DialTimeout: 5 * time.Second,
		Backoff:     broker.Backoff{Initial: 200 * time.Millisecond, Max: 30 * time.Second},
	})
	if err != nil {
		panic(err)
	}
	defer func() { _ = b.Close(ctx) }()
	if err := b.Publish(ctx, "orders", &broker.Message{ID: "o-1", Key: "customer-7", Body: []byte("created")}); err != nil {
		panic(err)
	}
}

// OpenURL takes one URL (which may list several hosts) and options. It
// needs a running RabbitMQ.
func ExampleOpenURL() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := rabbit.OpenURL(ctx, "amqp://guest:guest@localhost:5672,localhost:5673/",
		rabbit.WithName("orders-service"),
		rabbit.WithDialTimeout(5*time.Second),
		rabbit.WithBackoff(broker.Backoff{Initial: 200 * time.Millisecond}),
	)
	if err != nil {
		panic(err)
	}
	defer func() { _ = b.Close(ctx) }()
	if err := b.Publish(ctx, "orders", &broker.Message{ID: "o-1", Body: []byte("created")}); err != nil {
		panic(err)
	}
}
