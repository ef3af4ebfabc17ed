package amqp10

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"time"
)

// AppendValue appends the AMQP encoding of v to dst. See the package
// documentation for the accepted Go types.
func AppendValue(dst []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(dst, TypeNull), nil
	case bool:
		if v {
			return append(dst, TypeTrue), nil
		}
		return append(dst, TypeFalse), nil
	case uint8:
		return append(dst, TypeUbyte, v), nil
	case uint16:
		return binary.BigEndian.AppendUint16(append(dst, TypeUshort), v), nil
	case uint32:
		return appendUint(dst, v), nil
	case uint64:
		return appendUlong(dst, v), nil
	case uint:
		return appendUlong(dst, uint64(v)), nil
	case int8:
		return append(dst, TypeByte, byte(v)), nil
	case int16:
		return binary.BigEndian.AppendUint16(append(dst, TypeShort), uint16(v)), nil
	case int32:
		if v >= math.MinInt8 && v <= math.MaxInt8 {
			return append(dst, TypeSmallInt, byte(int8(v))), nil
		}
		return binary.BigEndian.AppendUint32(append(dst, TypeInt), uint32(v)), nil
	case int64:
		return appendLong(dst, v), nil
	case int:
		return appendLong(dst, int64(v)), nil
	case float32:
		return binary.BigEndian.AppendUint32(append(dst, TypeFloat), math.Float32bits(v)), nil
	case float64:
		return binary.BigEndian.AppendUint64(append(dst, TypeDouble), math.Float64bits(v)), nil
	case Decimal32:
		return append(append(dst, TypeDecimal32), v[:]...), nil
	case Decimal64:
		return append(append(dst, TypeDecimal64), v[:]...), nil
	case Decimal128:
		return append(append(dst, TypeDecimal128), v[:]...), nil
	case Char:
		return binary.BigEndian.AppendUint32(append(dst, TypeChar), uint32(v)), nil
	case time.Time:
		return binary.BigEndian.AppendUint64(append(dst, TypeTimestamp), uint64(v.UnixMilli())), nil
	case UUID:
		return append(append(dst, TypeUUID), v[:]...), nil
	case []byte:
		return appendVariable(dst, TypeVbin8, TypeVbin32, v), nil
	case string:
		return appendVariable(dst, TypeStr8, TypeStr32, []byte(v)), nil
	case Symbol:
		return appendVariable(dst, TypeSym8, TypeSym32, []byte(v)), nil
	case List:
		return appendList(dst, v)
	case []any:
		return appendList(dst, List(v))
	case Map:
		return appendMap(dst, v)
	case map[string]any:
		return appendMap(dst, sortedStringMap(v))
	case map[Symbol]any:
		m := make(Map, 0, len(v))
		for k, val := range v {
			m = append(m, MapEntry{Key: k, Value: val})
		}
		sort.Slice(m, func(i, j int) bool { return m[i].Key.(Symbol) < m[j].Key.(Symbol) })
		return appendMap(dst, m)
	case Array:
		return appendArray(dst, v)
	case []Symbol:
		return appendArray(dst, SymbolArray(v...))
	case []string:
		return appendArray(dst, StringArray(v...))
	case Described:
		dst = append(dst, TypeDescribed)
		var err error
		if dst, err = AppendValue(dst, v.Descriptor); err != nil {
			return dst, err
		}
		return AppendValue(dst, v.Value)
	case Marshaler:
		return v.AppendAMQP(dst)
	default:
		return dst, fmt.Errorf("%w: %T", ErrUnsupported, v)
	}
}

// Marshaler is implemented by types that encode themselves, such as the
// performatives and message sections of this package.
type Marshaler interface {
	AppendAMQP(dst []byte) ([]byte, error)
}

func sortedStringMap(v map[string]any) Map {
	m := make(Map, 0, len(v))
	for k, val := range v {
		m = append(m, MapEntry{Key: k, Value: val})
	}
	sort.Slice(m, func(i, j int) bool { return m[i].Key.(string) < m[j].Key.(string) })
	return m
}

func appendUint(dst []byte, v uint32) []byte {
	switch {
	case v == 0:
		return append(dst, TypeUint0)
	case v <= math.MaxUint8:
		return append(dst, TypeSmallUint, byte(v))
	default:
		return binary.BigEndian.AppendUint32(append(dst, TypeUint), v)
	}
}

func appendUlong(dst []byte, v uint64) []byte {
	switch {
	case v == 0:
		return append(dst, TypeUlong0)
	case v <= math.MaxUint8:
		return append(dst, TypeSmallUlong, byte(v))
	default:
		return binary.BigEndian.AppendUint64(append(dst, TypeUlong), v)
	}
}

func appendLong(dst []byte, v int64) []byte {
	if v >= math.MinInt8 && v <= math.MaxInt8 {
		return append(dst, TypeSmallLong, byte(int8(v)))
	}
	return binary.BigEndian.AppendUint64(append(dst, TypeLong), uint64(v))
}

func appendVariable(dst []byte, code8, code32 byte, b []byte) []byte {
	if len(b) <= math.MaxUint8 {
		dst = append(dst, code8, byte(len(b)))
	} else {
		dst = binary.BigEndian.AppendUint32(append(dst, code32), uint32(len(b)))
	}
	return append(dst, b...)
}

// appendCompound writes code8/code32, size and count around the encoded
// elements produced by body.
func appendCompound(dst []byte, code8, code32 byte, count int, body func([]byte) ([]byte, error)) ([]byte, error) {
	start := len(dst)
	// Reserve the 32-bit layout, shrink afterwards if it fits in 8 bits.
	dst = append(dst, code32, 0, 0, 0, 0, 0, 0, 0, 0)
	var err error
	if dst, err = body(dst); err != nil {
		return dst, err
	}
	bodyLen := len(dst) - start - 9
	if bodyLen+1 <= math.MaxUint8 && count <= math.MaxUint8 {
		dst[start] = code8
		dst[start+1] = byte(bodyLen + 1)
		dst[start+2] = byte(count)
		copy(dst[start+3:], dst[start+9:])
		return dst[:len(dst)-6], nil
	}
	if uint64(bodyLen)+4 > math.MaxUint32 || uint64(count) > math.MaxUint32 {
		return dst, fmt.Errorf("%w: compound of %d bytes", ErrTooLarge, bodyLen)
	}
	binary.BigEndian.PutUint32(dst[start+1:], uint32(bodyLen+4))
	binary.BigEndian.PutUint32(dst[start+5:], uint32(count))
	return dst, nil
}

func appendList(dst []byte, l List) ([]byte, error) {
	if len(l) == 0 {
		return append(dst, TypeList0), nil
	}
	return appendCompound(dst, TypeList8, TypeList32, len(l), func(b []byte) ([]byte, error) {
		var err error
		for _, e := range l {
			if b, err = AppendValue(b, e); err != nil {
				return b, err
			}
		}
		return b, nil
	})
}

func appendMap(dst []byte, m Map) ([]byte, error) {
	return appendCompound(dst, TypeMap8, TypeMap32, 2*len(m), func(b []byte) ([]byte, error) {
		var err error
		for _, e := range m {
			if b, err = AppendValue(b, e.Key); err != nil {
				return b, err
			}
			if b, err = AppendValue(b, e.Value); err != nil {
				return b, err
			}
		}
		return b, nil
	})
}

func appendArray(dst []byte, a Array) ([]byte, error) {
	return appendCompound(dst, TypeArray8, TypeArray32, len(a.Elems), func(b []byte) ([]byte, error) {
		if a.Descriptor != nil {
			var err error
			b = append(b, TypeDescribed)
			if b, err = AppendValue(b, a.Descriptor); err != nil {
				return b, err
			}
		}
		b = append(b, a.Code)
		for _, e := range a.Elems {
			var err error
			if b, err = appendArrayElem(b, a.Code, e); err != nil {
				return b, err
			}
		}
		return b, nil
	})
}

// appendArrayElem writes e without its constructor, in the layout of code.
func appendArrayElem(dst []byte, code byte, e any) ([]byte, error) {
	bad := func() ([]byte, error) {
		return dst, fmt.Errorf("%w: %T in array of 0x%02x", ErrUnsupported, e, code)
	}
	switch code {
	case TypeNull, TypeTrue, TypeFalse, TypeUint0, TypeUlong0, TypeList0:
		return dst, nil
	case TypeBoolean:
		b, ok := e.(bool)
		if !ok {
			return bad()
		}
		if b {
			return append(dst, 1), nil
		}
		return append(dst, 0), nil
	case TypeStr8, TypeStr32, TypeSym8, TypeSym32, TypeVbin8, TypeVbin32:
		var b []byte
		switch v := e.(type) {
		case string:
			b = []byte(v)
		case Symbol:
			b = []byte(v)
		case []byte:
			b = v
		default:
			return bad()
		}
		if code&0xf0 == 0xa0 {
			if len(b) > math.MaxUint8 {
				return dst, fmt.Errorf("%w: element of %d bytes in 8-bit array", ErrTooLarge, len(b))
			}
			dst = append(dst, byte(len(b)))
		} else {
			dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
		}
		return append(dst, b...), nil
	}
	// Fixed-width and compound elements: encode with constructor, check it
	// matches, and drop the constructor byte.
	start := len(dst)
	var err error
	switch code {
	case TypeUint:
		v, ok := e.(uint32)
		if !ok {
			return bad()
		}
		return binary.BigEndian.AppendUint32(dst, v), nil
	case TypeUlong:
		v, ok := e.(uint64)
		if !ok {
			return bad()
		}
		return binary.BigEndian.AppendUint64(dst, v), nil
	case TypeInt:
		v, ok := e.(int32)
		if !ok {
			return bad()
		}
		return binary.BigEndian.AppendUint32(dst, uint32(v)), nil
	case TypeLong:
		v, ok := e.(int64)
		if !ok {
			return bad()
		}
		return binary.BigEndian.AppendUint64(dst, uint64(v)), nil
	case TypeList8, TypeList32, TypeMap8, TypeMap32:
		// Encode in the 32-bit layout when requested, 8-bit otherwise.
		var tmp []byte
		if tmp, err = AppendValue(nil, e); err != nil {
			return dst, err
		}
		return appendCompoundAs(dst, code, tmp, e)
	}
	if dst, err = AppendValue(dst, e); err != nil {
		return dst, err
	}
	if dst[start] != code {
		return bad()
	}
	return append(dst[:start], dst[start+1:]...), nil
}

// appendCompoundAs re-lays an encoded list or map (enc, with constructor)
// into the exact width code requires, without the constructor.
func appendCompoundAs(dst []byte, code byte, enc []byte, e any) ([]byte, error) {
	var size, count uint32
	var body []byte
	switch enc[0] {
	case TypeList0:
		body = nil
	case TypeList8, TypeMap8:
		count, body = uint32(enc[2]), enc[3:]
	case TypeList32, TypeMap32:
		count, body = binary.BigEndian.Uint32(enc[5:]), enc[9:]
	}
	isMap := code == TypeMap8 || code == TypeMap32
	if isMap != (enc[0] == TypeMap8 || enc[0] == TypeMap32) {
		return dst, fmt.Errorf("%w: %T in array of 0x%02x", ErrUnsupported, e, code)
	}
	if code == TypeList8 || code == TypeMap8 {
		size = uint32(len(body)) + 1
		if size > math.MaxUint8 || count > math.MaxUint8 {
			return dst, fmt.Errorf("%w: element too large for 8-bit array", ErrTooLarge)
		}
		dst = append(dst, byte(size), byte(count))
	} else {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(body))+4)
		dst = binary.BigEndian.AppendUint32(dst, count)
	}
	return append(dst, body...), nil
}

// appendDescribedList appends a described list with the given descriptor
// code, omitting trailing null fields as the specification allows.
func appendDescribedList(dst []byte, code uint64, fields []any) ([]byte, error) {
	n := len(fields)
	for n > 0 && isNull(fields[n-1]) {
		n--
	}
	dst = appendUlong(append(dst, TypeDescribed), code)
	return appendList(dst, List(fields[:n]))
}

// isNull reports whether v encodes as an AMQP null.
func isNull(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case Map:
		return v == nil
	case []byte:
		return v == nil
	case []Symbol:
		return v == nil
	case *Error:
		return v == nil
	case *Source:
		return v == nil
	case *Target:
		return v == nil
	}
	return false
}
