package amqp10

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPrimitiveGolden checks every primitive type against bytes derived by
// hand from section 1.6 of the AMQP 1.0 specification, in both directions.
func TestPrimitiveGolden(t *testing.T) {
	ts := time.UnixMilli(1700000000123).UTC()
	cases := []struct {
		name string
		v    any
		hex  string
	}{
		{"null", nil, "40"},
		{"true", true, "41"},
		{"false", false, "42"},
		{"ubyte", uint8(0xfe), "50 fe"},
		{"ushort", uint16(0x1234), "60 1234"},
		{"uint0", uint32(0), "43"},
		{"smalluint", uint32(200), "52 c8"},
		{"uint", uint32(0x01020304), "70 01020304"},
		{"ulong0", uint64(0), "44"},
		{"smallulong", uint64(7), "53 07"},
		{"ulong", uint64(0x0102030405060708), "80 0102030405060708"},
		{"byte", int8(-2), "51 fe"},
		{"short", int16(-2), "61 fffe"},
		{"smallint", int32(-1), "54 ff"},
		{"int", int32(1000), "71 000003e8"},
		{"smalllong", int64(100), "55 64"},
		{"long", int64(-129), "81 ffffffffffffff7f"},
		{"float", float32(1.5), "72 3fc00000"},
		{"double", float64(-2), "82 c000000000000000"},
		{"decimal32", Decimal32{1, 2, 3, 4}, "74 01020304"},
		{"decimal64", Decimal64{1, 2, 3, 4, 5, 6, 7, 8}, "84 0102030405060708"},
		{"decimal128", Decimal128{15: 9}, "94 00000000000000000000000000000009"},
		{"char", Char('€'), "73 000020ac"},
		{"timestamp", ts, "83 0000018bcfe5687b"},
		{"uuid", UUID{0: 0xde, 15: 0xad}, "98 de0000000000000000000000000000ad"},
		{"vbin8", []byte{1, 2}, "a0 02 0102"},
		{"str8", "hé", "a1 03 68c3a9"},
		{"sym8", Symbol("amqp"), "a3 04 616d7170"},
		{"list0", List{}, "45"},
		{"list8", List{uint32(1), "a"}, "c0 06 02 52 01 a1 01 61"},
		{"map8", Map{{Key: Symbol("k"), Value: int64(1)}}, "c1 06 02 a3 01 6b 55 01"},
		{"array8 sym", SymbolArray("a", "bc"), "e0 0d 02 b3 00000001 61 00000002 6263"},
		{"array8 int", Array{Code: TypeInt, Elems: []any{int32(1), int32(-1)}}, "e0 0a 02 71 00000001 ffffffff"},
		{"described", Described{Descriptor: uint64(0x77), Value: "x"}, "00 53 77 a1 01 78"},
		{"described symbol", Described{Descriptor: Symbol("d"), Value: nil}, "00 a3 01 64 40"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := unhex(t, c.hex)
			got, err := AppendValue(nil, c.v)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encode = % x, want % x", got, want)
			}
			back, err := Unmarshal(want)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, c.v) {
				t.Fatalf("decode = %#v, want %#v", back, c.v)
			}
		})
	}
}

// TestWideEncodings decodes the 32-bit and alternative encodings that our
// encoder never produces for small values but peers may send.
func TestWideEncodings(t *testing.T) {
	cases := []struct {
		hex  string
		want any
	}{
		{"b0 00000002 0102", []byte{1, 2}},
		{"b1 00000001 61", "a"},
		{"b3 00000001 61", Symbol("a")},
		{"70 00000000", uint32(0)},
		{"80 0000000000000005", uint64(5)},
		{"71 ffffffff", int32(-1)},
		{"56 01", true},
		{"56 00", false},
		{"d0 00000006 00000002 41 42", List{true, false}},
		{"d1 00000007 00000002 a1 00 40", Map{{Key: "", Value: nil}}},
		{"c0 01 00", List{}},
		{"f0 00000009 00000002 a1 01 61 01 62", Array{Code: TypeStr8, Elems: []any{"a", "b"}}},
		{"e0 05 02 00 53 01 42", Array{Descriptor: uint64(1), Code: TypeFalse, Elems: []any{false, false}}},
		{"e0 02 00 40", Array{Code: TypeNull, Elems: []any{}}},
	}
	for _, c := range cases {
		got, err := Unmarshal(unhex(t, c.hex))
		if err != nil {
			t.Fatalf("%s: %v", c.hex, err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Fatalf("%s: got %#v, want %#v", c.hex, got, c.want)
		}
	}
}

func TestLargeCompoundsUse32Bit(t *testing.T) {
	long := strings.Repeat("x", 300)
	b, err := AppendValue(nil, List{long})
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != TypeList32 {
		t.Fatalf("constructor 0x%02x, want list32", b[0])
	}
	back, err := Unmarshal(b)
	if err != nil || !reflect.DeepEqual(back, List{long}) {
		t.Fatalf("round trip: %v %v", back, err)
	}
	arr := StringArray(long, "y")
	b, err = AppendValue(nil, arr)
	if err != nil {
		t.Fatal(err)
	}
	back, err = Unmarshal(b)
	if err != nil || !reflect.DeepEqual(back, arr) {
		t.Fatalf("array round trip: %#v %v", back, err)
	}
	m := map[string]any{"b": int32(2), "a": []string{"x"}, "c": map[string]any{"n": nil}}
	b, err = AppendValue(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	back, err = Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	want := Map{{Key: "a", Value: StringArray("x")}, {Key: "b", Value: int32(2)}, {Key: "c", Value: Map{{Key: "n", Value: nil}}}}
	if !reflect.DeepEqual(back, want) {
		t.Fatalf("map = %#v", back)
	}
}

func TestDecodeErrors(t *testing.T) {
	cases := []struct {
		name, hex string
		want      error
	}{
		{"empty", "", ErrTruncated},
		{"unknown code", "ff", ErrInvalid},
		{"truncated uint", "70 0102", ErrTruncated},
		{"truncated str", "a1 05 61", ErrTruncated},
		{"huge str32", "b1 ffffffff 61", ErrTruncated},
		{"huge list count", "d0 00000005 ffffffff 40", ErrInvalid},
		{"list size beyond input", "d0 7fffffff 00000001 40", ErrTruncated},
		{"zero-width array bomb", "f0 00000005 ffffffff 40", ErrTooLarge},
		{"odd map", "c1 02 01 40", ErrInvalid},
		{"bad boolean", "56 02", ErrInvalid},
		{"list count vs bytes", "c0 02 05 40", ErrInvalid},
		{"trailing in list", "c0 03 01 40 40", ErrInvalid},
		{"bad descriptor", "00 a1 01 61 40", ErrInvalid},
		{"list size zero", "c0 00 00", ErrInvalid},
		{"list32 size small", "d0 00000003 00000000", ErrInvalid},
		{"nested array descriptor", "e0 06 01 00 53 01 00 40", ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Unmarshal(unhex(t, c.hex))
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
	// Deep nesting is bounded.
	deep := bytes.Repeat([]byte{0x00, 0x53, 0x01}, MaxDepth+5)
	deep = append(deep, 0x40)
	if _, err := Unmarshal(deep); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("deep described: %v", err)
	}
}

func TestEncodeErrors(t *testing.T) {
	if _, err := AppendValue(nil, struct{}{}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("struct: %v", err)
	}
	if _, err := AppendValue(nil, Array{Code: TypeInt, Elems: []any{"x"}}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("array: %v", err)
	}
	if _, err := AppendValue(nil, List{make(chan int)}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("list: %v", err)
	}
}

func TestSpecialFloatsAndExtremes(t *testing.T) {
	for _, v := range []any{math.Inf(1), float32(math.Inf(-1)), int64(math.MinInt64), uint64(math.MaxUint64), int32(math.MinInt32), time.UnixMilli(-1).UTC()} {
		b, err := AppendValue(nil, v)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Unmarshal(b)
		if err != nil || !reflect.DeepEqual(back, v) {
			t.Fatalf("%v: got %#v %v", v, back, err)
		}
	}
}

func TestMapHelpers(t *testing.T) {
	m := Map{{Key: Symbol("a"), Value: 1}, {Key: []byte("x"), Value: 2}}
	if v, ok := m.GetString("a"); !ok || v != 1 {
		t.Fatal("GetString symbol")
	}
	if _, ok := m.Get([]byte("x")); ok {
		t.Fatal("binary keys must not match")
	}
	m = m.Set("b", 3).Set(Symbol("a"), 4)
	if v, _ := m.Get(Symbol("a")); v != 4 || len(m) != 3 {
		t.Fatalf("Set: %v", m)
	}
	if got := (UUID{0: 1, 15: 2}).String(); got != "01000000-0000-0000-0000-000000000002" {
		t.Fatal(got)
	}
}
