package eventhubs

import (
	"fmt"
	"maps"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/isobroker/broker"
)

// Wire names.
const (
	annPartitionKey   = "x-opt-partition-key"
	annSequenceNumber = "x-opt-sequence-number"
	annOffset         = "x-opt-offset"
	annEnqueuedTime   = "x-opt-enqueued-time"
	propEpoch         = "com.microsoft:epoch"
	propReceiverName  = "com.microsoft:receiver-name"
	capGeoReplication = "com.microsoft:georeplication"

	// batchFormat is the message format of an Event Hubs batch.
	batchFormat = 0x80013700
)

// PartitionIDHeader is the message header convention for sending to one
// partition: a published Message whose Headers hold this key goes to that
// partition id (target "<hub>/Partitions/<id>") instead of letting the
// service choose one or hash Message.Key. The header itself is not sent.
// A message with both this header and a Key is refused with
// broker.ErrInvalidOption, as the service would refuse it.
const PartitionIDHeader = "eventhubs-partition-id"

// event is one encoded event of a Publish call.
type event struct {
	index     int    // position in the call
	key       string // partition key
	partition string // "" = hub
	props     *amqp.MessageProperties
	enc       []byte // the encoded AMQP message
}

// encodeEvent encodes m as an AMQP message.
func encodeEvent(i int, m *broker.Message) (event, error) {
	ev := event{index: i, key: m.Key}
	am := &amqp.Message{Data: [][]byte{m.Body}}
	if m.Body == nil {
		am.Data = [][]byte{{}}
	}
	if m.ID != "" || m.ContentType != "" {
		am.Properties = &amqp.MessageProperties{}
		if m.ID != "" {
			am.Properties.MessageID = m.ID
		}
		if m.ContentType != "" {
			ct := m.ContentType
			am.Properties.ContentType = &ct
		}
		ev.props = &amqp.MessageProperties{MessageID: am.Properties.MessageID}
	}
	if len(m.Headers) > 0 {
		am.ApplicationProperties = make(map[string]any, len(m.Headers))
		for k, v := range m.Headers {
			if k == PartitionIDHeader {
				ev.partition = v
				continue
			}
			am.ApplicationProperties[k] = v
		}
		if ev.partition != "" && ev.key != "" {
			return ev, fmt.Errorf("message %d has both a Key and the %s header: %w", i, PartitionIDHeader, broker.ErrInvalidOption)
		}
		if _, ok := m.Headers[PartitionIDHeader]; ok && ev.partition == "" {
			return ev, fmt.Errorf("message %d has an empty %s header: %w", i, PartitionIDHeader, broker.ErrInvalidOption)
		}
	}
	if m.Key != "" {
		am.Annotations = amqp.Annotations{annPartitionKey: m.Key}
	}
	enc, err := am.MarshalBinary()
	if err != nil {
		return ev, fmt.Errorf("message %d: encoding: %w", i, err)
	}
	ev.enc = enc
	return ev, nil
}

// target is the sender address of ev.
func (ev *event) target(hub string) string {
	if ev.partition != "" {
		return hub + "/Partitions/" + ev.partition
	}
	return hub
}

// envelope is the outer message of a batch starting with first, without
// its data sections.
func envelope(first *event) *amqp.Message {
	out := &amqp.Message{Format: batchFormat}
	if first.props != nil {
		p := *first.props
		out.Properties = &p
	}
	if first.key != "" {
		out.Annotations = amqp.Annotations{annPartitionKey: first.key}
	}
	return out
}

// dataOverhead bounds the bytes a data section adds around n payload
// bytes (descriptor 3, vbin32 constructor and length 5).
const dataOverhead = 8

// batchOverhead is the encoding overhead of a one-event batch around the
// Body of an event without ID, key or headers.
func batchOverhead() int {
	const n = 300 // above 255, so both sizes use vbin32
	ev, err := encodeEvent(0, &broker.Message{Body: make([]byte, n)})
	if err != nil {
		return 64
	}
	out := envelope(&ev)
	out.Data = [][]byte{ev.enc}
	b, err := out.MarshalBinary()
	if err != nil {
		return 64
	}
	return len(b) - n
}

// decodeEvent converts a received event.
func decodeEvent(m *amqp.Message, hub, partition string) *broker.Message {
	out := &broker.Message{Metadata: broker.Metadata{Topic: hub, Partition: partition}}
	switch {
	case len(m.Data) == 1:
		out.Body = m.Data[0]
	case len(m.Data) > 1:
		for _, d := range m.Data {
			out.Body = append(out.Body, d...)
		}
	default:
		switch v := m.Value.(type) {
		case []byte:
			out.Body = v
		case string:
			out.Body = []byte(v)
		}
	}
	if p := m.Properties; p != nil {
		if p.MessageID != nil {
			out.ID = idString(p.MessageID)
		}
		if p.ContentType != nil {
			out.ContentType = *p.ContentType
		}
	}
	if len(m.ApplicationProperties) > 0 {
		out.Headers = make(map[string]string, len(m.ApplicationProperties))
		for k, v := range m.ApplicationProperties {
			if s, ok := v.(string); ok {
				out.Headers[k] = s
			} else {
				out.Headers[k] = fmt.Sprint(v)
			}
		}
	}
	for k, v := range m.Annotations {
		var name string
		switch k := k.(type) {
		case amqp.Symbol:
			name = string(k)
		case string:
			name = k
		default:
			continue
		}
		switch name {
		case annPartitionKey:
			if s, ok := v.(string); ok {
				out.Key = s
			}
		case annSequenceNumber:
			out.Metadata.SequenceNumber, _ = toInt64(v)
		case annOffset:
			switch o := v.(type) {
			case string:
				out.Metadata.Offset = o
			default:
				out.Metadata.Offset = fmt.Sprint(o)
			}
		case annEnqueuedTime:
			if t, ok := v.(time.Time); ok {
				out.Metadata.EnqueuedAt = t
			}
		}
	}
	return out
}

func idString(v any) string {
	switch id := v.(type) {
	case string:
		return id
	case []byte:
		return string(id)
	case amqp.UUID:
		return id.String()
	}
	return fmt.Sprint(v)
}

// clone copies a delivered message for one handler call.
func clone(m *broker.Message) *broker.Message {
	c := *m
	c.Headers = maps.Clone(m.Headers)
	return &c
}
