package driver

import (
	"fmt"

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
// its options (see NewSubscribeConfig). When replay is false
// any start position other than StartLatest is refused with
// broker.ErrUnsupported. Driver options are left for the adapter to check.
func CheckSubscribe(topic string, h broker.Handler, replay bool, opts ...broker.SubscribeOption) (broker.SubscribeConfig, error) {
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
	if !replay && cfg.Start.Kind != broker.StartLatest {
		return cfg, fmt.Errorf("start position %s: %w (this broker keeps no history for new subscriptions)", cfg.Start, broker.ErrUnsupported)
	}
	return cfg, nil
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
	return c, nil
}

// PrefetchOr returns c.Prefetch, or def when the subscriber left it at
// zero (the adapter's default).
func PrefetchOr(c broker.SubscribeConfig, def int) int {
	if c.Prefetch == 0 {
		return def
	}
	return c.Prefetch
}
