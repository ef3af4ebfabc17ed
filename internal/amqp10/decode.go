package amqp10

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// MaxDepth bounds the nesting of compound and described values.
const MaxDepth = 32

// maxZeroWidthArray bounds arrays whose elements take no bytes (arrays of
// null, true, false, uint0, ulong0 or list0), which could otherwise claim
// billions of elements in five bytes.
const maxZeroWidthArray = 1024

// Decoder reads AMQP values from a byte slice. It never reads past the slice
// and checks every length and count against the bytes that remain.
type Decoder struct {
	b     []byte
	off   int
	depth int
}

// NewDecoder returns a decoder over b.
func NewDecoder(b []byte) *Decoder { return &Decoder{b: b} }

// Len returns the number of unread bytes.
func (d *Decoder) Len() int { return len(d.b) - d.off }

// Offset returns the number of bytes consumed so far.
func (d *Decoder) Offset() int { return d.off }

// Rest returns the unread bytes.
func (d *Decoder) Rest() []byte { return d.b[d.off:] }

// Unmarshal decodes exactly one value from b; trailing bytes are an error.
func Unmarshal(b []byte) (any, error) {
	d := NewDecoder(b)
	v, err := d.ReadValue()
	if err != nil {
		return nil, err
	}
	if d.Len() != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrInvalid, d.Len())
	}
	return v, nil
}

func (d *Decoder) errTrunc(what string) error {
	return fmt.Errorf("%w: %s at offset %d", ErrTruncated, what, d.off)
}

func (d *Decoder) take(n int, what string) ([]byte, error) {
	if n < 0 || n > d.Len() {
		return nil, d.errTrunc(what)
	}
	b := d.b[d.off : d.off+n]
	d.off += n
	return b, nil
}

func (d *Decoder) byte1(what string) (byte, error) {
	if d.Len() < 1 {
		return 0, d.errTrunc(what)
	}
	c := d.b[d.off]
	d.off++
	return c, nil
}

// PeekCode returns the next format code without consuming it.
func (d *Decoder) PeekCode() (byte, error) {
	if d.Len() < 1 {
		return 0, d.errTrunc("format code")
	}
	return d.b[d.off], nil
}

// ReadValue decodes the next value.
func (d *Decoder) ReadValue() (any, error) {
	code, err := d.byte1("format code")
	if err != nil {
		return nil, err
	}
	if code == TypeDescribed {
		return d.readDescribed()
	}
	return d.readBody(code)
}

func (d *Decoder) enter() error {
	d.depth++
	if d.depth > MaxDepth {
		return fmt.Errorf("%w: nesting deeper than %d at offset %d", ErrTooLarge, MaxDepth, d.off)
	}
	return nil
}

func (d *Decoder) readDescribed() (any, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer func() { d.depth-- }()
	desc, err := d.ReadValue()
	if err != nil {
		return nil, err
	}
	switch desc.(type) {
	case uint64, Symbol:
	default:
		return nil, fmt.Errorf("%w: descriptor of type %T at offset %d", ErrInvalid, desc, d.off)
	}
	v, err := d.ReadValue()
	if err != nil {
		return nil, err
	}
	return Described{Descriptor: desc, Value: v}, nil
}

// readBody decodes the value following constructor code.
func (d *Decoder) readBody(code byte) (any, error) {
	switch code {
	case TypeNull:
		return nil, nil
	case TypeTrue:
		return true, nil
	case TypeFalse:
		return false, nil
	case TypeUint0:
		return uint32(0), nil
	case TypeUlong0:
		return uint64(0), nil
	case TypeList0:
		return List{}, nil
	case TypeBoolean:
		c, err := d.byte1("boolean")
		if err != nil {
			return nil, err
		}
		switch c {
		case 0:
			return false, nil
		case 1:
			return true, nil
		}
		return nil, fmt.Errorf("%w: boolean byte 0x%02x", ErrInvalid, c)
	case TypeUbyte:
		c, err := d.byte1("ubyte")
		return c, err
	case TypeByte:
		c, err := d.byte1("byte")
		return int8(c), err
	case TypeSmallUint:
		c, err := d.byte1("smalluint")
		return uint32(c), err
	case TypeSmallUlong:
		c, err := d.byte1("smallulong")
		return uint64(c), err
	case TypeSmallInt:
		c, err := d.byte1("smallint")
		return int32(int8(c)), err
	case TypeSmallLong:
		c, err := d.byte1("smalllong")
		return int64(int8(c)), err
	case TypeUshort, TypeShort:
		b, err := d.take(2, "short")
		if err != nil {
			return nil, err
		}
		v := binary.BigEndian.Uint16(b)
		if code == TypeShort {
			return int16(v), nil
		}
		return v, nil
	case TypeUint, TypeInt, TypeFloat, TypeChar, TypeDecimal32:
		b, err := d.take(4, "4-byte value")
		if err != nil {
			return nil, err
		}
		v := binary.BigEndian.Uint32(b)
		switch code {
		case TypeUint:
			return v, nil
		case TypeInt:
			return int32(v), nil
		case TypeFloat:
			return math.Float32frombits(v), nil
		case TypeChar:
			return Char(v), nil
		}
		return Decimal32(b), nil
	case TypeUlong, TypeLong, TypeDouble, TypeTimestamp, TypeDecimal64:
		b, err := d.take(8, "8-byte value")
		if err != nil {
			return nil, err
		}
		v := binary.BigEndian.Uint64(b)
		switch code {
		case TypeUlong:
			return v, nil
		case TypeLong:
			return int64(v), nil
		case TypeDouble:
			return math.Float64frombits(v), nil
		case TypeTimestamp:
			return time.UnixMilli(int64(v)).UTC(), nil
		}
		return Decimal64(b), nil
	case TypeDecimal128, TypeUUID:
		b, err := d.take(16, "16-byte value")
		if err != nil {
			return nil, err
		}
		if code == TypeUUID {
			return UUID(b), nil
		}
		return Decimal128(b), nil
	case TypeVbin8, TypeStr8, TypeSym8, TypeVbin32, TypeStr32, TypeSym32:
		var n int
		if code&0xf0 == 0xa0 {
			c, err := d.byte1("length")
			if err != nil {
				return nil, err
			}
			n = int(c)
		} else {
			b, err := d.take(4, "length")
			if err != nil {
				return nil, err
			}
			n64 := binary.BigEndian.Uint32(b)
			if uint64(n64) > uint64(d.Len()) {
				return nil, d.errTrunc("variable-width value")
			}
			n = int(n64)
		}
		b, err := d.take(n, "variable-width value")
		if err != nil {
			return nil, err
		}
		switch code {
		case TypeVbin8, TypeVbin32:
			return append([]byte(nil), b...), nil
		case TypeStr8, TypeStr32:
			return string(b), nil
		}
		return Symbol(b), nil
	case TypeList8, TypeList32, TypeMap8, TypeMap32, TypeArray8, TypeArray32:
		return d.readCompound(code)
	}
	return nil, fmt.Errorf("%w: unknown format code 0x%02x at offset %d", ErrInvalid, code, d.off-1)
}

// readSizeCount reads the size and count of a compound value and returns a
// sub-decoder bounded to its body.
func (d *Decoder) readSizeCount(wide bool) (*Decoder, uint32, error) {
	var size, count uint32
	if wide {
		b, err := d.take(8, "compound header")
		if err != nil {
			return nil, 0, err
		}
		size, count = binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:])
		if size < 4 {
			return nil, 0, fmt.Errorf("%w: compound size %d < 4", ErrInvalid, size)
		}
		size -= 4
	} else {
		b, err := d.take(2, "compound header")
		if err != nil {
			return nil, 0, err
		}
		size, count = uint32(b[0]), uint32(b[1])
		if size < 1 {
			return nil, 0, fmt.Errorf("%w: compound size 0", ErrInvalid)
		}
		size--
	}
	if uint64(size) > uint64(d.Len()) {
		return nil, 0, d.errTrunc("compound value")
	}
	body, _ := d.take(int(size), "compound value")
	return &Decoder{b: body, depth: d.depth}, count, nil
}

func (d *Decoder) readCompound(code byte) (any, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer func() { d.depth-- }()
	wide := code == TypeList32 || code == TypeMap32 || code == TypeArray32
	sub, count, err := d.readSizeCount(wide)
	if err != nil {
		return nil, err
	}
	switch code {
	case TypeArray8, TypeArray32:
		return sub.readArray(count)
	}
	// Every list or map element has at least a one-byte constructor.
	if uint64(count) > uint64(sub.Len()) {
		return nil, fmt.Errorf("%w: %d elements in %d bytes", ErrInvalid, count, sub.Len())
	}
	if code == TypeMap8 || code == TypeMap32 {
		if count%2 != 0 {
			return nil, fmt.Errorf("%w: map with odd element count %d", ErrInvalid, count)
		}
		m := make(Map, 0, count/2)
		for i := uint32(0); i < count; i += 2 {
			k, err := sub.ReadValue()
			if err != nil {
				return nil, err
			}
			v, err := sub.ReadValue()
			if err != nil {
				return nil, err
			}
			m = append(m, MapEntry{Key: k, Value: v})
		}
		if sub.Len() != 0 {
			return nil, fmt.Errorf("%w: %d bytes after map elements", ErrInvalid, sub.Len())
		}
		return m, nil
	}
	l := make(List, 0, count)
	for i := uint32(0); i < count; i++ {
		v, err := sub.ReadValue()
		if err != nil {
			return nil, err
		}
		l = append(l, v)
	}
	if sub.Len() != 0 {
		return nil, fmt.Errorf("%w: %d bytes after list elements", ErrInvalid, sub.Len())
	}
	return l, nil
}

func (d *Decoder) readArray(count uint32) (any, error) {
	var a Array
	code, err := d.byte1("array constructor")
	if err != nil {
		return nil, err
	}
	if code == TypeDescribed {
		if err := d.enter(); err != nil {
			return nil, err
		}
		desc, err := d.ReadValue()
		d.depth--
		if err != nil {
			return nil, err
		}
		switch desc.(type) {
		case uint64, Symbol:
		default:
			return nil, fmt.Errorf("%w: array descriptor of type %T", ErrInvalid, desc)
		}
		a.Descriptor = desc
		if code, err = d.byte1("array constructor"); err != nil {
			return nil, err
		}
	}
	if code == TypeDescribed {
		return nil, fmt.Errorf("%w: nested descriptor in array constructor", ErrInvalid)
	}
	a.Code = code
	zeroWidth := false
	switch code {
	case TypeNull, TypeTrue, TypeFalse, TypeUint0, TypeUlong0, TypeList0:
		zeroWidth = true
	}
	if zeroWidth {
		if count > maxZeroWidthArray {
			return nil, fmt.Errorf("%w: array of %d zero-width elements", ErrTooLarge, count)
		}
	} else if uint64(count) > uint64(d.Len()) {
		return nil, fmt.Errorf("%w: %d array elements in %d bytes", ErrInvalid, count, d.Len())
	}
	a.Elems = make([]any, 0, count)
	for i := uint32(0); i < count; i++ {
		v, err := d.readBody(code)
		if err != nil {
			return nil, err
		}
		a.Elems = append(a.Elems, v)
	}
	if d.Len() != 0 {
		return nil, fmt.Errorf("%w: %d bytes after array elements", ErrInvalid, d.Len())
	}
	return a, nil
}

// ReadDescribedList reads a described list and returns its descriptor code
// and fields. A described list0 gives no fields.
func (d *Decoder) ReadDescribedList() (uint64, List, error) {
	v, err := d.ReadValue()
	if err != nil {
		return 0, nil, err
	}
	dv, ok := v.(Described)
	if !ok {
		return 0, nil, fmt.Errorf("%w: expected described value, got %T", ErrInvalid, v)
	}
	code, ok := dv.DescriptorCode()
	if !ok {
		return 0, nil, fmt.Errorf("%w: unknown descriptor %v", ErrInvalid, dv.Descriptor)
	}
	l, ok := dv.Value.(List)
	if !ok {
		if dv.Value == nil {
			return code, nil, nil
		}
		return 0, nil, fmt.Errorf("%w: descriptor 0x%x describes %T, not a list", ErrInvalid, code, dv.Value)
	}
	return code, l, nil
}
