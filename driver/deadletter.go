package driver

import (
	"maps"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/internal/redact"
)

// DeadLetter returns the message to publish to the dead-letter topic for
// d, which failed deliveries times on topic in group with last as its
// last error: ID, Key, Body, Headers and ContentType as delivered (Body
// and Headers copied), plus the broker.HeaderOriginalTopic,
// HeaderOriginalGroup, HeaderDeliveryCount and HeaderLastError headers.
// The error text is masked with the project's one redaction rule and cut
// to broker.MaxLastErrorBytes on a rune boundary.
func DeadLetter(d *broker.Delivery, topic, group string, deliveries int, last error) *broker.Message {
	m := &broker.Message{
		ID:          d.ID,
		Key:         d.Key,
		Body:        append([]byte(nil), d.Body...),
		ContentType: d.ContentType,
		Headers:     maps.Clone(d.Headers),
	}
	if m.Headers == nil {
		m.Headers = make(map[string]string, 4)
	}
	m.Headers[broker.HeaderOriginalTopic] = topic
	m.Headers[broker.HeaderOriginalGroup] = group
	m.Headers[broker.HeaderDeliveryCount] = strconv.Itoa(deliveries)
	text := "<nil>"
	if last != nil {
		text = redact.Target(last.Error())
	}
	m.Headers[broker.HeaderLastError] = truncate(text, broker.MaxLastErrorBytes)
	return m
}

// truncate cuts s to at most n bytes without splitting a rune.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// RedeliveryDelayOf is how long a message that failed its delivery n
// (1-based) waits before it is delivered again under c: nothing without
// a redelivery option, exactly the delay of RedeliveryDelay, and Backoff's
// jittered step n for RedeliveryBackoff.
func RedeliveryDelayOf(c broker.SubscribeConfig, n int) time.Duration {
	r := c.Redelivery
	switch {
	case r.Initial <= 0:
		return 0
	case r.Max == r.Initial:
		return r.Initial
	}
	return BackoffDelay(r, n)
}
