package pubsub_test

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/isobroker/broker/mem"
	"github.com/isobroker/broker/pubsub"
)

// One Broker serves a Watermill publisher and subscriber; closing them
// leaves the Broker to its owner.
func ExampleNewSubscriber() {
	b, _ := mem.New()
	defer b.Close(context.Background())

	pub, _ := pubsub.NewPublisher(b)
	defer pub.Close()
	sub, _ := pubsub.NewSubscriber(b, "billing")
	defer sub.Close()

	msgs, _ := sub.Subscribe(context.Background(), "orders")
	_ = pub.Publish("orders", message.NewMessage("o-1", []byte("created")))
	m := <-msgs
	fmt.Println(m.UUID, string(m.Payload))
	m.Ack()
	// Output: o-1 created
}
