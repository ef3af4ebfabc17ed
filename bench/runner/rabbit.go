package runner

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/pubsub"
	"github.com/isobroker/broker/rabbit"
)

// Topology. Contenders that publish to a topic exchange (raw, rabbit,
// pubsub) use exchange TOPIC (durable, type topic) with queue
// "TOPIC.bench" bound by "#" — what rabbit.Subscribe with
// broker.Group("bench") declares. watermill-amqp's queue config publishes
// to the default exchange with routing key TOPIC, so its queue is TOPIC.
// For publish-only runs the bench declares a sink queue capped at
// sinkMaxBytes (oldest dropped) so that mandatory publishes route and the
// node's memory stays flat.
const (
	benchGroup   = "bench"
	sinkMaxBytes = 32 << 20
)

// topoStyle says how a contender maps a topic onto AMQP.
type topoStyle int

const (
	exchangeStyle topoStyle = iota // topic exchange + bound queue
	queueStyle                     // default exchange, queue named after the topic
)

// rabbitEnv is what rabbit-family contenders connect to.
type rabbitEnv struct {
	url     string // direct to the node
	addr    string // the node's host:port
	admin   *amqp.Connection
	through string // the URL the publish and end-to-end runs dial instead of url ("": url); scenario 8's latency proxy
}

// dialURL is the URL the publish and end-to-end runs open contenders on.
func (e *rabbitEnv) dialURL() string {
	if e.through != "" {
		return e.through
	}
	return e.url
}

// declareSink makes topic publishable without consumers.
func (e *rabbitEnv) declareSink(style topoStyle, topic string) error {
	ch, err := e.admin.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	args := amqp.Table{"x-max-length-bytes": int64(sinkMaxBytes), "x-overflow": "drop-head"}
	if style == queueStyle {
		_, err = ch.QueueDeclare(topic, true, false, false, false, args)
		return err
	}
	if err := ch.ExchangeDeclare(topic, "topic", true, false, false, false, nil); err != nil {
		return err
	}
	if _, err := ch.QueueDeclare(topic+".sink", true, false, false, false, args); err != nil {
		return err
	}
	return ch.QueueBind(topic+".sink", "#", topic, false, nil)
}

// cleanup deletes whatever a run on topic declared.
func (e *rabbitEnv) cleanup(topic string) {
	ch, err := e.admin.Channel()
	if err != nil {
		return
	}
	defer ch.Close()
	for _, q := range []string{topic, topic + ".sink", topic + "." + benchGroup} {
		_, _ = ch.QueueDelete(q, false, false, false) // idempotent in RabbitMQ 3.x
	}
	_ = ch.ExchangeDelete(topic, false, false) // may fail (no such exchange): channel is discarded anyway
}

// ---- raw amqp091-go ----

type rawClient struct {
	url       string
	pipelined bool
	conn      *amqp.Connection
	ch        *amqp.Channel
}

func dialRaw(url string, pipelined bool) (*rawClient, error) {
	c := &rawClient{url: url, pipelined: pipelined}
	if err := c.dial(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *rawClient) dial() error {
	conn, err := amqp.DialConfig(c.url, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		_ = conn.Close()
		return err
	}
	c.conn, c.ch = conn, ch
	return nil
}

// reconnect is what an application on the raw client writes itself: the
// client has no recovery, so a dead connection is replaced by a new one.
func (c *rawClient) reconnect(ctx context.Context) error {
	if c.conn != nil && !c.conn.IsClosed() {
		return nil
	}
	return c.dial()
}

func (c *rawClient) publish(ctx context.Context, topic string, bodies [][]byte) error {
	pending := make([]*amqp.DeferredConfirmation, 0, len(bodies))
	for _, b := range bodies {
		dc, err := c.ch.PublishWithDeferredConfirmWithContext(ctx, topic, "k", true, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, Body: b})
		if err != nil {
			return err
		}
		if !c.pipelined {
			if err := waitConfirm(ctx, dc); err != nil {
				return err
			}
			continue
		}
		pending = append(pending, dc)
	}
	for _, dc := range pending {
		if err := waitConfirm(ctx, dc); err != nil {
			return err
		}
	}
	return nil
}

func waitConfirm(ctx context.Context, dc *amqp.DeferredConfirmation) error {
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("nacked")
	}
	return nil
}

func (c *rawClient) subscribe(ctx context.Context, topic string, fn func([]byte)) (func(), error) {
	ch, err := c.conn.Channel()
	if err != nil {
		return nil, err
	}
	q := topic + "." + benchGroup
	err = ch.ExchangeDeclare(topic, "topic", true, false, false, false, nil)
	if err == nil {
		// The queue type isobroker/rabbit declares for a group, so
		// that both clients make the server do the same work.
		_, err = ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
	}
	if err == nil {
		err = ch.QueueBind(q, "#", topic, false, nil)
	}
	if err == nil {
		err = ch.Qos(256, 0, false)
	}
	var ds <-chan amqp.Delivery
	if err == nil {
		ds, err = ch.Consume(q, "", false, false, false, false, nil)
	}
	if err != nil {
		_ = ch.Close()
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for d := range ds {
			fn(d.Body)
			_ = d.Ack(false)
		}
	}()
	return func() { _ = ch.Close(); <-done }, nil
}

func (c *rawClient) close(context.Context) error { return c.conn.Close() }

// ---- isobroker rabbit (and pubsub over it) ----

type ourRabbit struct{ b *rabbit.Broker }

func openOurRabbit(ctx context.Context, url string, opts ...rabbit.Option) (*ourRabbit, error) {
	b, err := rabbit.OpenURL(ctx, url, append([]rabbit.Option{rabbit.WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
	if err != nil {
		return nil, err
	}
	return &ourRabbit{b: b}, nil
}

func (c *ourRabbit) publish(ctx context.Context, topic string, bodies [][]byte) error {
	return c.b.Publish(ctx, topic, toMessages(bodies)...)
}

func toMessages(bodies [][]byte) []*broker.Message {
	ms := make([]*broker.Message, len(bodies))
	for i, b := range bodies {
		ms[i] = &broker.Message{Key: "k", Body: b}
	}
	return ms
}

func (c *ourRabbit) subscribe(ctx context.Context, topic string, fn func([]byte)) (func(), error) {
	s, err := c.b.Subscribe(ctx, topic, func(_ context.Context, d *broker.Delivery) error {
		fn(d.Body)
		return nil
	}, broker.Group(benchGroup))
	if err != nil {
		return nil, err
	}
	return func() { _ = s.Close(context.Background()) }, nil
}

func (c *ourRabbit) close(ctx context.Context) error { return c.b.Close(ctx) }

// watermillish is a Watermill publisher/subscriber pair: watermill-amqp's,
// or our pubsub backend over rabbit.
type watermillish struct {
	pub    message.Publisher
	newSub func() (message.Subscriber, error)
	closer func(context.Context) error
}

func (c *watermillish) publish(_ context.Context, topic string, bodies [][]byte) error {
	ms := make([]*message.Message, len(bodies))
	for i, b := range bodies {
		ms[i] = message.NewMessage(watermill.NewUUID(), b)
	}
	return c.pub.Publish(topic, ms...)
}

func (c *watermillish) subscribe(ctx context.Context, topic string, fn func([]byte)) (func(), error) {
	sub, err := c.newSub()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	msgs, err := sub.Subscribe(ctx, topic)
	if err != nil {
		cancel()
		_ = sub.Close()
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range msgs {
			fn(m.Payload)
			m.Ack()
		}
	}()
	return func() { cancel(); _ = sub.Close(); <-done }, nil
}

func (c *watermillish) close(ctx context.Context) error {
	err := c.pub.Close()
	if c.closer != nil {
		err = errors.Join(err, c.closer(ctx))
	}
	return err
}

func openWatermillAMQP(url string, confirm bool) (*watermillish, error) {
	cfg := wamqp.NewDurableQueueConfig(url)
	cfg.Publish.ConfirmDelivery = confirm
	logger := watermill.NopLogger{}
	pub, err := wamqp.NewPublisher(cfg, logger)
	if err != nil {
		return nil, err
	}
	return &watermillish{
		pub:    pub,
		newSub: func() (message.Subscriber, error) { return wamqp.NewSubscriber(cfg, logger) },
	}, nil
}

func openPubsubOverRabbit(ctx context.Context, url string) (*watermillish, error) {
	r, err := openOurRabbit(ctx, url)
	if err != nil {
		return nil, err
	}
	pub, err := pubsub.NewPublisher(r.b)
	if err != nil {
		_ = r.close(ctx)
		return nil, err
	}
	return &watermillish{
		pub:    pub,
		newSub: func() (message.Subscriber, error) { return pubsub.NewSubscriber(r.b, benchGroup) },
		closer: r.close,
	}, nil
}

// rabbitContenders lists the RabbitMQ contenders; the first is the reference.
func rabbitContenders(v versions) []*contender {
	raw := "amqp091-go " + v.amqp091
	wm := "watermill " + v.watermill + " + watermill-amqp " + v.watermillAMQP
	ours := "isobroker/rabbit " + v.ours
	return []*contender{
		{key: "raw-pipelined", label: raw + ", pipelined confirms", short: "raw pipelined", chart: "amqp091-go " + v.amqp091 + ", pipelined confirms", family: famRabbit, style: exchangeStyle,
			open: func(ctx context.Context, url string) (client, error) { return dialRaw(url, true) }},
		{key: "raw-each", label: raw + ", wait for each confirm", short: "raw wait-each", chart: "amqp091-go " + v.amqp091 + ", wait for each confirm", family: famRabbit, style: exchangeStyle,
			open: func(ctx context.Context, url string) (client, error) { return dialRaw(url, false) }},
		{key: "rabbit", label: ours, short: "isobroker rabbit", chart: "isobroker/rabbit", family: famRabbit, style: exchangeStyle, ours: true,
			open: func(ctx context.Context, url string) (client, error) { return openOurRabbit(ctx, url) }},
		{key: "wm-default", label: wm + ", default config (no confirms)", short: "watermill-amqp default", chart: "watermill-amqp " + v.watermillAMQP + ", default (no confirms)", family: famRabbit, style: queueStyle,
			note: "does not wait for publisher confirms: its publishes are not confirmed",
			open: func(ctx context.Context, url string) (client, error) { return openWatermillAMQP(url, false) }},
		{key: "wm-confirm", label: wm + ", ConfirmDelivery", short: "watermill-amqp confirms", chart: "watermill-amqp " + v.watermillAMQP + ", ConfirmDelivery", family: famRabbit, style: queueStyle,
			open: func(ctx context.Context, url string) (client, error) { return openWatermillAMQP(url, true) }},
		{key: "pubsub", label: "isobroker/pubsub " + v.ours + " (Watermill " + v.watermill + ") over isobroker/rabbit", short: "isobroker pubsub", chart: "isobroker/pubsub (Watermill) over rabbit", family: famRabbit, style: exchangeStyle, ours: true,
			open: func(ctx context.Context, url string) (client, error) { return openPubsubOverRabbit(ctx, url) }},
	}
}
