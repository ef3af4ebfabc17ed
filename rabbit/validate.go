package rabbit

import (
	"fmt"
	"unicode/utf8"

	"github.com/isobroker/broker"
)

// AMQP 0-9-1 carries names, routing keys, message IDs, content types and
// table keys as short strings (at most 255 bytes), and a message's
// properties in one content-header frame, which may not exceed the
// connection's frame size. amqp091-go fails to encode a field over such a
// bound only when it writes the frame, and then shuts the whole connection
// down, so every bound is checked here, before anything of a call is sent:
// a bad message fails alone, with an error naming the field.

// maxShortString is AMQP 0-9-1's bound on a short string.
const maxShortString = 255

// headerFrameOverhead is what a content header frame needs besides the
// properties: frame header and end (8), class, weight, body size and
// property flags (14); with room to spare.
const headerFrameOverhead = 64

// checkName checks an exchange or queue name.
func checkName(what, name string) error {
	if len(name) > maxShortString {
		return fmt.Errorf("%w: %s %.20q… is %d bytes, AMQP 0-9-1 allows %d", broker.ErrInvalidOption, what, name, len(name), maxShortString)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: %s %q is not valid UTF-8", broker.ErrInvalidOption, what, name)
	}
	return nil
}

// checkShort checks one short-string field of message i.
func checkShort(i int, field, v string) error {
	if len(v) > maxShortString {
		return fmt.Errorf("message %d: %w: %s is %d bytes, AMQP 0-9-1 allows %d", i, broker.ErrInvalidOption, field, len(v), maxShortString)
	}
	return nil
}

// checkPublishFields checks everything of a Publish call that AMQP 0-9-1
// bounds and returns the largest encoded size of a message's properties,
// to be compared with the connection's frame size.
func checkPublishFields(msgs []*broker.Message) (int, error) {
	largest := 0
	for i, m := range msgs {
		if err := checkShort(i, "key (routing key)", m.Key); err != nil {
			return 0, err
		}
		if err := checkShort(i, "ID (message-id)", m.ID); err != nil {
			return 0, err
		}
		if err := checkShort(i, "content type", m.ContentType); err != nil {
			return 0, err
		}
		// Short strings: content type, message id (1 + n each);
		// delivery mode (1); the headers table (4 + entries); the app-id.
		size := 1 + len(m.ContentType) + 1 + len(m.ID) + 1 + 4
		for k, v := range m.Headers {
			if k == "" {
				return 0, fmt.Errorf("message %d: %w: empty header name", i, broker.ErrInvalidOption)
			}
			if len(k) > maxShortString {
				return 0, fmt.Errorf("message %d: %w: header name %.20q… is %d bytes, AMQP 0-9-1 allows %d",
					i, broker.ErrInvalidOption, k, len(k), maxShortString)
			}
			size += 1 + len(k) + 1 + 4 + len(v)
		}
		size += 1 + len(stampPrefix) + 20 // the app-id stamp
		largest = max(largest, size)
	}
	return largest, nil
}

// checkFrame checks that properties of propsSize bytes fit the
// connection's frame size.
func checkFrame(propsSize, frameSize int) error {
	if frameSize > 0 && propsSize+headerFrameOverhead > frameSize {
		return fmt.Errorf("%w: the largest message's properties (ID, content type and headers) take %d bytes, more than the connection's frame size %d allows",
			broker.ErrInvalidOption, propsSize, frameSize)
	}
	return nil
}
