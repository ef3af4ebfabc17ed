package amqp10

import (
	"errors"
	"fmt"
)

// Format codes of the AMQP 1.0 type system (section 1.6 of the specification).
const (
	TypeDescribed  byte = 0x00
	TypeNull       byte = 0x40
	TypeTrue       byte = 0x41
	TypeFalse      byte = 0x42
	TypeUint0      byte = 0x43
	TypeUlong0     byte = 0x44
	TypeList0      byte = 0x45
	TypeUbyte      byte = 0x50
	TypeByte       byte = 0x51
	TypeSmallUint  byte = 0x52
	TypeSmallUlong byte = 0x53
	TypeSmallInt   byte = 0x54
	TypeSmallLong  byte = 0x55
	TypeBoolean    byte = 0x56
	TypeUshort     byte = 0x60
	TypeShort      byte = 0x61
	TypeUint       byte = 0x70
	TypeInt        byte = 0x71
	TypeFloat      byte = 0x72
	TypeChar       byte = 0x73
	TypeDecimal32  byte = 0x74
	TypeUlong      byte = 0x80
	TypeLong       byte = 0x81
	TypeDouble     byte = 0x82
	TypeTimestamp  byte = 0x83
	TypeDecimal64  byte = 0x84
	TypeDecimal128 byte = 0x94
	TypeUUID       byte = 0x98
	TypeVbin8      byte = 0xa0
	TypeStr8       byte = 0xa1
	TypeSym8       byte = 0xa3
	TypeVbin32     byte = 0xb0
	TypeStr32      byte = 0xb1
	TypeSym32      byte = 0xb3
	TypeList8      byte = 0xc0
	TypeMap8       byte = 0xc1
	TypeList32     byte = 0xd0
	TypeMap32      byte = 0xd1
	TypeArray8     byte = 0xe0
	TypeArray32    byte = 0xf0
)

// Symbol is an AMQP symbol: an ASCII string used for names and conditions.
type Symbol string

// Char is an AMQP char: a single UTF-32 code point.
type Char rune

// UUID is an AMQP uuid (RFC 4122 bytes, network order).
type UUID [16]byte

// String formats u in the canonical 8-4-4-4-12 form.
func (u UUID) String() string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// Decimal32 holds the raw IEEE 754 decimal32 bytes of an AMQP decimal32.
type Decimal32 [4]byte

// Decimal64 holds the raw IEEE 754 decimal64 bytes of an AMQP decimal64.
type Decimal64 [8]byte

// Decimal128 holds the raw IEEE 754 decimal128 bytes of an AMQP decimal128.
type Decimal128 [16]byte

// List is an AMQP list: a sequence of polymorphic values.
type List []any

// MapEntry is one key/value pair of a Map.
type MapEntry struct {
	Key   any
	Value any
}

// Map is an AMQP map, kept as ordered pairs so that any key type
// (including unhashable ones such as binary) round-trips.
type Map []MapEntry

// Get returns the value for key, comparing keys with ==. Keys of
// uncomparable types never match.
func (m Map) Get(key any) (any, bool) {
	for _, e := range m {
		if comparableEqual(e.Key, key) {
			return e.Value, true
		}
	}
	return nil, false
}

// GetString returns the value under the string or symbol key name. String
// keys take precedence over symbol keys.
func (m Map) GetString(name string) (any, bool) {
	if v, ok := m.Get(name); ok {
		return v, true
	}
	return m.Get(Symbol(name))
}

// Set replaces the value under key or appends a new pair, and returns m.
func (m Map) Set(key, value any) Map {
	for i, e := range m {
		if comparableEqual(e.Key, key) {
			m[i].Value = value
			return m
		}
	}
	return append(m, MapEntry{Key: key, Value: value})
}

func comparableEqual(a, b any) (eq bool) {
	switch a.(type) {
	case []byte, List, Map, Array, Described, map[string]any:
		return false
	}
	switch b.(type) {
	case []byte, List, Map, Array, Described, map[string]any:
		return false
	}
	return a == b
}

// Array is an AMQP array: values that all share one constructor. Code is the
// element format code (for example TypeSym32); Descriptor, when non-nil,
// makes the elements described values with that descriptor. Elems hold the
// element values (without the descriptor).
type Array struct {
	Descriptor any
	Code       byte
	Elems      []any
}

// SymbolArray builds an array of symbols.
func SymbolArray(s ...Symbol) Array {
	a := Array{Code: TypeSym32, Elems: make([]any, len(s))}
	for i, v := range s {
		a.Elems[i] = v
	}
	return a
}

// StringArray builds an array of strings.
func StringArray(s ...string) Array {
	a := Array{Code: TypeStr32, Elems: make([]any, len(s))}
	for i, v := range s {
		a.Elems[i] = v
	}
	return a
}

// Described is an AMQP described value: a descriptor (usually a uint64 code
// or a Symbol) and the value it describes.
type Described struct {
	Descriptor any
	Value      any
}

// DescriptorCode returns the numeric descriptor of d, mapping the symbolic
// names of the well-known descriptors to their codes.
func (d Described) DescriptorCode() (uint64, bool) {
	switch v := d.Descriptor.(type) {
	case uint64:
		return v, true
	case Symbol:
		c, ok := symbolicDescriptor(v)
		return c, ok
	}
	return 0, false
}

// Descriptor codes of the performatives, SASL frames, delivery states,
// terminus types and message sections.
const (
	DescOpen        uint64 = 0x10
	DescBegin       uint64 = 0x11
	DescAttach      uint64 = 0x12
	DescFlow        uint64 = 0x13
	DescTransfer    uint64 = 0x14
	DescDisposition uint64 = 0x15
	DescDetach      uint64 = 0x16
	DescEnd         uint64 = 0x17
	DescClose       uint64 = 0x18
	DescError       uint64 = 0x1d
	DescReceived    uint64 = 0x23
	DescAccepted    uint64 = 0x24
	DescRejected    uint64 = 0x25
	DescReleased    uint64 = 0x26
	DescModified    uint64 = 0x27
	DescSource      uint64 = 0x28
	DescTarget      uint64 = 0x29
	DescCoordinator uint64 = 0x30

	DescSASLMechanisms uint64 = 0x40
	DescSASLInit       uint64 = 0x41
	DescSASLChallenge  uint64 = 0x42
	DescSASLResponse   uint64 = 0x43
	DescSASLOutcome    uint64 = 0x44

	DescHeader                uint64 = 0x70
	DescDeliveryAnnotations   uint64 = 0x71
	DescMessageAnnotations    uint64 = 0x72
	DescProperties            uint64 = 0x73
	DescApplicationProperties uint64 = 0x74
	DescData                  uint64 = 0x75
	DescAMQPSequence          uint64 = 0x76
	DescAMQPValue             uint64 = 0x77
	DescFooter                uint64 = 0x78
)

// symbolicDescriptor returns the numeric code of a descriptor's symbolic
// name.
func symbolicDescriptor(name Symbol) (uint64, bool) {
	switch name {
	case "amqp:open:list":
		return DescOpen, true
	case "amqp:begin:list":
		return DescBegin, true
	case "amqp:attach:list":
		return DescAttach, true
	case "amqp:flow:list":
		return DescFlow, true
	case "amqp:transfer:list":
		return DescTransfer, true
	case "amqp:disposition:list":
		return DescDisposition, true
	case "amqp:detach:list":
		return DescDetach, true
	case "amqp:end:list":
		return DescEnd, true
	case "amqp:close:list":
		return DescClose, true
	case "amqp:error:list":
		return DescError, true
	case "amqp:received:list":
		return DescReceived, true
	case "amqp:accepted:list":
		return DescAccepted, true
	case "amqp:rejected:list":
		return DescRejected, true
	case "amqp:released:list":
		return DescReleased, true
	case "amqp:modified:list":
		return DescModified, true
	case "amqp:source:list":
		return DescSource, true
	case "amqp:target:list":
		return DescTarget, true
	case "amqp:sasl-mechanisms:list":
		return DescSASLMechanisms, true
	case "amqp:sasl-init:list":
		return DescSASLInit, true
	case "amqp:sasl-challenge:list":
		return DescSASLChallenge, true
	case "amqp:sasl-response:list":
		return DescSASLResponse, true
	case "amqp:sasl-outcome:list":
		return DescSASLOutcome, true
	case "amqp:header:list":
		return DescHeader, true
	case "amqp:delivery-annotations:map":
		return DescDeliveryAnnotations, true
	case "amqp:message-annotations:map":
		return DescMessageAnnotations, true
	case "amqp:properties:list":
		return DescProperties, true
	case "amqp:application-properties:map":
		return DescApplicationProperties, true
	case "amqp:data:binary":
		return DescData, true
	case "amqp:amqp-sequence:list":
		return DescAMQPSequence, true
	case "amqp:amqp-value:*":
		return DescAMQPValue, true
	case "amqp:footer:map":
		return DescFooter, true
	case "amqp:coordinator:list":
		return DescCoordinator, true
	case "amqp:delete-on-close:list":
		return 0x2b, true
	case "amqp:delete-on-no-links:list":
		return 0x2c, true
	case "amqp:delete-on-no-messages:list":
		return 0x2d, true
	case "amqp:delete-on-no-links-or-messages:list":
		return 0x2e, true
	}
	return 0, false
}

// Errors returned by the decoder. They are wrapped with position details.
var (
	// ErrTruncated means the input ended inside a value or frame.
	ErrTruncated = errors.New("amqp10: truncated input")
	// ErrInvalid means the input is not valid AMQP 1.0 encoding.
	ErrInvalid = errors.New("amqp10: invalid encoding")
	// ErrTooLarge means a size or count exceeds a limit.
	ErrTooLarge = errors.New("amqp10: size exceeds limit")
	// ErrUnsupported means a Go value has no AMQP encoding.
	ErrUnsupported = errors.New("amqp10: unsupported type")
)
