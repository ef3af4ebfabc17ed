package amqpfake

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"time"
)

// Decimal is an AMQP decimal value ('D' field): Value × 10^-Scale.
type Decimal struct {
	Scale uint8 // number of decimal digits after the point
	Value int32 // unscaled value
}

// maxFieldDepth bounds the nesting of arrays and tables that the decoder
// follows, so that a hostile or garbled table cannot exhaust the stack.
const maxFieldDepth = 64

// table decodes a field table (a long string of name/value pairs).
//
// Values decode to: 't' bool, 'b' int8, 'B' uint8, 's' int16, 'u' uint16,
// 'I' int32, 'i' uint32, 'l' int64, 'f' float32, 'd' float64, 'D' Decimal,
// 'S' string, 'x' []byte, 'A' []any, 'T' time.Time, 'F' map[string]any and
// 'V' nil — the same Go types amqp091-go uses, except that nested tables are
// plain maps.
func (d *decoder) table() map[string]any {
	return d.tableDepth(0)
}

func (d *decoder) tableDepth(depth int) map[string]any {
	n := d.long()
	raw := d.take(int(n), "field table")
	if d.err != nil {
		return nil
	}
	if depth > maxFieldDepth {
		d.err = fmt.Errorf("amqpfake: field table nested deeper than %d", maxFieldDepth)
		return nil
	}
	t := make(map[string]any)
	sub := newDecoder(raw)
	for sub.remaining() > 0 && sub.err == nil {
		key := sub.shortstr()
		v := sub.field(depth)
		if sub.err == nil {
			t[key] = v
		}
	}
	if sub.err != nil {
		d.err = sub.err
		return nil
	}
	return t
}

func (d *decoder) array(depth int) []any {
	n := d.long()
	raw := d.take(int(n), "field array")
	if d.err != nil {
		return nil
	}
	if depth > maxFieldDepth {
		d.err = fmt.Errorf("amqpfake: field array nested deeper than %d", maxFieldDepth)
		return nil
	}
	arr := []any{}
	sub := newDecoder(raw)
	for sub.remaining() > 0 && sub.err == nil {
		v := sub.field(depth)
		if sub.err == nil {
			arr = append(arr, v)
		}
	}
	if sub.err != nil {
		d.err = sub.err
		return nil
	}
	return arr
}

// field decodes one type-tagged field value.
func (d *decoder) field(depth int) any {
	typ := d.octet()
	if d.err != nil {
		return nil
	}
	switch typ {
	case 't':
		return d.octet() != 0
	case 'b':
		return int8(d.octet())
	case 'B':
		return d.octet()
	case 's':
		return int16(d.short())
	case 'u':
		return d.short()
	case 'I':
		return int32(d.long())
	case 'i':
		return d.long()
	case 'l':
		return int64(d.longlong())
	case 'f':
		return math.Float32frombits(d.long())
	case 'd':
		return math.Float64frombits(d.longlong())
	case 'D':
		scale := d.octet()
		return Decimal{Scale: scale, Value: int32(d.long())}
	case 'S':
		return d.longstr()
	case 'x':
		n := d.long()
		if n > math.MaxInt32 {
			d.take(-1, "byte array")
			return nil
		}
		return append([]byte{}, d.take(int(n), "byte array")...)
	case 'A':
		return d.array(depth + 1)
	case 'T':
		return time.Unix(int64(d.longlong()), 0)
	case 'F':
		return d.tableDepth(depth + 1)
	case 'V':
		return nil
	}
	d.err = fmt.Errorf("amqpfake: unknown field type %q", typ)
	return nil
}

// table encodes t as a field table. Keys are written in sorted order so that
// the bytes on the wire are deterministic.
func (e *encoder) table(t map[string]any) error {
	var sub encoder
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if len(k) > math.MaxUint8 {
			return fmt.Errorf("amqpfake: table key %.20q... longer than 255 octets", k)
		}
		sub.shortstr(k)
		if err := sub.field(t[k]); err != nil {
			return fmt.Errorf("amqpfake: table key %q: %w", k, err)
		}
	}
	e.longstr(string(sub.b))
	return nil
}

// field encodes one value with its type tag. It accepts the types table
// decoding produces, plus int and uint (as 'l'), and — through reflection —
// named map and slice types such as amqp091-go's Table.
func (e *encoder) field(v any) error {
	switch v := v.(type) {
	case nil:
		e.octet('V')
	case bool:
		e.octet('t')
		if v {
			e.octet(1)
		} else {
			e.octet(0)
		}
	case int8:
		e.octet('b')
		e.octet(uint8(v))
	case uint8:
		e.octet('B')
		e.octet(v)
	case int16:
		e.octet('s')
		e.short(uint16(v))
	case uint16:
		e.octet('u')
		e.short(v)
	case int32:
		e.octet('I')
		e.long(uint32(v))
	case uint32:
		e.octet('i')
		e.long(v)
	case int64:
		e.octet('l')
		e.longlong(uint64(v))
	case int:
		e.octet('l')
		e.longlong(uint64(v))
	case uint:
		e.octet('l')
		e.longlong(uint64(v))
	case float32:
		e.octet('f')
		e.long(math.Float32bits(v))
	case float64:
		e.octet('d')
		e.longlong(math.Float64bits(v))
	case Decimal:
		e.octet('D')
		e.octet(v.Scale)
		e.long(uint32(v.Value))
	case string:
		e.octet('S')
		e.longstr(v)
	case []byte:
		e.octet('x')
		e.long(uint32(len(v)))
		e.b = append(e.b, v...)
	case time.Time:
		e.octet('T')
		e.longlong(uint64(v.Unix()))
	case map[string]any:
		e.octet('F')
		return e.table(v)
	case []any:
		return e.array(v)
	default:
		return e.reflectField(v)
	}
	return nil
}

func (e *encoder) array(v []any) error {
	var sub encoder
	for i, x := range v {
		if err := sub.field(x); err != nil {
			return fmt.Errorf("array index %d: %w", i, err)
		}
	}
	e.octet('A')
	e.longstr(string(sub.b))
	return nil
}

// reflectField handles named types whose underlying type is a string-keyed
// map or a slice (amqp.Table, []string, ...), and decimal structs shaped like
// amqp091-go's Decimal.
func (e *encoder) reflectField(v any) error {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			break
		}
		m := make(map[string]any, rv.Len())
		it := rv.MapRange()
		for it.Next() {
			m[it.Key().String()] = it.Value().Interface()
		}
		e.octet('F')
		return e.table(m)
	case reflect.Slice, reflect.Array:
		s := make([]any, rv.Len())
		for i := range s {
			s[i] = rv.Index(i).Interface()
		}
		return e.array(s)
	case reflect.Struct:
		if rv.NumField() == 2 && rv.Field(0).Kind() == reflect.Uint8 && rv.Field(1).Kind() == reflect.Int32 {
			return e.field(Decimal{Scale: uint8(rv.Field(0).Uint()), Value: int32(rv.Field(1).Int())})
		}
	}
	return fmt.Errorf("unsupported field value type %T", v)
}
