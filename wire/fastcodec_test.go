package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// hotTypes are the message types with a hand-written codec.
var hotTypes = []MsgType{MsgError, MsgGet, MsgGetReply, MsgTxn, MsgTxnReply, MsgApply, MsgApplyReply,
	MsgPrepare, MsgPrepareReply, MsgCommit, MsgAbort, MsgAck, MsgSync, MsgCommitBatch, MsgRestore, MsgRestoreReply, MsgScan, MsgScanReply}

// reflectMarshal encodes m with the reflection codec only.
func reflectMarshal(t testing.TB, m Message) []byte {
	t.Helper()
	e := getEncoder()
	defer putEncoder(e)
	if err := e.encodeReflect(m); err != nil {
		t.Fatalf("reflection encode %T: %v", m, err)
	}
	return append([]byte(nil), e.buf...)
}

// fastUnmarshal decodes body into a new message of type mt with the
// hand-written decoder only.
func fastUnmarshal(mt MsgType, body []byte) (Message, error) {
	m := NewMessage(mt)
	d := newMPDecoder(body, mt)
	return m, d.decode(m.(fastMessage))
}

// reflectUnmarshal decodes body into a new message of type mt with the
// reflection codec only.
func reflectUnmarshal(mt MsgType, body []byte) (Message, error) {
	m := NewMessage(mt)
	return m, new(decoder).decodeReflect(body, m)
}

func TestFastMessageTypes(t *testing.T) {
	hot := map[MsgType]bool{}
	for _, mt := range hotTypes {
		hot[mt] = true
	}
	for mt := MsgError; mt.Valid(); mt++ {
		if _, ok := NewMessage(mt).(fastMessage); ok != hot[mt] {
			t.Errorf("%s: fastMessage = %v, want %v", mt, ok, hot[mt])
		}
	}
}

// TestGoMsgpackChoices pins the go-msgpack encodings the fast encoder copies.
func TestGoMsgpackChoices(t *testing.T) {
	for _, c := range []struct {
		m    Message
		want string
	}{
		// Keys sorted by name, not in field order.
		{&TxnReply{TxnID: 1, CommitTS: 2, Path: "x"}, "\x83\xa8CommitTS\x02\xa4Path\xa1x\xa5TxnID\x01"},
		{&GetReply{Values: []KeyValue{{Found: true, Key: []byte{}}}, ReadTS: 3}, "\x82\xa6ReadTS\x03\xa6Values\x91\x81\xa5Found\xc3"},
		// A positive int is signed: int16, not uint8.
		{&Error{Index: 200}, "\x81\xa5Index\xd1\x00\xc8"},
		{&Error{Index: -33, Code: 255}, "\x82\xa4Code\xcc\xff\xa5Index\xd0\xdf"},
		// nil and empty elements of a [][]byte differ; []string uses fixstr.
		{&GetRequest{Keys: [][]byte{nil, {}}}, "\x81\xa4Keys\x92\xc0\xc4\x00"},
		{&PrepareRequest{Participants: []string{""}}, "\x81\xacParticipants\x91\xa0"},
		// Commits has no omitempty.
		{&SyncRequest{}, "\x81\xa7Commits\xc0"},
		{&SyncRequest{Commits: []CommitRequest{}}, "\x81\xa7Commits\x90"},
		{&Ack{}, "\x80"},
		{(*GetRequest)(nil), "\xc0"},
		// str8 exists, but bin has no fix form.
		{&TxnReply{Path: strings.Repeat("p", 32)}, "\x81\xa4Path\xd9\x20" + strings.Repeat("p", 32)},
		{&AbortRequest{TxnID: 1 << 32}, "\x81\xa5TxnID\xcf\x00\x00\x00\x01\x00\x00\x00\x00"},
	} {
		if got := string(reflectMarshal(t, c.m)); got != c.want {
			t.Errorf("codec %#v:\n got %q\nwant %q", c.m, got, c.want)
		}
		if got, err := Marshal(c.m); err != nil || string(got) != c.want {
			t.Errorf("fast %#v:\n got %q, %v\nwant %q", c.m, got, err, c.want)
		}
	}
}

// gen generates random message values and msgpack, biased towards the
// boundaries of the msgpack encodings.
type gen struct{ r *rand.Rand }

func newGen(seed uint64) gen { return gen{rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))} }

func (g gen) pick(n int) int { return g.r.IntN(n) }

// uint returns a random value of at most bits bits.
func (g gen) uint(bits int) uint64 {
	edges := []uint64{0, 1, 31, 32, 127, 128, 255, 256, 65535, 65536, 1<<32 - 1, 1 << 32, math.MaxUint64}
	var v uint64
	if g.pick(2) == 0 {
		v = edges[g.pick(len(edges))]
	} else {
		v = g.r.Uint64() >> g.pick(64)
	}
	if bits < 64 {
		v &= 1<<bits - 1
	}
	return v
}

func (g gen) int() int64 {
	edges := []int64{0, -1, -32, -33, 127, 128, -128, -129, 255, 256, math.MaxInt16, math.MaxInt16 + 1, math.MinInt16,
		math.MinInt16 - 1, math.MaxInt32, math.MaxInt32 + 1, math.MinInt32, math.MinInt32 - 1, math.MaxInt64, math.MinInt64}
	if g.pick(2) == 0 {
		return edges[g.pick(len(edges))]
	}
	v := int64(g.r.Uint64() >> g.pick(64))
	if g.pick(2) == 0 {
		v = -v
	}
	return v
}

// length returns a random length, -1 meaning nil, with the length edges of
// the msgpack formats; the big ones are rare.
func (g gen) length(big bool) int {
	switch g.pick(12) {
	case 0:
		return -1
	case 1:
		return 0
	case 2:
		return []int{15, 16, 17, 31, 32, 33}[g.pick(6)]
	case 3:
		if big && g.pick(20) == 0 {
			return []int{255, 256, 1000}[g.pick(3)] // see TestFastCodecBigValues for more
		}
	}
	return 1 + g.pick(6)
}

func (g gen) bytes(big bool) []byte {
	n := g.length(big)
	if n < 0 {
		return nil
	}
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(g.r.Uint32())
	}
	return p
}

// fill sets v, a zero value, to a random value: zero fields, nil and empty
// slices, edge-case integers and lengths.
func (g gen) fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Bool:
		v.SetBool(g.pick(2) == 0)
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(g.uint(v.Type().Bits()))
	case reflect.Int:
		v.SetInt(g.int())
	case reflect.String:
		v.SetString(string(g.bytes(true)))
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			v.SetBytes(g.bytes(true))
			return
		}
		n := g.length(false)
		if n < 0 {
			return
		}
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := 0; i < n; i++ {
			g.fill(s.Index(i))
		}
		v.Set(s)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if g.pick(4) != 0 {
				g.fill(v.Field(i))
			}
		}
	}
}

func (g gen) message(mt MsgType) Message {
	m := NewMessage(mt)
	g.fill(reflect.ValueOf(m).Elem())
	return m
}

// TestFastCodecMatchesReflection checks, over many random values of every hot
// type, that the fast encoding is the codec's byte for byte and that both
// decoders decode it to the same value.
func TestFastCodecMatchesReflection(t *testing.T) {
	n := 1500
	if testing.Short() {
		n = 150
	}
	g := newGen(1)
	for _, mt := range hotTypes {
		for i := 0; i < n; i++ {
			m := g.message(mt)
			want := reflectMarshal(t, m)
			got, err := Marshal(m)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s %#v:\nfast  %x (%v)\ncodec %x", mt, m, trunc(got), err, trunc(want))
			}
			fast, ferr := fastUnmarshal(mt, got)
			ref, rerr := reflectUnmarshal(mt, got)
			if ferr != nil || rerr != nil {
				t.Fatalf("%s %x: fast decode %v, codec decode %v", mt, trunc(got), ferr, rerr)
			}
			if !reflect.DeepEqual(fast, ref) {
				t.Fatalf("%s %x decodes differently:\nfast  %#v\ncodec %#v", mt, trunc(got), fast, ref)
			}
		}
	}
}

// TestFastCodecBigValues checks the 16- and 32-bit length formats, which the
// random values of TestFastCodecMatchesReflection rarely reach. (Lists of
// empty elements would be refused: see TestDecodeAmplificationIsRefused.)
func TestFastCodecBigValues(t *testing.T) {
	var msgs []Message
	for _, n := range []int{65535, 65536} {
		p := bytes.Repeat([]byte{'v'}, n)
		k := p[:1]
		msgs = append(msgs,
			&GetRequest{Keys: fill(n, k)},
			&GetReply{Values: fill(n, KeyValue{Key: k, Found: true, Value: k, Version: 1}), ReadTS: 1},
			&TxnRequest{Ops: []Op{{Kind: OpPut, Key: k, Value: p}}, Compares: fill(n, Compare{Kind: CmpExists, Key: k})},
			&PrepareRequest{Participants: fill(n, "n"), Ops: fill(n, Op{Kind: OpPut, Key: k, Value: k})},
			&SyncRequest{Commits: fill(n, CommitRequest{TxnID: 1, CommitTS: 2})},
			&CommitBatchRequest{Commits: fill(n, CommitRequest{TxnID: 1, CommitTS: 2})},
			&TxnReply{Path: string(p)},
			&Error{Message: string(p), Code: CodeInternal},
		)
	}
	for _, m := range msgs {
		want := reflectMarshal(t, m)
		got, err := Marshal(m)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: fast %x (%v), codec %x", m.MsgType(), trunc(got), err, trunc(want))
		}
		fast, ferr := fastUnmarshal(m.MsgType(), got)
		ref, rerr := reflectUnmarshal(m.MsgType(), got)
		if ferr != nil || rerr != nil || !reflect.DeepEqual(fast, ref) {
			t.Fatalf("%s: fast decode %v, codec decode %v, equal %v", m.MsgType(), ferr, rerr, reflect.DeepEqual(fast, ref))
		}
	}
}

// fill returns a slice of n copies of v.
func fill[T any](n int, v T) []T {
	s := make([]T, n)
	for i := range s {
		s[i] = v
	}
	return s
}

func trunc(b []byte) []byte {
	if len(b) > 200 {
		return b[:200]
	}
	return b
}

// rewrite re-encodes the msgpack value at the start of in in an equivalent
// form the fast encoder never produces: wider integer and length formats,
// signed formats for non-negative integers, str for bin and bin for str, bool
// as fixint 0 or 1, shuffled map entries and extra unknown fields. It returns
// the new encoding and the rest of in. in must be go-msgpack output.
func (g gen) rewrite(in []byte) (out, rest []byte) {
	b, in := in[0], in[1:]
	switch {
	case b <= 0x7f:
		return g.intForm(int64(b)), in
	case b >= 0xe0:
		return g.intForm(int64(int8(b))), in
	case b == mpNil:
		return []byte{b}, in
	case b == mpFalse || b == mpTrue:
		if g.pick(3) == 0 {
			return []byte{b - mpFalse}, in
		}
		return []byte{b}, in
	case b >= mpUint8 && b <= mpUint64:
		n := 1 << (b - mpUint8)
		v := uint64(0)
		for _, c := range in[:n] {
			v = v<<8 | uint64(c)
		}
		if v > math.MaxInt64 {
			return append([]byte{b}, in[:n]...), in[n:]
		}
		return g.intForm(int64(v)), in[n:]
	case b >= mpInt8 && b <= mpInt64:
		n := 1 << (b - mpInt8)
		v := uint64(0)
		for _, c := range in[:n] {
			v = v<<8 | uint64(c)
		}
		shift := 64 - 8*n
		return g.intForm(int64(v<<shift) >> shift), in[n:]
	}
	var n, w int
	var kind byte // 's' str/bin, 'a' array, 'm' map
	switch {
	case b < mpFixArray:
		kind, n = 'm', int(b&0x0f)
	case b < mpFixStr:
		kind, n = 'a', int(b&0x0f)
	case b < mpNil:
		kind, n = 's', int(b&0x1f)
	case b >= mpBin8 && b <= mpBin32:
		kind, w = 's', 1<<(b-mpBin8)
	case b >= mpStr8 && b <= mpStr32:
		kind, w = 's', 1<<(b-mpStr8)
	case b == mpArray16 || b == mpArray32:
		kind, w = 'a', 2<<(b-mpArray16)
	case b == mpMap16 || b == mpMap32:
		kind, w = 'm', 2<<(b-mpMap16)
	default:
		panic("rewrite: unexpected format byte")
	}
	for _, c := range in[:w] {
		n = n<<8 | int(c)
	}
	in = in[w:]
	switch kind {
	case 's':
		return append(g.strHeader(n), in[:n]...), in[n:]
	case 'a':
		out = g.lenHeader(n, mpFixArray, mpArray16)
		for i := 0; i < n; i++ {
			var e []byte
			e, in = g.rewrite(in)
			out = append(out, e...)
		}
		return out, in
	}
	var entries [][]byte
	for i := 0; i < 2*n; i += 2 {
		var k, v []byte
		k, in = g.rewrite(in)
		v, in = g.rewrite(in)
		entries = append(entries, append(k, v...))
	}
	for i := g.pick(3); i > 0; i-- {
		entries = append(entries, append(appendStr(nil, "Zz"+string(rune('a'+g.pick(26)))), g.value(0)...))
	}
	g.r.Shuffle(len(entries), func(i, j int) { entries[i], entries[j] = entries[j], entries[i] })
	out = g.lenHeader(len(entries), mpFixMap, mpMap16)
	return append(out, bytes.Join(entries, nil)...), in
}

// intForm returns v in a random integer format that holds it.
func (g gen) intForm(v int64) []byte {
	var forms [][]byte
	if v >= -32 && v <= 127 {
		forms = append(forms, []byte{byte(v)})
	}
	for i, w := range []int{1, 2, 4, 8} {
		bits := 8 * w
		if v >= 0 && (bits == 64 || v < 1<<bits) {
			forms = append(forms, binary.BigEndian.AppendUint64(nil, uint64(v))[8-w:])
			forms[len(forms)-1] = append([]byte{mpUint8 + byte(i)}, forms[len(forms)-1]...)
		}
		if bits == 64 || (v >= -1<<(bits-1) && v < 1<<(bits-1)) {
			forms = append(forms, append([]byte{mpInt8 + byte(i)}, binary.BigEndian.AppendUint64(nil, uint64(v))[8-w:]...))
		}
	}
	return forms[g.pick(len(forms))]
}

// strHeader returns a random str or bin header for length n.
func (g gen) strHeader(n int) []byte {
	var forms [][]byte
	if n < 32 {
		forms = append(forms, []byte{mpFixStr | byte(n)})
	}
	for i, w := range []int{1, 2, 4} {
		if w == 4 || n < 1<<(8*w) {
			l := binary.BigEndian.AppendUint32(nil, uint32(n))[4-w:]
			forms = append(forms, append([]byte{mpStr8 + byte(i)}, l...), append([]byte{mpBin8 + byte(i)}, l...))
		}
	}
	return forms[g.pick(len(forms))]
}

// lenHeader returns a random array or map header for length n.
func (g gen) lenHeader(n int, fix, c16 byte) []byte {
	forms := [][]byte{append([]byte{c16 + 1}, binary.BigEndian.AppendUint32(nil, uint32(n))...)}
	if n < 16 {
		forms = append(forms, []byte{fix | byte(n)})
	}
	if n < 1<<16 {
		forms = append(forms, append([]byte{c16}, byte(n>>8), byte(n)))
	}
	return forms[g.pick(len(forms))]
}

// value returns a random msgpack value for an unknown field: any kind but
// ext, nested.
func (g gen) value(depth int) []byte {
	k := g.pick(10)
	if depth > 3 && k >= 8 {
		k = 0
	}
	switch k {
	case 0:
		return []byte{mpNil}
	case 1:
		return []byte{mpFalse + byte(g.pick(2))}
	case 2:
		return g.intForm(g.int())
	case 3:
		return append([]byte{mpFloat32}, 1, 2, 3, 4)
	case 4:
		return binary.BigEndian.AppendUint64([]byte{mpFloat64}, g.r.Uint64())
	case 5, 6:
		p := g.bytes(false)
		return append(g.strHeader(len(p)), p...)
	case 7:
		return []byte{mpFixMap} // empty map
	case 8:
		n := g.pick(4)
		out := g.lenHeader(n, mpFixArray, mpArray16)
		for i := 0; i < n; i++ {
			out = append(out, g.value(depth+1)...)
		}
		return out
	default:
		n := g.pick(4)
		out := g.lenHeader(n, mpFixMap, mpMap16)
		for i := 0; i < 2*n; i++ { // keys of any kind, even nil
			out = append(out, g.value(depth+1)...)
		}
		return out
	}
}

// TestFastDecodeAcceptsCodecVariants decodes random codec encodings rewritten
// into forms the fast encoder never produces (reordered and unknown fields,
// wider and signed integers, str for bin): the fast decoder must take them
// itself, giving what the codec gives for them and for the original.
func TestFastDecodeAcceptsCodecVariants(t *testing.T) {
	n := 1000
	if testing.Short() {
		n = 100
	}
	g := newGen(2)
	for _, mt := range hotTypes {
		for i := 0; i < n; i++ {
			body := reflectMarshal(t, g.message(mt))
			want, err := reflectUnmarshal(mt, body)
			if err != nil {
				t.Fatal(err)
			}
			variant, rest := g.rewrite(body)
			if len(rest) != 0 {
				t.Fatalf("rewrite left %d bytes", len(rest))
			}
			fast, ferr := fastUnmarshal(mt, variant)
			ref, rerr := reflectUnmarshal(mt, variant)
			if ferr != nil || rerr != nil {
				t.Fatalf("%s %x -> %x: fast decode %v, codec decode %v", mt, trunc(body), trunc(variant), ferr, rerr)
			}
			if !reflect.DeepEqual(fast, want) || !reflect.DeepEqual(ref, want) {
				t.Fatalf("%s %x -> %x:\nfast  %#v\ncodec %#v\nwant  %#v", mt, trunc(body), trunc(variant), fast, ref, want)
			}
		}
	}
}

// fastDecodeCases are bodies the fast decoder must reject or leave to the
// codec (errFallback), with the type they are decoded as.
var fastDecodeCases = []struct {
	name     string
	mt       MsgType
	body     string
	fallback bool
}{
	{"empty", MsgGet, "", false},
	{"truncated", MsgGet, "\x81\xa6ReadTS\xcd\x01", false},
	{"trailing bytes", MsgAck, "\x80\xc0", false},
	{"reserved byte", MsgGet, "\xc1", false},
	{"reserved in unknown", MsgGet, "\x81\xa1x\x91\xc1", false},
	{"string not map", MsgGet, "\xa3abc", false},
	{"int as slice", MsgGet, "\x81\xa4Keys\x05", false},
	{"str as slice", MsgGet, "\x81\xa4Keys\xa1x", false},
	{"nil key", MsgGet, "\x81\xc0\x01", false},
	{"empty key", MsgGet, "\x81\xa0\x01", false},
	{"int key", MsgGet, "\x81\x01\x01", false},
	{"huge array", MsgGet, "\x81\xa4Keys\xdd\xff\xff\xff\xff", false},
	{"huge map", MsgGet, "\xdf\xff\xff\xff\xff", false},
	{"map longer than input", MsgGet, "\x83\xa1x\x01", false},
	{"huge bin", MsgGet, "\x81\xa4Keys\x91\xc6\xff\xff\xff\xff\x01", false},
	{"huge str", MsgError, "\x81\xa7Message\xdb\x7f\xff\xff\xff", false},
	{"huge skipped bin", MsgGet, "\x81\xa1x\xc6\xff\xff\xff\xff", false},
	{"negative uint", MsgGet, "\x81\xa6ReadTS\xff", false},
	{"negative int64", MsgGet, "\x81\xa6ReadTS\xd3\xff\xff\xff\xff\xff\xff\xff\xff", false},
	{"kind overflow", MsgTxn, "\x81\xa3Ops\x91\x81\xa4Kind\xcd\x01\x00", false},
	{"code overflow", MsgError, "\x81\xa4Code\xce\x00\x01\x00\x00", false},
	{"float as uint", MsgGet, "\x81\xa6ReadTS\xca\x00\x00\x00\x00", false},
	{"bool 2", MsgGetReply, "\x81\xa6Values\x91\x81\xa5Found\x02", false},
	{"map as string", MsgError, "\x81\xa7Message\x80", false},
	{"int as struct", MsgGetReply, "\x81\xa6Values\x91\x07", false},
	{"str as uint", MsgGet, "\x81\xa6ReadTS\xa1x", false},
	{"struct as array", MsgGet, "\x92\xc0\x05", true},
	{"element as array", MsgTxn, "\x81\xa3Ops\x91\x90", true},
	{"ack as array", MsgAck, "\x90", true},
	{"bytes as array", MsgGet, "\x81\xa4Keys\x91\x92\x01\x02", true},
	{"bytes as map", MsgGetReply, "\x81\xa6Values\x91\x81\xa3Key\x80", true},
	{"string as array", MsgError, "\x81\xa7Message\x91\x41", true},
	{"slice as map", MsgGet, "\x81\xa4Keys\x81\xa1a\xa1b", true},
	{"array key", MsgGet, "\x81\x91\x41\x01", true},
	{"ext", MsgGet, "\x81\xa1x\xd4\x01\x01", true},
	{"ext of length 0", MsgGet, "\x81\xa1x\xc7\x00\x05\x07", true},
	{"time ext", MsgGet, "\x81\xa1x\xd4\xff\x01", true},
	{"repeated field", MsgGetReply, "\x82\xa6Values\x91\x81\xa5Found\xc3\xa6Values\x91\x81\xa3Key\xa1k", true},
	{"deep nesting", MsgGet, "\x81\xa1x" + strings.Repeat("\x91", 40) + "\xc0", true},
}

// TestFastDecodeRejects checks that the fast decoder rejects invalid bodies
// as the codec does, with a bad_request "invalid <type> body" error, leaves
// the rarer valid forms to the codec, and that Unmarshal agrees with the codec
// on all of them.
func TestFastDecodeRejects(t *testing.T) {
	for _, c := range fastDecodeCases {
		body := []byte(c.body)
		_, ferr := fastUnmarshal(c.mt, body)
		ref, rerr := reflectUnmarshal(c.mt, body)
		if c.fallback {
			if ferr != errFallback {
				t.Errorf("%s: fast decode: %v, want errFallback", c.name, ferr)
			}
		} else {
			var we *Error
			prefix := "invalid " + c.mt.String() + " body: "
			if !errors.As(ferr, &we) || we.Code != CodeBadRequest || !strings.HasPrefix(we.Message, prefix) {
				t.Errorf("%s: fast decode: %v, want bad_request %q...", c.name, ferr, prefix)
			}
			if rerr == nil {
				t.Errorf("%s: the codec accepts it: %#v", c.name, ref)
			}
		}
		m := NewMessage(c.mt)
		reflect.ValueOf(m).Elem().Set(reflect.ValueOf(g1.message(c.mt)).Elem())
		err := Unmarshal(body, m)
		if (err == nil) != (rerr == nil) || err == nil && !reflect.DeepEqual(m, ref) {
			t.Errorf("%s: Unmarshal = %v, %#v; codec %v, %#v", c.name, err, m, rerr, ref)
		}
		if err != nil && !reflect.ValueOf(m).Elem().IsZero() {
			t.Errorf("%s: target not left zero: %#v", c.name, m)
		}
	}
}

var g1 = newGen(3)

// BenchmarkCodec measures encoding plus decoding of a PrepareRequest (two
// ops with 100-byte values) and of a GetReply, with the hand-written codec
// ("fast") and with go-msgpack's reflection codec ("reflect").
func BenchmarkCodec(b *testing.B) {
	val := func(c byte) []byte { return bytes.Repeat([]byte{c}, 100) }
	msgs := []Message{
		&PrepareRequest{TxnID: 1 << 40, StartTS: 1<<40 + 7,
			Ops:          []Op{{Kind: OpPut, Key: []byte("user/000123"), Value: val('a')}, {Kind: OpPut, Key: []byte("user/000456"), Value: val('b')}},
			Participants: []string{"node-1", "node-2"}},
		&GetReply{ReadTS: 1<<40 + 9, Values: []KeyValue{
			{Key: []byte("user/000123"), Value: val('a'), Version: 1<<40 + 3, Found: true},
			{Key: []byte("user/000456")},
		}},
	}
	for _, m := range msgs {
		for _, fast := range []bool{true, false} {
			name := m.MsgType().String() + "/reflect"
			if fast {
				name = m.MsgType().String() + "/fast"
			}
			b.Run(name, func(b *testing.B) {
				e := getEncoder()
				defer putEncoder(e)
				d := &decoder{dec: codec.NewDecoderBytes(emptyBody, handle)}
				b.ReportAllocs()
				for b.Loop() {
					out := NewMessage(m.MsgType())
					var err error
					if fast {
						if err = e.encode(m); err == nil {
							err = decodeWith(d, e.buf, out)
						}
					} else if err = e.encodeReflect(m); err == nil {
						err = d.decodeReflect(e.buf, out)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
