package amqp10

import (
	"fmt"
	"math"
	"time"
)

// fields gives typed, checked access to the fields of a decoded
// described list. Absent and null fields yield the zero value; a field of
// the wrong type records an error, reported by err().
type fields struct {
	name string
	l    List
	e    error
}

func (f *fields) get(i int) any {
	if i < len(f.l) {
		return f.l[i]
	}
	return nil
}

func (f *fields) fail(i int, want string) {
	if f.e == nil {
		f.e = fmt.Errorf("%w: %s field %d: want %s, got %T", ErrInvalid, f.name, i, want, f.get(i))
	}
}

func (f *fields) err() error { return f.e }

func (f *fields) present(i int) bool { return f.get(i) != nil }

// uint64At accepts any unsigned integer type.
func (f *fields) uint64At(i int) (uint64, bool) {
	switch v := f.get(i).(type) {
	case nil:
		return 0, false
	case uint8:
		return uint64(v), true
	case uint16:
		return uint64(v), true
	case uint32:
		return uint64(v), true
	case uint64:
		return v, true
	}
	f.fail(i, "unsigned integer")
	return 0, false
}

func (f *fields) uint32At(i int) (uint32, bool) {
	v, ok := f.uint64At(i)
	if ok && v > math.MaxUint32 {
		f.fail(i, "uint")
		return 0, false
	}
	return uint32(v), ok
}

func (f *fields) uint32Ptr(i int) *uint32 {
	v, ok := f.uint32At(i)
	if !ok {
		return nil
	}
	return &v
}

func (f *fields) uint16At(i int, def uint16) uint16 {
	v, ok := f.uint64At(i)
	if !ok {
		return def
	}
	if v > math.MaxUint16 {
		f.fail(i, "ushort")
		return def
	}
	return uint16(v)
}

func (f *fields) uint8Ptr(i int) *uint8 {
	v, ok := f.uint64At(i)
	if !ok {
		return nil
	}
	if v > math.MaxUint8 {
		f.fail(i, "ubyte")
		return nil
	}
	b := uint8(v)
	return &b
}

func (f *fields) boolAt(i int) bool {
	switch v := f.get(i).(type) {
	case nil:
		return false
	case bool:
		return v
	}
	f.fail(i, "boolean")
	return false
}

func (f *fields) boolPtr(i int) *bool {
	if !f.present(i) {
		return nil
	}
	b := f.boolAt(i)
	return &b
}

func (f *fields) stringAt(i int) string {
	switch v := f.get(i).(type) {
	case nil:
		return ""
	case string:
		return v
	case Symbol:
		return string(v)
	}
	f.fail(i, "string")
	return ""
}

func (f *fields) symbolAt(i int) Symbol { return Symbol(f.stringAt(i)) }

func (f *fields) binaryAt(i int) []byte {
	switch v := f.get(i).(type) {
	case nil:
		return nil
	case []byte:
		return v
	}
	f.fail(i, "binary")
	return nil
}

func (f *fields) mapAt(i int) Map {
	switch v := f.get(i).(type) {
	case nil:
		return nil
	case Map:
		return v
	}
	f.fail(i, "map")
	return nil
}

func (f *fields) timeAt(i int) time.Time {
	switch v := f.get(i).(type) {
	case nil:
		return time.Time{}
	case time.Time:
		return v
	}
	f.fail(i, "timestamp")
	return time.Time{}
}

// symbolsAt reads a "multiple" symbol field: null, one symbol, or an array.
func (f *fields) symbolsAt(i int) []Symbol {
	s, err := Symbols(f.get(i))
	if err != nil {
		f.fail(i, "symbol or array of symbols")
	}
	return s
}

// Symbols converts a decoded multiple-symbol field value (nil, a Symbol or an
// Array of symbols) into a slice.
func Symbols(v any) ([]Symbol, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case Symbol:
		return []Symbol{v}, nil
	case Array:
		out := make([]Symbol, 0, len(v.Elems))
		for _, e := range v.Elems {
			s, ok := e.(Symbol)
			if !ok {
				return nil, fmt.Errorf("%w: %T in symbol array", ErrInvalid, e)
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: %T is not a symbol or symbol array", ErrInvalid, v)
}

func (f *fields) errorAt(i int) *Error {
	v := f.get(i)
	if v == nil {
		return nil
	}
	e, err := errorFromValue(v)
	if err != nil {
		f.fail(i, "error")
		return nil
	}
	return e
}

// describedListOf checks that v is a described list with descriptor code.
func describedListOf(v any, code uint64) (List, error) {
	d, ok := v.(Described)
	if !ok {
		return nil, fmt.Errorf("%w: expected described value 0x%x, got %T", ErrInvalid, code, v)
	}
	c, ok := d.DescriptorCode()
	if !ok || c != code {
		return nil, fmt.Errorf("%w: expected descriptor 0x%x, got %v", ErrInvalid, code, d.Descriptor)
	}
	switch l := d.Value.(type) {
	case List:
		return l, nil
	case nil:
		return nil, nil
	}
	return nil, fmt.Errorf("%w: descriptor 0x%x describes %T", ErrInvalid, code, d.Value)
}

// optUint32 returns nil for a nil pointer and the value otherwise, so that
// absent fields encode as null.
func optUint32(p *uint32) any {
	if p == nil {
		return nil
	}
	return *p
}

func optUint8(p *uint8) any {
	if p == nil {
		return nil
	}
	return *p
}

func optBool(p *bool) any {
	if p == nil {
		return nil
	}
	return *p
}

func optString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func optSymbol(s Symbol) any {
	if s == "" {
		return nil
	}
	return s
}

func optSymbols(s []Symbol) any {
	if s == nil {
		return nil
	}
	return SymbolArray(s...)
}

func optMap(m Map) any {
	if m == nil {
		return nil
	}
	return m
}

func optBinary(b []byte) any {
	if b == nil {
		return nil
	}
	return b
}

func optTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

func optError(e *Error) any {
	if e == nil {
		return nil
	}
	return e
}

// Ptr returns a pointer to v; handy for optional performative fields.
func Ptr[T any](v T) *T { return &v }

// optFalse encodes false (the default of optional boolean fields) as null.
func optFalse(b bool) any {
	if !b {
		return nil
	}
	return true
}

// optZero encodes 0 (the default of optional uint fields) as null.
func optZero(v uint32) any {
	if v == 0 {
		return nil
	}
	return v
}
