package amqpfake

import (
	"fmt"
	"time"
)

// Property flag bits of the basic class content header, most significant
// first in wire order (AMQP 0-9-1 section 4.2.6.1 and the basic class).
const (
	flagContentType     = 1 << 15
	flagContentEncoding = 1 << 14
	flagHeaders         = 1 << 13
	flagDeliveryMode    = 1 << 12
	flagPriority        = 1 << 11
	flagCorrelationID   = 1 << 10
	flagReplyTo         = 1 << 9
	flagExpiration      = 1 << 8
	flagMessageID       = 1 << 7
	flagTimestamp       = 1 << 6
	flagType            = 1 << 5
	flagUserID          = 1 << 4
	flagAppID           = 1 << 3
	flagClusterID       = 1 << 2 // reserved, "cluster-id" in the 0-9 spec
	flagContinuation    = 1 << 0 // another property-flags word follows
)

// properties are the basic class content properties.
type properties struct {
	ContentType     string
	ContentEncoding string
	Headers         map[string]any
	DeliveryMode    uint8
	Priority        uint8
	CorrelationID   string
	ReplyTo         string
	Expiration      string
	MessageID       string
	Timestamp       time.Time
	Type            string
	UserID          string
	AppID           string
	ClusterID       string
}

// contentHeader is the decoded payload of a content header frame.
type contentHeader struct {
	class    uint16
	bodySize uint64
	props    properties
}

// decodeContentHeader parses a content header frame payload, decoding every
// property that is flagged present.
func decodeContentHeader(payload []byte) (contentHeader, error) {
	d := newDecoder(payload)
	h := contentHeader{class: d.short()}
	_ = d.short() // weight, always 0
	h.bodySize = d.longlong()
	flags := d.short()
	for w := flags; w&flagContinuation != 0 && d.err == nil; {
		// Further flag words carry no properties the basic class defines.
		w = d.short()
	}
	p := &h.props
	if flags&flagContentType != 0 {
		p.ContentType = d.shortstr()
	}
	if flags&flagContentEncoding != 0 {
		p.ContentEncoding = d.shortstr()
	}
	if flags&flagHeaders != 0 {
		p.Headers = d.table()
	}
	if flags&flagDeliveryMode != 0 {
		p.DeliveryMode = d.octet()
	}
	if flags&flagPriority != 0 {
		p.Priority = d.octet()
	}
	if flags&flagCorrelationID != 0 {
		p.CorrelationID = d.shortstr()
	}
	if flags&flagReplyTo != 0 {
		p.ReplyTo = d.shortstr()
	}
	if flags&flagExpiration != 0 {
		p.Expiration = d.shortstr()
	}
	if flags&flagMessageID != 0 {
		p.MessageID = d.shortstr()
	}
	if flags&flagTimestamp != 0 {
		p.Timestamp = time.Unix(int64(d.longlong()), 0)
	}
	if flags&flagType != 0 {
		p.Type = d.shortstr()
	}
	if flags&flagUserID != 0 {
		p.UserID = d.shortstr()
	}
	if flags&flagAppID != 0 {
		p.AppID = d.shortstr()
	}
	if flags&flagClusterID != 0 {
		p.ClusterID = d.shortstr()
	}
	if d.err != nil {
		return contentHeader{}, fmt.Errorf("amqpfake: content header: %w", d.err)
	}
	return h, nil
}

// encodeContentHeader builds a content header frame payload; a property is
// flagged present when it is not the zero value.
func encodeContentHeader(class uint16, bodySize uint64, p properties) ([]byte, error) {
	var flags uint16
	set := func(present bool, flag uint16) {
		if present {
			flags |= flag
		}
	}
	set(p.ContentType != "", flagContentType)
	set(p.ContentEncoding != "", flagContentEncoding)
	set(len(p.Headers) > 0, flagHeaders)
	set(p.DeliveryMode != 0, flagDeliveryMode)
	set(p.Priority != 0, flagPriority)
	set(p.CorrelationID != "", flagCorrelationID)
	set(p.ReplyTo != "", flagReplyTo)
	set(p.Expiration != "", flagExpiration)
	set(p.MessageID != "", flagMessageID)
	set(!p.Timestamp.IsZero(), flagTimestamp)
	set(p.Type != "", flagType)
	set(p.UserID != "", flagUserID)
	set(p.AppID != "", flagAppID)
	set(p.ClusterID != "", flagClusterID)

	e := &encoder{}
	e.short(class)
	e.short(0) // weight
	e.longlong(bodySize)
	e.short(flags)
	if flags&flagContentType != 0 {
		e.shortstr(p.ContentType)
	}
	if flags&flagContentEncoding != 0 {
		e.shortstr(p.ContentEncoding)
	}
	if flags&flagHeaders != 0 {
		if err := e.table(p.Headers); err != nil {
			return nil, fmt.Errorf("amqpfake: headers: %w", err)
		}
	}
	if flags&flagDeliveryMode != 0 {
		e.octet(p.DeliveryMode)
	}
	if flags&flagPriority != 0 {
		e.octet(p.Priority)
	}
	if flags&flagCorrelationID != 0 {
		e.shortstr(p.CorrelationID)
	}
	if flags&flagReplyTo != 0 {
		e.shortstr(p.ReplyTo)
	}
	if flags&flagExpiration != 0 {
		e.shortstr(p.Expiration)
	}
	if flags&flagMessageID != 0 {
		e.shortstr(p.MessageID)
	}
	if flags&flagTimestamp != 0 {
		e.longlong(uint64(p.Timestamp.Unix()))
	}
	if flags&flagType != 0 {
		e.shortstr(p.Type)
	}
	if flags&flagUserID != 0 {
		e.shortstr(p.UserID)
	}
	if flags&flagAppID != 0 {
		e.shortstr(p.AppID)
	}
	if flags&flagClusterID != 0 {
		e.shortstr(p.ClusterID)
	}
	return e.b, nil
}
