package driver

import (
	"fmt"
	"math"
	"time"

	"github.com/isobroker/broker"
)

// CheckPublish validates the arguments of a Publish call: a
// non-empty topic, no nil message, and no Body larger than maxBody bytes
// (0 means no limit). The error wraps broker.ErrTopicRequired, broker.ErrNilMessage or
// broker.ErrMessageTooLarge and names the offending message; adapters call it
// before sending anything, so a bad call sends nothing.
func CheckPublish(topic string, msgs []*broker.Message, maxBody int) error {
	if topic == "" {
		return broker.ErrTopicRequired
	}
	for i, m := range msgs {
		if m == nil {
			return fmt.Errorf("message %d: %w", i, broker.ErrNilMessage)
		}
		if maxBody > 0 && len(m.Body) > maxBody {
			return fmt.Errorf("message %d body is %d bytes, limit %d: %w", i, len(m.Body), maxBody, broker.ErrMessageTooLarge)
		}
	}
	return nil
}

// CheckSubscribe validates the arguments of a Subscribe call and resolves
// its options (see NewSubscribeConfig), then refuses with
// broker.ErrUnsupported, naming the option, what caps (the adapter's
// Capabilities) says it does not honour: a start position other than
// latest without Replay, MaxDeliveries, UnlimitedDeliveries or
// DeadLetterTo without DeadLetter, a redelivery delay without
// RedeliveryDelay. A dead-letter topic equal to topic is ErrInvalidOption.
// Driver options are left for the adapter to check.
func CheckSubscribe(topic string, h broker.Handler, caps broker.Capabilities, opts ...broker.SubscribeOption) (broker.SubscribeConfig, error) {
	if topic == "" {
		return broker.SubscribeConfig{}, broker.ErrTopicRequired
	}
	if h == nil {
		return broker.SubscribeConfig{}, broker.ErrNilHandler
	}
	cfg, err := NewSubscribeConfig(opts...)
	if err != nil {
		return cfg, err
	}
	return cfg, checkSupported(topic, cfg, caps)
}

// NewSubscribeConfig applies opts over the defaults and validates the
// result. The error wraps broker.ErrInvalidOption and names the bad option.
func NewSubscribeConfig(opts ...broker.SubscribeOption) (broker.SubscribeConfig, error) {
	c := broker.SubscribeConfig{Concurrency: 1}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.Concurrency < 1 {
		return c, fmt.Errorf("%w: concurrency %d, want >= 1", broker.ErrInvalidOption, c.Concurrency)
	}
	if c.Prefetch < 0 {
		return c, fmt.Errorf("%w: prefetch %d, want >= 1", broker.ErrInvalidOption, c.Prefetch)
	}
	if err := c.Start.Validate(); err != nil {
		return c, err
	}
	if c.MaxDeliveries < 0 && c.MaxDeliveries != broker.NoDeliveryLimit {
		return c, fmt.Errorf("%w: max deliveries %d, want >= 1 (or UnlimitedDeliveries)", broker.ErrInvalidOption, c.MaxDeliveries)
	}
	if r := c.Redelivery; r.Initial < 0 || r.Max < 0 || (r.Max > 0 && r.Max < r.Initial) || (r.Initial == 0 && r.Max > 0) {
		return c, fmt.Errorf("%w: redelivery delay %v..%v, want 0 <= Initial <= Max", broker.ErrInvalidOption, r.Initial, r.Max)
	}
	return c, nil
}

// checkSupported is CheckSubscribe's check of c against caps. A
// dead-letter topic equal to topic is refused because a message would come
// back to the subscription that gave up on it.
func checkSupported(topic string, c broker.SubscribeConfig, caps broker.Capabilities) error {
	if !caps.Replay && c.Start.Kind != broker.StartLatest {
		return fmt.Errorf("start position %s: %w (this broker keeps no history for new subscriptions)", c.Start, broker.ErrUnsupported)
	}
	if !caps.DeadLetter && (c.MaxDeliveries != 0 || c.DeadLetterTopic != "") {
		return fmt.Errorf("max deliveries / dead-letter topic: %w by this broker (Capabilities.DeadLetter is false)", broker.ErrUnsupported)
	}
	if !caps.RedeliveryDelay && c.Redelivery != (broker.Backoff{}) {
		return fmt.Errorf("redelivery delay: %w by this broker (Capabilities.RedeliveryDelay is false)", broker.ErrUnsupported)
	}
	if c.DeadLetterTopic != "" && c.DeadLetterTopic == topic {
		return fmt.Errorf("%w: dead-letter topic %q is the subscription's own topic", broker.ErrInvalidOption, topic)
	}
	return nil
}

// MaxDeliveriesOr is c.MaxDeliveries resolved: DefaultMaxDeliveries when
// unset, 0 for NoDeliveryLimit (no bound), the subscriber's n otherwise.
func MaxDeliveriesOr(c broker.SubscribeConfig) int {
	switch c.MaxDeliveries {
	case 0:
		return broker.DefaultMaxDeliveries
	case broker.NoDeliveryLimit:
		return 0
	}
	return c.MaxDeliveries
}

// DeadLetterTopicOf is where topic's subscription c dead-letters.
func DeadLetterTopicOf(topic string, c broker.SubscribeConfig) string {
	if c.DeadLetterTopic != "" {
		return c.DeadLetterTopic
	}
	return broker.DeadLetterTopic(topic)
}

// PrefetchForRoundTrip is the read-ahead (prefetch, link credit) that
// keeps rate messages a second flowing over a round trip rtt, since a
// consumer has at most its read-ahead in flight: rate × rtt, at least
// floor and at most ceiling (or floor, if that is higher). Adapters apply
// it when the subscriber gave no broker.Prefetch.
func PrefetchForRoundTrip(floor int, rtt time.Duration, rate float64, ceiling int) int {
	n := int(math.Ceil(rtt.Seconds() * rate))
	return max(floor, min(n, ceiling))
}

// PrefetchOr returns c.Prefetch, or def when the subscriber left it at
// zero (the adapter's default).
func PrefetchOr(c broker.SubscribeConfig, def int) int {
	if c.Prefetch == 0 {
		return def
	}
	return c.Prefetch
}
