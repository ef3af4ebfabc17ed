package amqp10

import (
	"fmt"
	"time"
)

// Header is the header section of a message.
type Header struct {
	Durable       bool
	Priority      *uint8 // default 4
	TTL           uint32 // milliseconds; 0 = none
	FirstAcquirer bool
	DeliveryCount uint32
}

// AppendAMQP implements Marshaler.
func (h *Header) AppendAMQP(dst []byte) ([]byte, error) {
	var ttl any
	if h.TTL != 0 {
		ttl = h.TTL
	}
	return appendDescribedList(dst, DescHeader, []any{optFalse(h.Durable), optUint8(h.Priority), ttl, optFalse(h.FirstAcquirer), optZero(h.DeliveryCount)})
}

// Properties is the properties section of a message. Empty strings and zero
// times encode as null.
type Properties struct {
	MessageID          any
	UserID             []byte
	To                 string
	Subject            string
	ReplyTo            string
	CorrelationID      any
	ContentType        Symbol
	ContentEncoding    Symbol
	AbsoluteExpiryTime time.Time
	CreationTime       time.Time
	GroupID            string
	GroupSequence      *uint32
	ReplyToGroupID     string
}

// AppendAMQP implements Marshaler.
func (p *Properties) AppendAMQP(dst []byte) ([]byte, error) {
	return appendDescribedList(dst, DescProperties, []any{
		p.MessageID, optBinary(p.UserID), optString(p.To), optString(p.Subject), optString(p.ReplyTo),
		p.CorrelationID, optSymbol(p.ContentType), optSymbol(p.ContentEncoding),
		optTime(p.AbsoluteExpiryTime), optTime(p.CreationTime), optString(p.GroupID),
		optUint32(p.GroupSequence), optString(p.ReplyToGroupID),
	})
}

// RawSection is one encoded section of a decoded message.
type RawSection struct {
	Code  uint64 // descriptor code, e.g. DescMessageAnnotations
	Bytes []byte // the complete encoding, descriptor included
}

// Message is an AMQP message: its sections in decoded form. Decoding also
// records every section's exact bytes in Raw, so a message can be forwarded
// unchanged except for the sections a server rewrites.
type Message struct {
	Header                *Header
	DeliveryAnnotations   Map
	MessageAnnotations    Map
	Properties            *Properties
	ApplicationProperties Map
	Data                  [][]byte
	Sequence              []List
	Value                 any
	HasValue              bool
	Footer                Map

	Raw []RawSection
}

// AppendAMQP encodes the message's sections in the order the
// specification requires. Raw is ignored.
func (m *Message) AppendAMQP(dst []byte) ([]byte, error) {
	var err error
	if m.Header != nil {
		if dst, err = m.Header.AppendAMQP(dst); err != nil {
			return dst, err
		}
	}
	appendMapSection := func(code uint64, mp Map) {
		if mp == nil || err != nil {
			return
		}
		dst = appendUlong(append(dst, TypeDescribed), code)
		dst, err = appendMap(dst, mp)
	}
	appendMapSection(DescDeliveryAnnotations, m.DeliveryAnnotations)
	appendMapSection(DescMessageAnnotations, m.MessageAnnotations)
	if err != nil {
		return dst, err
	}
	if m.Properties != nil {
		if dst, err = m.Properties.AppendAMQP(dst); err != nil {
			return dst, err
		}
	}
	appendMapSection(DescApplicationProperties, m.ApplicationProperties)
	if err != nil {
		return dst, err
	}
	for _, d := range m.Data {
		dst = appendUlong(append(dst, TypeDescribed), DescData)
		dst = appendVariable(dst, TypeVbin8, TypeVbin32, d)
	}
	for _, s := range m.Sequence {
		dst = appendUlong(append(dst, TypeDescribed), DescAMQPSequence)
		if dst, err = appendList(dst, s); err != nil {
			return dst, err
		}
	}
	if m.HasValue {
		dst = appendUlong(append(dst, TypeDescribed), DescAMQPValue)
		if dst, err = AppendValue(dst, m.Value); err != nil {
			return dst, err
		}
	}
	appendMapSection(DescFooter, m.Footer)
	return dst, err
}

// Marshal encodes the message.
func (m *Message) Marshal() ([]byte, error) { return m.AppendAMQP(nil) }

// sectionRank orders sections; a decoded message must not go backwards.
func sectionRank(code uint64) int {
	switch code {
	case DescHeader:
		return 0
	case DescDeliveryAnnotations:
		return 1
	case DescMessageAnnotations:
		return 2
	case DescProperties:
		return 3
	case DescApplicationProperties:
		return 4
	case DescData, DescAMQPSequence, DescAMQPValue:
		return 5
	case DescFooter:
		return 6
	}
	return -1
}

// UnmarshalMessage decodes an encoded message.
func UnmarshalMessage(b []byte) (*Message, error) {
	m := &Message{}
	d := NewDecoder(b)
	last := -1
	var bodyKind uint64
	for d.Len() > 0 {
		start := d.Offset()
		v, err := d.ReadValue()
		if err != nil {
			return nil, fmt.Errorf("message section: %w", err)
		}
		dv, ok := v.(Described)
		if !ok {
			return nil, fmt.Errorf("%w: message section is %T, not described", ErrInvalid, v)
		}
		code, ok := dv.DescriptorCode()
		rank := sectionRank(code)
		if !ok || rank < 0 {
			return nil, fmt.Errorf("%w: unknown message section %v", ErrInvalid, dv.Descriptor)
		}
		if rank < last || (rank == last && rank != 5) {
			return nil, fmt.Errorf("%w: message section 0x%x out of order", ErrInvalid, code)
		}
		if rank == 5 {
			if bodyKind != 0 && (bodyKind != code || code == DescAMQPValue) {
				return nil, fmt.Errorf("%w: mixed or repeated body sections", ErrInvalid)
			}
			bodyKind = code
		}
		last = rank
		m.Raw = append(m.Raw, RawSection{Code: code, Bytes: b[start:d.Offset()]})
		if err := m.setSection(code, dv.Value); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Message) setSection(code uint64, v any) error {
	asMap := func() (Map, error) {
		switch mp := v.(type) {
		case Map:
			return mp, nil
		case nil:
			return Map{}, nil
		}
		return nil, fmt.Errorf("%w: section 0x%x holds %T, not a map", ErrInvalid, code, v)
	}
	var err error
	switch code {
	case DescHeader:
		l, _ := v.(List)
		if _, isList := v.(List); !isList && v != nil {
			return fmt.Errorf("%w: header holds %T", ErrInvalid, v)
		}
		f := fields{name: "header", l: l}
		h := &Header{Durable: f.boolAt(0), Priority: f.uint8Ptr(1), FirstAcquirer: f.boolAt(3)}
		h.TTL, _ = f.uint32At(2)
		h.DeliveryCount, _ = f.uint32At(4)
		m.Header = h
		return f.err()
	case DescDeliveryAnnotations:
		m.DeliveryAnnotations, err = asMap()
	case DescMessageAnnotations:
		m.MessageAnnotations, err = asMap()
	case DescApplicationProperties:
		m.ApplicationProperties, err = asMap()
	case DescFooter:
		m.Footer, err = asMap()
	case DescProperties:
		l, _ := v.(List)
		if _, isList := v.(List); !isList && v != nil {
			return fmt.Errorf("%w: properties holds %T", ErrInvalid, v)
		}
		f := fields{name: "properties", l: l}
		m.Properties = &Properties{
			MessageID:          f.get(0),
			UserID:             f.binaryAt(1),
			To:                 f.stringAt(2),
			Subject:            f.stringAt(3),
			ReplyTo:            f.stringAt(4),
			CorrelationID:      f.get(5),
			ContentType:        f.symbolAt(6),
			ContentEncoding:    f.symbolAt(7),
			AbsoluteExpiryTime: f.timeAt(8),
			CreationTime:       f.timeAt(9),
			GroupID:            f.stringAt(10),
			GroupSequence:      f.uint32Ptr(11),
			ReplyToGroupID:     f.stringAt(12),
		}
		return f.err()
	case DescData:
		b, ok := v.([]byte)
		if !ok {
			return fmt.Errorf("%w: data section holds %T", ErrInvalid, v)
		}
		m.Data = append(m.Data, b)
	case DescAMQPSequence:
		l, ok := v.(List)
		if !ok {
			return fmt.Errorf("%w: amqp-sequence holds %T", ErrInvalid, v)
		}
		m.Sequence = append(m.Sequence, l)
	case DescAMQPValue:
		m.Value, m.HasValue = v, true
	}
	return err
}
