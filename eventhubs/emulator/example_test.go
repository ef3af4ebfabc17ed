package emulator_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"

	"github.com/isobroker/broker/eventhubs/emulator"
)

// Example starts an emulator the way a test would, sends an event with the
// official Azure SDK and reads it back.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	emu, err := emulator.New(emulator.Config{
		Hubs:   []emulator.HubConfig{{Name: "orders", Partitions: 2}},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	if err := emu.Start(ctx); err != nil {
		panic(err)
	}
	defer func() { _ = emu.Close(ctx) }() // in a test: t.Cleanup

	// Any client that takes a connection string works unchanged.
	producer, err := azeventhubs.NewProducerClientFromConnectionString(emu.ConnectionString("orders"), "", nil)
	if err != nil {
		panic(err)
	}
	defer func() { _ = producer.Close(ctx) }()
	partition := "0"
	batch, err := producer.NewEventDataBatch(ctx, &azeventhubs.EventDataBatchOptions{PartitionID: &partition})
	if err != nil {
		panic(err)
	}
	if err := batch.AddEventData(&azeventhubs.EventData{Body: []byte("order #1")}, nil); err != nil {
		panic(err)
	}
	if err := producer.SendEventDataBatch(ctx, batch, nil); err != nil {
		panic(err)
	}

	consumer, err := azeventhubs.NewConsumerClientFromConnectionString(emu.ConnectionString("orders"), "", azeventhubs.DefaultConsumerGroup, nil)
	if err != nil {
		panic(err)
	}
	defer func() { _ = consumer.Close(ctx) }()
	earliest := true
	pc, err := consumer.NewPartitionClient(partition, &azeventhubs.PartitionClientOptions{
		StartPosition: azeventhubs.StartPosition{Earliest: &earliest},
	})
	if err != nil {
		panic(err)
	}
	defer func() { _ = pc.Close(ctx) }()
	events, err := pc.ReceiveEvents(ctx, 1, nil)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(events[0].Body), events[0].SequenceNumber)
	// Output: order #1 0
}
