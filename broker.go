// Package broker is the portable contract of isobroker: one Broker interface
// over RabbitMQ, Azure Event Hubs and an in-memory implementation.
//
// Its defining promise: every Broker instance owns all of its connection
// state. Closing, killing or hanging one instance never blocks, slows or
// breaks another, and no call waits past its context.
//
// Adapters live in sub-packages (mem, rabbit, eventhubs); the registry
// package opens them from URLs; brokertest is the conformance suite every
// adapter passes, and driver the toolkit adapters build on (this package
// holds only what users call).
package broker

import (
	"context"
	"time"
)

// Broker publishes messages to topics and delivers them to subscribers.
//
// All methods are safe for concurrent use. Every blocking method obeys its
// context: it returns no later than ctx ends, whatever the network or any
// other Broker instance is doing. After Close has been called, Publish and
// Subscribe return ErrClosed at once.
type Broker interface {
	// Publish sends msgs to topic and returns nil only after the broker has
	// taken responsibility for every message (RabbitMQ: publisher confirm;
	// Event Hubs: accepted disposition; mem: enqueued). Otherwise it returns
	// an error, and the caller cannot assume any message of the call was
	// dropped or kept: republishing is safe under the at-least-once
	// contract. Messages of one call are sent in order. Publish blocks while
	// the broker applies back-pressure, up to ctx. It does not modify msgs.
	Publish(ctx context.Context, topic string, msgs ...*Message) error

	// Subscribe starts delivering topic's messages to h and returns once the
	// subscription is established (queues declared, links attached), or
	// with an error when ctx ends first. Delivery continues until the
	// returned Subscription is closed, ctx is done, or the Broker is closed;
	// it survives connection loss where the adapter recovers.
	Subscribe(ctx context.Context, topic string, h Handler, opts ...SubscribeOption) (Subscription, error)

	// Close stops accepting work, waits for in-flight publishes and running
	// handlers until ctx ends, then releases this instance's resources —
	// and only those. It returns nil after a clean drain, or an error
	// wrapping ctx.Err() if ctx ended first (resources are released either
	// way; a handler that ignores its context may still be running). Calling
	// Close again returns ErrClosed.
	Close(ctx context.Context) error

	// Capabilities reports what this broker guarantees. It never blocks.
	Capabilities() Capabilities

	// State reports the connection state now. It never blocks.
	State() State

	// WatchState returns a channel that receives every later state change
	// until ctx ends or the broker reaches StateClosed; then the channel is
	// closed. Sends never block the broker: if the reader falls more than a
	// few changes behind, the oldest unread changes are dropped, and the
	// final StateClosed change is always delivered.
	WatchState(ctx context.Context) <-chan StateChange
}

// Message is what is published and what is delivered.
//
// On Publish only ID, Key, Body, Headers and ContentType are used; the
// broker copies what it needs, so the caller may reuse the Message after
// Publish returns. On delivery Metadata is filled in too.
type Message struct {
	// ID identifies the message end to end (RabbitMQ message-id, Event Hubs
	// message-id). It is delivered as given; an empty ID stays empty.
	ID string
	// Key orders and routes: RabbitMQ routing key, Event Hubs partition key,
	// mem ordering key. Messages with the same key are delivered in publish
	// order where Capabilities.PerKeyOrdering is true.
	Key string
	// Body is the payload. It may be empty.
	Body []byte
	// Headers are string properties carried with the message.
	Headers map[string]string
	// ContentType is the MIME type of Body, if known.
	ContentType string

	// Metadata describes the delivery; set by the broker on receipt and
	// ignored by Publish.
	Metadata Metadata
}

// Metadata describes where a delivered message came from. Fields a broker
// does not know are left zero.
type Metadata struct {
	// Topic the message was published to.
	Topic string
	// Partition is the Event Hubs partition id.
	Partition string
	// Offset is the Event Hubs offset of the event in its partition.
	Offset string
	// SequenceNumber is the Event Hubs sequence number (or the mem queue
	// sequence) of the message.
	SequenceNumber int64
	// EnqueuedAt is when the broker stored the message.
	EnqueuedAt time.Time
	// Redelivered is true when the message was delivered before and not
	// acknowledged (nacked, or its consumer was lost).
	Redelivered bool
	// DeliveryCount counts earlier deliveries of this message where the
	// broker tracks it (0 on the first delivery or when unknown).
	DeliveryCount int
}

// Delivery is one message handed to a Handler.
type Delivery struct {
	*Message
	// Group is the subscription group the delivery belongs to ("" for a
	// private subscription).
	Group string
}

// Handler processes one delivery. Returning nil acknowledges the message;
// returning an error negatively acknowledges it, and the broker redelivers
// it where Capabilities.Redelivery is true. A panic in a handler is
// recovered and treated as an error. Closing the subscription or the broker
// lets running handlers finish; their ctx is cancelled when the Close
// context ends first, or when the Subscribe context ends. Handlers should
// return promptly then.
type Handler func(ctx context.Context, d *Delivery) error

// Subscription is a running subscription.
type Subscription interface {
	// Close stops delivery, waits for running handlers until ctx ends, and
	// releases the subscription's resources. It never affects other
	// subscriptions, even on the same topic and group. It returns nil after
	// a clean stop, an error wrapping ctx.Err() if handlers were still
	// running when ctx ended, and ErrClosed when called again.
	Close(ctx context.Context) error
	// Done is closed when the subscription has ended for any reason.
	Done() <-chan struct{}
	// Err reports why the subscription ended: nil while it runs or after
	// Close, ctx.Err() if its Subscribe context ended, ErrClosed if the
	// broker closed, or the fatal error that stopped it.
	Err() error
}

// Capabilities states what a Broker guarantees, so that portable code and
// the conformance suite can adapt instead of guessing.
type Capabilities struct {
	// Redelivery: a nacked message (handler error) is delivered again.
	Redelivery bool
	// CompetingConsumers: subscriptions sharing a Group split the messages
	// between them instead of each receiving all of them.
	CompetingConsumers bool
	// PerKeyOrdering: messages with the same Key reach a group's handlers
	// in publish order, one at a time, even with Concurrency > 1.
	PerKeyOrdering bool
	// Replay: StartAt positions other than StartLatest are honoured (the
	// broker retains history).
	Replay bool
	// Persistent: accepted messages survive a broker (server) restart.
	Persistent bool
	// MaxMessageSize is the largest Body (bytes) Publish accepts; 0 means
	// no limit beyond memory.
	MaxMessageSize int
	// DeadLetter: MaxDeliveries and DeadLetterTo are honoured, and a
	// subscriber that sets neither gets DefaultMaxDeliveries into
	// DeadLetterTopic(topic).
	DeadLetter bool
	// RedeliveryDelay: RedeliveryDelay and RedeliveryBackoff are honoured.
	RedeliveryDelay bool
}
