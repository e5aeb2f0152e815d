package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unsafe"
)

// The hot message types encode and decode with the generated msgpack of
// fastcodec_msgs.go instead of the reflection codec. The encoding is byte for
// byte what the codec produces with handle (checked by
// TestFastCodecMatchesReflection):
//
//   - a struct is a map of its non-zero fields keyed by field name, the keys
//     sorted by name (not in field order); a struct without fields is an empty
//     map, and a field without omitempty (SyncRequest.Commits) is always
//     present, a nil slice as msgpack nil;
//   - unsigned integers use the shortest of positive fixint and uint8..64, but
//     a Go int (Error.Index) uses the signed forms: 200 is int16, not uint8;
//   - []byte is bin8/16/32 (an empty slice in a [][]byte is bin8 of length
//     0, a nil one msgpack nil), string is fixstr or str8/16/32;
//   - headers use the fix form below 16 entries (32 bytes for str), then the
//     16- and 32-bit forms (str and bin also the 8-bit one).
//
// The decoder accepts what the codec accepts from a peer: fields in any order,
// unknown fields (skipped), nil for any field, any integer width including
// signed forms of non-negative values, str or bin for []byte and string. It
// yields the same values as the codec, including its quirks: an empty str or
// bin decodes as an empty, non-nil slice, an empty array as an empty slice,
// and a bool may be the fixints 0 and 1. Rarer forms the codec also accepts
// (a struct as an array, bytes as an array of integers, a slice as a map,
// ext values, a repeated field, deep nesting) make it return errFallback, and
// decodeWith hands the body to the codec instead.

// The hot message types. The go:generate line below writes the fastMessage
// methods of each, and of the structs they contain, from their struct
// definitions into fastcodec_msgs.go; listing a type here also makes the
// compiler check that it has them.
//
//go:generate go run ./internal/fastgen/cmd/fastgen
var _ = []fastMessage{
	(*Error)(nil),
	(*GetRequest)(nil),
	(*GetReply)(nil),
	(*TxnRequest)(nil),
	(*TxnReply)(nil),
	(*ApplyRequest)(nil),
	(*ApplyReply)(nil),
	(*PrepareRequest)(nil),
	(*PrepareReply)(nil),
	(*CommitRequest)(nil),
	(*AbortRequest)(nil),
	(*Ack)(nil),
	(*SyncRequest)(nil),
	(*CommitBatchRequest)(nil),
	(*RestoreRequest)(nil),
	(*RestoreReply)(nil),
	(*ScanRequest)(nil),
	(*ScanReply)(nil),
}

// fastMessage is implemented, on pointer receivers, by the hot message types
// and the structs they contain.
type fastMessage interface {
	// appendMsgpack appends the msgpack encoding of the receiver (msgpack nil
	// for a nil receiver) to b.
	appendMsgpack(b []byte) []byte
	// decodeMsgpack decodes the next value of d into the zero receiver.
	decodeMsgpack(d *mpDecoder) error
}

// msgpack format bytes.
const (
	mpFixMap   = 0x80
	mpFixArray = 0x90
	mpFixStr   = 0xa0
	mpNil      = 0xc0
	mpFalse    = 0xc2
	mpTrue     = 0xc3
	mpBin8     = 0xc4
	mpBin16    = 0xc5
	mpBin32    = 0xc6
	mpExt8     = 0xc7
	mpExt16    = 0xc8
	mpExt32    = 0xc9
	mpFloat32  = 0xca
	mpFloat64  = 0xcb
	mpUint8    = 0xcc
	mpUint16   = 0xcd
	mpUint32   = 0xce
	mpUint64   = 0xcf
	mpInt8     = 0xd0
	mpInt16    = 0xd1
	mpInt32    = 0xd2
	mpInt64    = 0xd3
	mpFixExt1  = 0xd4
	mpFixExt16 = 0xd8
	mpStr8     = 0xd9
	mpStr16    = 0xda
	mpStr32    = 0xdb
	mpArray16  = 0xdc
	mpArray32  = 0xdd
	mpMap16    = 0xde
	mpMap32    = 0xdf
)

// appendLen appends the header of a container of n entries: fix|n below
// fixLimit, else the 8-bit form c8 (if not 0), the 16-bit form c16 or the
// 32-bit form, which is always c16+1.
func appendLen(b []byte, n int, fix byte, fixLimit int, c8, c16 byte) []byte {
	switch {
	case n < fixLimit:
		return append(b, fix|byte(n))
	case c8 != 0 && n <= math.MaxUint8:
		return append(b, c8, byte(n))
	case n <= math.MaxUint16:
		return append(b, c16, byte(n>>8), byte(n))
	}
	return binary.BigEndian.AppendUint32(append(b, c16+1), uint32(n))
}

// appendMapHeader appends the header of a map of n entries.
func appendMapHeader(b []byte, n int) []byte { return appendLen(b, n, mpFixMap, 16, 0, mpMap16) }

// appendArrayHeader appends the header of an array of n elements.
func appendArrayHeader(b []byte, n int) []byte { return appendLen(b, n, mpFixArray, 16, 0, mpArray16) }

// appendStr appends s as str.
func appendStr(b []byte, s string) []byte {
	return append(appendLen(b, len(s), mpFixStr, 32, mpStr8, mpStr16), s...)
}

// appendBin appends p as bin, or nil if p is nil.
func appendBin(b, p []byte) []byte {
	if p == nil {
		return append(b, mpNil)
	}
	return append(appendLen(b, len(p), 0, 0, mpBin8, mpBin16), p...)
}

// appendBool appends v as false or true.
func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, mpTrue)
	}
	return append(b, mpFalse)
}

// appendUint appends v in the shortest of positive fixint and uint8..64.
func appendUint(b []byte, v uint64) []byte {
	switch {
	case v <= math.MaxInt8:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, mpUint8, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, mpUint16), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, mpUint32), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, mpUint64), v)
}

// appendInt appends a signed integer the way the codec does: fixint from -32
// to 127, otherwise the shortest signed form, even for positive values.
func appendInt(b []byte, v int64) []byte {
	switch {
	case v >= -32 && v <= math.MaxInt8:
		return append(b, byte(v))
	case v >= math.MinInt8 && v < 0:
		return append(b, mpInt8, byte(v))
	case v >= math.MinInt16 && v <= math.MaxInt16:
		return binary.BigEndian.AppendUint16(append(b, mpInt16), uint16(v))
	case v >= math.MinInt32 && v <= math.MaxInt32:
		return binary.BigEndian.AppendUint32(append(b, mpInt32), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, mpInt64), uint64(v))
}

// appendList appends s as an array of maps.
func appendList[T any, P interface {
	*T
	fastMessage
}](b []byte, s []T) []byte {
	b = appendArrayHeader(b, len(s))
	for i := range s {
		b = P(&s[i]).appendMsgpack(b)
	}
	return b
}

// fields returns the number of set (non-omitted) fields, the size of the map.
func fields(set ...bool) int {
	n := 0
	for _, s := range set {
		if s {
			n++
		}
	}
	return n
}

// errFallback reports a body the fast decoder leaves to the reflection codec:
// a form that is rare but possibly valid, such as a struct sent as an array.
var errFallback = errors.New("wire: msgpack form left to the reflection codec")

// errUnknownField is returned by a readStruct field function for a key that
// names no field.
var errUnknownField = errors.New("wire: unknown field")

// maxSkipDepth bounds the nesting of skipped values; deeper ones go to the
// codec, whose own limit is far higher.
const maxSkipDepth = 32

// mpDecoder reads one message body for the decodeMsgpack methods. Its errors
// are *Error with CodeBadRequest, for input the codec rejects too, CodeTooLarge
// for a body that would take more than its budget to decode, or errFallback.
type mpDecoder struct {
	b    []byte
	off  int
	t    MsgType // for error messages
	left int     // bytes the decoded values may still take (spend)
}

// newMPDecoder returns a decoder of body, a body of a message of type t, with the budget
// decodeBudget(len(body)).
func newMPDecoder(body []byte, t MsgType) mpDecoder {
	return mpDecoder{b: body, t: t, left: decodeBudget(len(body))}
}

// decodeBudget is the most memory the values decoded from a body of n bytes may take: 16
// times the body, plus 1 MiB (a list of 1-byte keys takes 9 times its encoding). A list's length is checked against the bytes left (an element
// takes at least one), but its Go elements are far bigger than one byte: without the budget an
// 8 MiB body of empty elements would decode to hundreds of megabytes.
func decodeBudget(n int) int { return 16*n + 1<<20 }

// spend takes n bytes from the budget, or returns the CodeTooLarge error that refuses the body
// before they are allocated.
func (d *mpDecoder) spend(n int, what string) error {
	if n > d.left {
		return Errorf(CodeTooLarge, "%s body of %d bytes would take more than %d bytes to decode (at %s, offset %d)",
			d.t, len(d.b), decodeBudget(len(d.b)), what, d.off)
	}
	d.left -= n
	return nil
}

// decode decodes the body d was set up with, which must hold exactly one
// msgpack value, into the zero m. It never panics and never aliases the body.
func (d *mpDecoder) decode(m fastMessage) error {
	if err := m.decodeMsgpack(d); err != nil {
		return err
	}
	if n := len(d.b) - d.off; n != 0 {
		return d.errorf("%d trailing bytes", n)
	}
	return nil
}

// errorf returns a bad_request *Error for the body at the current offset.
func (d *mpDecoder) errorf(format string, args ...any) error {
	return Errorf(CodeBadRequest, "invalid %s body: %s at offset %d", d.t, fmt.Sprintf(format, args...), d.off)
}

// mpKind classifies a msgpack value.
type mpKind uint8

const (
	kindNil mpKind = iota
	kindBool
	kindUint  // positive fixint, uint8..64
	kindInt   // negative fixint, int8..64
	kindFloat // float32, float64
	kindStr
	kindBin
	kindArray
	kindMap
	kindExt
)

// kindNames names the kinds in error messages.
var kindNames = [...]string{"nil", "bool", "uint", "int", "float", "str", "bin", "array", "map", "ext"}

// take consumes n bytes.
func (d *mpDecoder) take(n int) ([]byte, error) {
	if rest := d.b[d.off:]; n <= len(rest) {
		d.off += n
		return rest[:n:n], nil
	}
	return nil, d.errEOF()
}

// errEOF is kept out of line so that take inlines.
//
//go:noinline
func (d *mpDecoder) errEOF() error { return d.errorf("unexpected end of input") }

// uintN consumes an n-byte big-endian unsigned integer (n is 1, 2, 4 or 8).
func (d *mpDecoder) uintN(n int) (uint64, error) {
	p, err := d.take(n)
	switch {
	case err != nil:
		return 0, err
	case n == 1:
		return uint64(p[0]), nil
	case n == 2:
		return uint64(binary.BigEndian.Uint16(p)), nil
	case n == 4:
		return uint64(binary.BigEndian.Uint32(p)), nil
	}
	return binary.BigEndian.Uint64(p), nil
}

// head consumes the header of the next value and returns its kind and v: for
// kindUint the value, for kindInt the value as int64 bits, for kindBool 0 or
// 1, for str, bin, array and map the length, which is checked against the
// remaining input (an entry takes at least one byte), so that no caller
// allocates more than the input justifies. Floats are consumed whole; for
// kindExt only the format byte is.
func (d *mpDecoder) head() (k mpKind, v uint64, err error) {
	if d.off >= len(d.b) {
		return 0, 0, d.errEOF()
	}
	b := d.b[d.off]
	d.off++
	var w int // width of the length or value that follows
	switch {
	case b <= 0x7f:
		return kindUint, uint64(b), nil
	case b >= 0xe0:
		return kindInt, uint64(int64(int8(b))), nil
	case b < mpFixArray:
		k, v = kindMap, uint64(b&0x0f)
	case b < mpFixStr:
		k, v = kindArray, uint64(b&0x0f)
	case b < mpNil:
		k, v = kindStr, uint64(b&0x1f)
	case b == mpNil:
		return kindNil, 0, nil
	case b == mpFalse, b == mpTrue:
		return kindBool, uint64(b - mpFalse), nil
	case b >= mpBin8 && b <= mpBin32:
		k, w = kindBin, 1<<(b-mpBin8)
	case b >= mpExt8 && b <= mpExt32, b >= mpFixExt1 && b <= mpFixExt16:
		return kindExt, 0, nil
	case b == mpFloat32, b == mpFloat64:
		_, err := d.take(4 << (b - mpFloat32))
		return kindFloat, 0, err
	case b >= mpUint8 && b <= mpUint64:
		v, err := d.uintN(1 << (b - mpUint8))
		return kindUint, v, err
	case b >= mpInt8 && b <= mpInt64:
		shift := 64 - 8<<(b-mpInt8) // sign-extends the 8 << (b-mpInt8) bits read
		v, err := d.uintN(1 << (b - mpInt8))
		return kindInt, uint64(int64(v<<shift) >> shift), err
	case b >= mpStr8 && b <= mpStr32:
		k, w = kindStr, 1<<(b-mpStr8)
	case b == mpArray16, b == mpArray32:
		k, w = kindArray, 2<<(b-mpArray16)
	case b == mpMap16, b == mpMap32:
		k, w = kindMap, 2<<(b-mpMap16)
	default: // 0xc1, never used
		d.off--
		return 0, 0, d.errorf("reserved byte 0x%x", b)
	}
	if w > 0 {
		if v, err = d.uintN(w); err != nil {
			return 0, 0, err
		}
	}
	need := v
	if k == kindMap {
		need = 2 * v
	}
	if rest := uint64(len(d.b) - d.off); need > rest {
		return 0, 0, d.errorf("%s of length %d exceeds the %d remaining bytes", kindNames[k], v, rest)
	}
	return k, v, nil
}

// wrongKind returns the error for a value of kind k where want was expected.
func (d *mpDecoder) wrongKind(k mpKind, want string) error {
	if k == kindExt {
		return errFallback
	}
	return d.errorf("got %s, want %s", kindNames[k], want)
}

// readMapHeader reads the header of a struct: its number of fields, or -1 for
// nil.
func (d *mpDecoder) readMapHeader() (int, error) {
	switch k, n, err := d.head(); {
	case err != nil:
		return 0, err
	case k == kindMap:
		return int(n), nil
	case k == kindNil:
		return -1, nil
	case k == kindArray:
		return 0, errFallback // a struct as an array of its fields
	default:
		return 0, d.wrongKind(k, "map")
	}
}

// readArrayHeader reads the header of a slice: its length, or -1 for nil.
func (d *mpDecoder) readArrayHeader() (int, error) {
	switch k, n, err := d.head(); {
	case err != nil:
		return 0, err
	case k == kindArray:
		return int(n), nil
	case k == kindNil:
		return -1, nil
	case k == kindMap:
		return 0, errFallback // the codec reads the keys and values as elements
	default:
		return 0, d.wrongKind(k, "array")
	}
}

// readUint reads a non-negative integer of at most bits bits; nil reads as 0.
func (d *mpDecoder) readUint(bits int) (uint64, error) {
	switch k, v, err := d.head(); {
	case err != nil:
		return 0, err
	case k == kindNil:
		return 0, nil
	case k == kindInt && int64(v) < 0:
		return 0, d.errorf("negative value %d for an unsigned field", int64(v))
	case k != kindUint && k != kindInt:
		return 0, d.wrongKind(k, "integer")
	case bits < 64 && v>>bits != 0:
		return 0, d.errorf("value %d overflows uint%d", v, bits)
	default:
		return v, nil
	}
}

// readInt reads an integer into an int; nil reads as 0. Like the codec, it
// takes a uint64 above math.MaxInt64 as its two's complement.
func (d *mpDecoder) readInt() (int, error) {
	switch k, v, err := d.head(); {
	case err != nil:
		return 0, err
	case k == kindNil:
		return 0, nil
	case k != kindUint && k != kindInt:
		return 0, d.wrongKind(k, "integer")
	case int64(int(v)) != int64(v):
		return 0, d.errorf("value %d overflows int", int64(v))
	default:
		return int(v), nil
	}
}

// readBool reads a bool: nil, false, true, or the fixints 0 and 1.
func (d *mpDecoder) readBool() (bool, error) {
	if d.off < len(d.b) {
		switch d.b[d.off] {
		case mpNil, mpFalse, 0:
			d.off++
			return false, nil
		case mpTrue, 1:
			d.off++
			return true, nil
		}
	}
	k, _, err := d.head()
	if err != nil {
		return false, err
	}
	return false, d.wrongKind(k, "bool")
}

// readRaw reads str or bin and returns its bytes, aliasing the input (not nil,
// even if empty), or nil for msgpack nil. what names the expected type in
// errors.
func (d *mpDecoder) readRaw(what string) ([]byte, error) {
	switch k, n, err := d.head(); {
	case err != nil:
		return nil, err
	case k == kindStr, k == kindBin:
		return d.take(int(n))
	case k == kindNil:
		return nil, nil
	case k == kindArray:
		return nil, errFallback // bytes as an array of integers
	case k == kindMap && what == "bytes":
		return nil, errFallback // the codec reads a []byte as a slice
	default:
		return nil, d.wrongKind(k, what)
	}
}

// readBytes reads a []byte: a copy of a str or bin (empty, not nil, if its
// length is 0), or nil.
func (d *mpDecoder) readBytes() ([]byte, error) {
	p, err := d.readRaw("bytes")
	if p == nil || err != nil {
		return nil, err
	}
	if err := d.spend(len(p), "bytes"); err != nil {
		return nil, err
	}
	return append(make([]byte, 0, len(p)), p...), nil
}

// readStr reads a string from a str or bin; nil reads as "".
func (d *mpDecoder) readStr() (string, error) {
	p, err := d.readRaw("string")
	if err == nil {
		err = d.spend(len(p), "a string")
	}
	if err != nil {
		return "", err
	}
	return string(p), nil
}

// readStruct reads a struct (a map, or nil). For each key it calls field,
// which decodes the value of a known field or returns errUnknownField, without
// reading, for a key it does not know, whose value is then skipped.
func (d *mpDecoder) readStruct(field func(key []byte) error) error {
	n, err := d.readMapHeader()
	if err != nil {
		return err
	}
	var seen [8][]byte // known keys read so far
	ns := 0
	for ; n > 0; n-- {
		start := d.off
		key, err := d.readRaw("field name")
		switch {
		case err != nil:
			return err
		case len(key) == 0: // the codec fails on an empty or nil key
			d.off = start
			return d.errorf("empty field name")
		}
		for _, s := range seen[:ns] {
			if string(s) == string(key) {
				return errFallback // the codec merges repeated fields
			}
		}
		switch err := field(key); {
		case err == errUnknownField:
			if err := d.skip(0); err != nil {
				return err
			}
		case err != nil:
			return err
		case ns == len(seen):
			return errFallback
		default:
			seen[ns] = key
			ns++
		}
	}
	return nil
}

// readList reads a slice (an array, or nil) whose elements elem decodes.
func readList[T any](d *mpDecoder, elem func(*T) error) ([]T, error) {
	n, err := d.readArrayHeader()
	if n < 0 || err != nil {
		return nil, err
	}
	if err := d.spend(n*int(unsafe.Sizeof(*new(T))), fmt.Sprintf("a list of %d", n)); err != nil {
		return nil, err
	}
	s := make([]T, n)
	for i := range s {
		if err := elem(&s[i]); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// readStructs reads a slice of structs.
func readStructs[T any, P interface {
	*T
	fastMessage
}](d *mpDecoder) ([]T, error) {
	return readList(d, func(p *T) error { return P(p).decodeMsgpack(d) })
}

// skip consumes one value of any kind, at nesting depth depth.
func (d *mpDecoder) skip(depth int) error {
	k, n, err := d.head()
	switch {
	case err != nil:
		return err
	case k == kindExt, depth >= maxSkipDepth:
		return errFallback
	case k == kindStr, k == kindBin:
		d.off += int(n) // head checked the length
	case k == kindArray, k == kindMap:
		if k == kindMap {
			n *= 2
		}
		for ; n > 0; n-- {
			if err := d.skip(depth + 1); err != nil {
				return err
			}
		}
	}
	return nil
}

// reflectElemCost is what weigh charges for each element of an array or map: more than any
// protocol type's Go value takes.
const reflectElemCost = 128

// maxWeighDepth is the reflection codec's own nesting limit.
const maxWeighDepth = 1024

// weigh walks one value, at nesting depth depth, and spends on the budget what the reflection
// codec could allocate for it: reflectElemCost per array or map element and the bytes of every
// str, bin and ext. The reflection codec decodes a list as it goes, so a list of millions of
// empty elements would take its memory before any limit of ours saw its length; weigh refuses
// it first.
func (d *mpDecoder) weigh(depth int) error {
	k, n, err := d.head()
	switch {
	case err != nil:
		return err
	case depth >= maxWeighDepth:
		return d.errorf("values nested deeper than %d", maxWeighDepth)
	case k == kindExt:
		return d.skipExt()
	case k == kindStr, k == kindBin:
		d.off += int(n) // head checked the length
		return d.spend(int(n), kindNames[k])
	case k == kindArray, k == kindMap:
		if k == kindMap {
			n *= 2
		}
		if err := d.spend(int(n)*reflectElemCost, fmt.Sprintf("%s of %d", kindNames[k], n)); err != nil {
			return err
		}
		for ; n > 0; n-- {
			if err := d.weigh(depth + 1); err != nil {
				return err
			}
		}
	}
	return nil
}

// skipExt consumes the rest of an ext value whose format byte head consumed, and spends its
// length.
func (d *mpDecoder) skipExt() error {
	var n int
	switch b := d.b[d.off-1]; {
	case b >= mpFixExt1 && b <= mpFixExt16:
		n = 1 << (b - mpFixExt1)
	default: // ext 8, 16, 32
		v, err := d.uintN(1 << (b - mpExt8))
		if err != nil {
			return err
		}
		if v > uint64(len(d.b)) {
			return d.errEOF()
		}
		n = int(v)
	}
	if _, err := d.take(1 + n); err != nil { // the type byte, then the data
		return err
	}
	return d.spend(n, "ext")
}
