package broker

import "time"

// Poison messages: a message whose handler keeps failing is redelivered a
// bounded number of times and then moved to a dead-letter topic, where it
// waits for someone to look at it, instead of looping for ever. Adapters
// say in Capabilities.DeadLetter and Capabilities.RedeliveryDelay whether
// they honour these options; one that does not refuses them at Subscribe
// with ErrUnsupported.

// DefaultMaxDeliveries is how many failed deliveries a message gets when
// the subscriber sets no MaxDeliveries: 20, the delivery limit RabbitMQ
// 4.0 gave quorum queues by default. A user who sets nothing is protected
// from a hot loop without losing a message to one unlucky failure.
const DefaultMaxDeliveries = 20

// NoDeliveryLimit, as SubscribeConfig.MaxDeliveries, redelivers a failing
// message for as long as the subscription runs (the behaviour before
// dead-lettering existed). Set it with UnlimitedDeliveries; it is far from
// any number a mistake would give MaxDeliveries.
const NoDeliveryLimit = -1 << 31

// DeadLetterSuffix makes the default dead-letter topic of a topic: see
// DeadLetterTopic.
const DeadLetterSuffix = ".dead-letter"

// DeadLetterTopic is where a topic's messages are dead-lettered unless the
// subscriber names another topic with DeadLetterTo: topic + ".dead-letter".
func DeadLetterTopic(topic string) string { return topic + DeadLetterSuffix }

// DeadLetterGroup is the group in which a dead-letter topic keeps its
// messages until they are read: subscribe to the dead-letter topic with
// Group(DeadLetterGroup) to read them (adapters whose brokers drop what
// no group holds create it with the first dead-lettered message, so that
// none is dropped for want of a subscriber; an Event Hubs hub keeps every
// event for its retention period, and its consumer groups are made by the
// operator, see package eventhubs).
const DeadLetterGroup = "kept"

// Headers added to a dead-lettered message. Everything else — ID, Key,
// Body, Headers and ContentType — is kept as it was published.
const (
	// HeaderOriginalTopic is the topic the message was published to.
	HeaderOriginalTopic = "x-isobroker-original-topic"
	// HeaderOriginalGroup is the group whose handler gave up on it ("" for a
	// private subscription).
	HeaderOriginalGroup = "x-isobroker-original-group"
	// HeaderDeliveryCount is how many deliveries failed, in decimal.
	HeaderDeliveryCount = "x-isobroker-delivery-count"
	// HeaderLastError is the last handler error's text, at most
	// MaxLastErrorBytes bytes, with anything that looks like a password or
	// key in a URL or connection string masked.
	HeaderLastError = "x-isobroker-last-error"
)

// MaxLastErrorBytes bounds HeaderLastError.
const MaxLastErrorBytes = 512

// MaxDeliveries bounds the deliveries of one message: after n failed
// deliveries (the handler returned an error or panicked, or the consumer
// was lost while handling it, where the broker counts that) the message
// is dead-lettered instead of delivered again. n must be at least 1
// (Subscribe refuses a negative n; 0 is the default, DefaultMaxDeliveries).
func MaxDeliveries(n int) SubscribeOption {
	return func(c *SubscribeConfig) { c.MaxDeliveries = n }
}

// UnlimitedDeliveries turns dead-lettering off: a failing message is
// redelivered for as long as the subscription runs.
func UnlimitedDeliveries() SubscribeOption {
	return func(c *SubscribeConfig) { c.MaxDeliveries = NoDeliveryLimit }
}

// DeadLetterTo names the topic (of the same broker) that receives this
// subscription's dead-lettered messages, instead of DeadLetterTopic(topic).
func DeadLetterTo(topic string) SubscribeOption {
	return func(c *SubscribeConfig) { c.DeadLetterTopic = topic }
}

// RedeliveryDelay makes a failed message come back after d instead of at
// once; the subscription's other messages go on meanwhile where the broker
// allows it (not those behind it with the same key, where the broker
// orders by key).
func RedeliveryDelay(d time.Duration) SubscribeOption {
	return func(c *SubscribeConfig) { c.Redelivery = Backoff{Initial: d, Max: d} }
}

// RedeliveryBackoff makes the delay before each redelivery grow: the
// delay before redelivery n is Backoff's step n (Initial×2^(n−1), capped
// at Max), with the jitter Backoff describes.
func RedeliveryBackoff(b Backoff) SubscribeOption {
	return func(c *SubscribeConfig) { c.Redelivery = b }
}
