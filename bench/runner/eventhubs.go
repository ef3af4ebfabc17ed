package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
)

// Event Hubs contenders talk to the emulator child. Every hub the bench
// uses has one partition, so both contenders read and write the same single
// partition; consumers start at the earliest event of a fresh hub.

// sdkPrefetch is the SDK's default prefetch (link credit), stated
// explicitly.
const sdkPrefetch = 300

// sdkClient is the official SDK: a producer per hub (the SDK binds
// producers to one hub) and a consumer with one partition client.
type sdkClient struct {
	connStr func(hub string) string

	mu        sync.Mutex
	producers map[string]*azeventhubs.ProducerClient
}

func (c *sdkClient) producer(hub string) (*azeventhubs.ProducerClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.producers[hub]; ok {
		return p, nil
	}
	p, err := azeventhubs.NewProducerClientFromConnectionString(c.connStr(hub), "", nil)
	if err != nil {
		return nil, err
	}
	c.producers[hub] = p
	return p, nil
}

// publish sends bodies in as few batches as the SDK's size limit allows.
func (c *sdkClient) publish(ctx context.Context, hub string, bodies [][]byte) error {
	p, err := c.producer(hub)
	if err != nil {
		return err
	}
	batch, err := p.NewEventDataBatch(ctx, nil)
	if err != nil {
		return err
	}
	for i := 0; i < len(bodies); {
		err := batch.AddEventData(&azeventhubs.EventData{Body: bodies[i]}, nil)
		if errors.Is(err, azeventhubs.ErrEventDataTooLarge) && batch.NumEvents() > 0 {
			if err := p.SendEventDataBatch(ctx, batch, nil); err != nil {
				return err
			}
			if batch, err = p.NewEventDataBatch(ctx, nil); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		i++
	}
	if batch.NumEvents() == 0 {
		return nil
	}
	return p.SendEventDataBatch(ctx, batch, nil)
}

func (c *sdkClient) subscribe(ctx context.Context, hub string, fn func([]byte)) (func(), error) {
	cc, err := azeventhubs.NewConsumerClientFromConnectionString(c.connStr(hub), "", azeventhubs.DefaultConsumerGroup, nil)
	if err != nil {
		return nil, err
	}
	earliest := true
	pc, err := cc.NewPartitionClient("0", &azeventhubs.PartitionClientOptions{StartPosition: azeventhubs.StartPosition{Earliest: &earliest}, Prefetch: sdkPrefetch})
	if err != nil {
		_ = cc.Close(ctx)
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	// drained is already cancelled: ReceiveEvents with it returns at once
	// with whatever the link has prefetched (the SDK takes prefetched
	// events before it looks at the context).
	drained, drain := context.WithCancel(ctx)
	drain()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// ReceiveEvents returns only once it has count events (or its
		// context ends). Block for one event, hand it over at once, then
		// take everything already prefetched without waiting: the lowest
		// latency and the largest batches the SDK offers at the same time.
		for ctx.Err() == nil {
			evs, err := pc.ReceiveEvents(ctx, 1, nil)
			for len(evs) > 0 {
				for _, ev := range evs {
					fn(ev.Body)
				}
				evs, _ = pc.ReceiveEvents(drained, sdkPrefetch, nil)
			}
			if err != nil && ctx.Err() == nil {
				time.Sleep(10 * time.Millisecond) // the SDK retries internally; do not spin on a fatal error
			}
		}
	}()
	return func() {
		cancel()
		<-done
		_ = pc.Close(context.Background())
		_ = cc.Close(context.Background())
	}, nil
}

func (c *sdkClient) close(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, p := range c.producers {
		errs = append(errs, p.Close(ctx))
	}
	return errors.Join(errs...)
}

// ourEventHubs is the isobroker adapter.
type ourEventHubs struct {
	b       *eventhubs.Broker
	subOpts []broker.SubscribeOption // beyond the start position
}

func (c *ourEventHubs) publish(ctx context.Context, hub string, bodies [][]byte) error {
	ms := make([]*broker.Message, len(bodies))
	for i, b := range bodies {
		ms[i] = &broker.Message{Body: b}
	}
	return c.b.Publish(ctx, hub, ms...)
}

func (c *ourEventHubs) subscribe(ctx context.Context, hub string, fn func([]byte)) (func(), error) {
	s, err := c.b.Subscribe(ctx, hub, func(_ context.Context, d *broker.Delivery) error {
		fn(d.Body)
		return nil
	}, append([]broker.SubscribeOption{broker.StartAt(broker.Earliest())}, c.subOpts...)...)
	if err != nil {
		return nil, err
	}
	return func() { _ = s.Close(context.Background()) }, nil
}

func (c *ourEventHubs) close(ctx context.Context) error { return c.b.Close(ctx) }

// openOurEventHubs opens our adapter on the emulator's namespace, with
// opts, its subscriptions with subOpts.
func openOurEventHubs(emu *emulatorProc, opts []eventhubs.Option, subOpts ...broker.SubscribeOption) func(ctx context.Context, _ string) (client, error) {
	return func(ctx context.Context, _ string) (client, error) {
		b, err := eventhubs.OpenURL(ctx, emu.namespaceConnStr(), append([]eventhubs.Option{eventhubs.WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
		if err != nil {
			return nil, err
		}
		return &ourEventHubs{b: b, subOpts: subOpts}, nil
	}
}

// eventHubsContenders lists the Event Hubs contenders; the SDK is the
// reference. The second list holds diagnostic variants, run only in the
// receiving figures: our adapter with the SDK's default link credit, to
// show how much of a receive gap is the default prefetch alone.
func eventHubsContenders(v versions, emu *emulatorProc, adapterReady bool) (cs, diag []*contender) {
	sdk := &contender{key: "eh-sdk", label: "azeventhubs/v2 " + v.azeventhubs, short: "azeventhubs SDK", chart: "azeventhubs/v2 " + v.azeventhubs + " (SDK)", family: famEventHubs,
		open: func(ctx context.Context, _ string) (client, error) {
			return &sdkClient{connStr: emu.hubConnStr, producers: map[string]*azeventhubs.ProducerClient{}}, nil
		}}
	ours := &contender{key: "eh-ours", label: "isobroker/eventhubs " + v.ours, short: "isobroker eventhubs", chart: "isobroker/eventhubs", family: famEventHubs, ours: true,
		open: openOurEventHubs(emu, nil)}
	ours300 := &contender{key: "eh-ours-p300", label: fmt.Sprintf("isobroker/eventhubs %s, broker.Prefetch(%d) (diagnostic: the SDK's default credit)", v.ours, sdkPrefetch),
		short: "isobroker eventhubs, Prefetch(300)", chart: "isobroker/eventhubs, Prefetch(300) (diagnostic)", family: famEventHubs, ours: true, open: openOurEventHubs(emu, nil, broker.Prefetch(sdkPrefetch))}
	if !adapterReady {
		ours.notReady = "not measured: adapter not ready"
		ours300.notReady = ours.notReady
	}
	return []*contender{sdk, ours}, []*contender{ours300}
}
