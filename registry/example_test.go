package registry_test

import (
	"context"
	"fmt"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/registry"
)

func ExampleRegistry() {
	ctx := context.Background()
	r := registry.New()
	defer r.CloseAll(ctx)

	orders, err := r.OpenNamed(ctx, "orders", "mem://orders")
	if err != nil {
		panic(err)
	}
	got := make(chan string, 1)
	sub, err := orders.Subscribe(ctx, "created", func(_ context.Context, d *broker.Delivery) error {
		got <- string(d.Body)
		return nil
	}, broker.Group("billing"))
	if err != nil {
		panic(err)
	}
	defer sub.Close(ctx)
	if err := orders.Publish(ctx, "created", &broker.Message{ID: "1", Body: []byte("order 1")}); err != nil {
		panic(err)
	}
	fmt.Println(<-got)
	// Output: order 1
}
