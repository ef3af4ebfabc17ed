// Package amqp10 is a small, self-contained AMQP 1.0 codec: the type system
// (primitive, described and compound values), the transport performatives,
// the SASL frames, the message sections, and a bounded frame reader/writer.
//
// It is written for the Event Hubs emulator and for tests that need to put
// exact bytes on the wire. Decoding never trusts lengths or element counts
// from the input: every size is checked against the bytes that remain and
// against the configured maximum frame size, and nesting depth is bounded,
// so malformed input yields an error rather than a panic or a large
// allocation.
//
// Go representation of decoded AMQP values:
//
//	null        nil
//	boolean     bool
//	ubyte..ulong uint8, uint16, uint32, uint64
//	byte..long  int8, int16, int32, int64
//	float/double float32, float64
//	decimal32/64/128 Decimal32, Decimal64, Decimal128
//	char        Char
//	timestamp   time.Time (UTC, millisecond precision)
//	uuid        UUID
//	binary      []byte
//	string      string
//	symbol      Symbol
//	list        List
//	map         Map (ordered key/value pairs)
//	array       Array
//	described   Described
//
// For encoding, int is encoded as long and uint as ulong; map[string]any is
// encoded as a map with string keys (sorted for determinism); []Symbol and
// []string are encoded as arrays.
package amqp10
