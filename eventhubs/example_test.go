package eventhubs_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
)

// startExampleEmulator runs an in-process Event Hubs emulator with one
// hub, "orders", for the examples.
func startExampleEmulator(ctx context.Context) *emulator.Emulator {
	emu, err := emulator.New(emulator.Config{
		Hubs:   []emulator.HubConfig{{Name: "orders", Partitions: 1}},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	if err := emu.Start(ctx); err != nil {
		panic(err)
	}
	return emu
}

// Open takes a Config: the namespace, the credentials, and the settings
// every adapter shares (Name, Logger, TLSConfig, DialTimeout, Backoff,
// MaxMessageSize).
func ExampleOpen() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	emu := startExampleEmulator(ctx)
	defer func() { _ = emu.Close(ctx) }()

	b, err := eventhubs.Open(ctx, eventhubs.Config{
		Namespace:              emu.Addr(), // "myns.servicebus.windows.net" against Azure
		KeyName:                emu.KeyName(),
		Key:                    emu.Key(),
		UseDevelopmentEmulator: true, // plain TCP; Azure needs TLS
		Name:                   "orders-producer",
		Logger:                 slog.New(slog.DiscardHandler),
		DialTimeout:            10 * time.Second,
		Backoff:                broker.Backoff{Initial: 50 * time.Millisecond, Max: 5 * time.Second},
	})
	if err != nil {
		panic(err)
	}
	defer func() { _ = b.Close(ctx) }()

	err = b.Publish(ctx, "orders", &broker.Message{ID: "o-1", Key: "customer-7", Body: []byte("created")})
	fmt.Println("published:", err == nil)
	// Output: published: true
}

// OpenURL takes a connection string (or an eventhubs:// URL) and options.
func ExampleOpenURL() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	emu := startExampleEmulator(ctx)
	defer func() { _ = emu.Close(ctx) }()

	// "Endpoint=sb://127.0.0.1:port;SharedAccessKeyName=…;SharedAccessKey=…;UseDevelopmentEmulator=true"
	b, err := eventhubs.OpenURL(ctx, emu.ConnectionString(""),
		eventhubs.WithName("orders-consumer"),
		eventhubs.WithLogger(slog.New(slog.DiscardHandler)),
		eventhubs.WithBackoff(broker.Backoff{Initial: 50 * time.Millisecond}),
	)
	if err != nil {
		panic(err)
	}
	defer func() { _ = b.Close(ctx) }()

	got := make(chan string, 1)
	sub, err := b.Subscribe(ctx, "orders", func(_ context.Context, d *broker.Delivery) error {
		got <- fmt.Sprintf("%s: %s", d.Key, d.Body)
		return nil
	}, broker.StartAt(broker.Earliest()))
	if err != nil {
		panic(err)
	}
	defer func() { _ = sub.Close(ctx) }()
	if err := b.Publish(ctx, "orders", &broker.Message{ID: "o-1", Key: "customer-7", Body: []byte("created")}); err != nil {
		panic(err)
	}
	fmt.Println(<-got)
	// Output: customer-7: created
}
