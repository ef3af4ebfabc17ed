package broker

import "fmt"

// CheckPublish validates the arguments of a Publish call, for adapters: a
// non-empty topic, no nil message, and no Body larger than maxBody bytes
// (0 means no limit). The error wraps ErrTopicRequired, ErrNilMessage or
// ErrMessageTooLarge and names the offending message; adapters call it
// before sending anything, so a bad call sends nothing.
func CheckPublish(topic string, msgs []*Message, maxBody int) error {
	if topic == "" {
		return ErrTopicRequired
	}
	for i, m := range msgs {
		if m == nil {
			return fmt.Errorf("message %d: %w", i, ErrNilMessage)
		}
		if maxBody > 0 && len(m.Body) > maxBody {
			return fmt.Errorf("message %d body is %d bytes, limit %d: %w", i, len(m.Body), maxBody, ErrMessageTooLarge)
		}
	}
	return nil
}

// CheckSubscribe validates the arguments of a Subscribe call and resolves
// its options (see NewSubscribeConfig), for adapters. When replay is false
// any start position other than StartLatest is refused with
// ErrUnsupported. Driver options are left for the adapter to check.
func CheckSubscribe(topic string, h Handler, replay bool, opts ...SubscribeOption) (SubscribeConfig, error) {
	if topic == "" {
		return SubscribeConfig{}, ErrTopicRequired
	}
	if h == nil {
		return SubscribeConfig{}, ErrNilHandler
	}
	cfg, err := NewSubscribeConfig(opts...)
	if err != nil {
		return cfg, err
	}
	if !replay && cfg.Start.Kind != StartLatest {
		return cfg, fmt.Errorf("start position %s: %w (this broker keeps no history for new subscriptions)", cfg.Start, ErrUnsupported)
	}
	return cfg, nil
}
