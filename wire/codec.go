package wire

import (
	"fmt"
	"io"
	"reflect"
	"sync"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// handle is the msgpack configuration shared by every encoder and decoder. It
// is configured once here and never mutated afterwards, so it is safe for
// concurrent use.
var handle = func() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{}
	h.WriteExt = true // []byte as msgpack bin, string as str
	h.RawToString = false
	h.ErrorIfNoField = false // unknown fields are skipped: newer peers may add fields
	return h
}()

// maxPooledBuf is the largest buffer kept in a pool; bigger ones, from rare big
// messages, are left to the garbage collector rather than pinned.
const maxPooledBuf = 64 << 10

// encoder is a reusable msgpack encoder appending into its own buffer. Once
// framed it doubles as an outgoing frame: hdr plus body buf, queued for a
// connection's writer, which returns it to the pool after writing.
type encoder struct {
	hdr header
	buf []byte
	enc *codec.Encoder
}

// frame encodes m and sets the header for a frame of type m.MsgType() with
// the given request id. A body above maxFrame is an *Error CodeTooLarge.
func (e *encoder) frame(m Message, id uint64, maxFrame int) error {
	if err := e.encode(m); err != nil {
		return err
	}
	t := msgTypeOf(m)
	if len(e.buf) > maxFrame {
		return Errorf(CodeTooLarge, "%s body of %d bytes exceeds frame limit of %d", t, len(e.buf), maxFrame)
	}
	e.hdr = makeHeader(t, id, len(e.buf))
	return nil
}

// writeTo writes the framed message to w (normally a bufio.Writer).
func (e *encoder) writeTo(w io.Writer) error {
	if _, err := w.Write(e.hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(e.buf)
	return err
}

var encPool = sync.Pool{New: func() any {
	e := &encoder{buf: make([]byte, 0, 512)}
	e.enc = codec.NewEncoderBytes(&e.buf, handle)
	return e
}}

func getEncoder() *encoder { return encPool.Get().(*encoder) }

func putEncoder(e *encoder) {
	if cap(e.buf) > maxPooledBuf {
		return
	}
	e.buf = e.buf[:0]
	encPool.Put(e)
}

// encode replaces e.buf with the msgpack encoding of m: hand-written for the
// hot messages (fastMessage), by the reflection codec for the others.
func (e *encoder) encode(m Message) error {
	if f, ok := m.(fastMessage); ok {
		e.buf = f.appendMsgpack(e.buf[:0])
		return nil
	}
	return e.encodeReflect(m)
}

// encodeReflect replaces e.buf with the reflection codec's encoding of m.
func (e *encoder) encodeReflect(m Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = Errorf(CodeInternal, "encode %s: panic: %v", msgTypeOf(m), r)
		}
	}()
	e.buf = e.buf[:0]
	e.enc.ResetBytes(&e.buf)
	if err := e.enc.Encode(m); err != nil {
		return Errorf(CodeInternal, "encode %s: %v", msgTypeOf(m), err)
	}
	return nil
}

// decoder decodes message bodies: the hot messages (fastMessage) by hand, the
// others, and forms the hand-written decoder leaves to it, with the reflection
// codec. It is reused from one body to the next, so decoding allocates only
// the decoded values; it is not safe for concurrent use. The zero value is
// ready to use.
type decoder struct {
	mp  mpDecoder
	dec *codec.Decoder // created on first use
}

var decPool = sync.Pool{New: func() any { return new(decoder) }}

var emptyBody = []byte{}

// decodeWith decodes body, which must hold exactly one msgpack value, into m
// (a non-nil pointer), zeroing *m first. It never panics; every failure is an
// *Error with CodeBadRequest, except a non-pointer m (CodeInternal). Decoded
// byte slices never alias body. The result is the reflection codec's for
// every body, also for the hot messages, which d decodes by hand.
func decodeWith(d *decoder, body []byte, m Message) (err error) {
	rv := reflect.ValueOf(m)
	if m == nil || rv.Kind() != reflect.Pointer || rv.IsNil() {
		return Errorf(CodeInternal, "decode into %T: need a non-nil pointer", m)
	}
	t := m.MsgType()
	defer func() {
		if r := recover(); r != nil {
			rv.Elem().SetZero()
			err = Errorf(CodeBadRequest, "invalid %s body: %v", t, r)
		}
	}()
	rv.Elem().SetZero()
	if f, ok := m.(fastMessage); ok {
		d.mp = newMPDecoder(body, t)
		err := d.mp.decode(f)
		d.mp.b = nil // drop the reference to body
		if err != errFallback {
			if err != nil {
				rv.Elem().SetZero()
			}
			return err
		}
		rv.Elem().SetZero()
	}
	w := newMPDecoder(body, t)
	if err := w.weigh(0); err != nil {
		return err
	}
	return d.decodeReflect(body, m)
}

// decodeReflect decodes body into the zero *m with the reflection codec; see
// decodeWith.
func (d *decoder) decodeReflect(body []byte, m Message) error {
	if d.dec == nil {
		d.dec = codec.NewDecoderBytes(emptyBody, handle)
	}
	if body == nil {
		body = emptyBody // ResetBytes ignores nil
	}
	d.dec.ResetBytes(body)
	t := m.MsgType()
	if err := d.dec.Decode(m); err != nil {
		reflect.ValueOf(m).Elem().SetZero()
		return Errorf(CodeBadRequest, "invalid %s body: %v", t, err)
	}
	if n := d.dec.NumBytesRead(); n != len(body) {
		reflect.ValueOf(m).Elem().SetZero()
		return Errorf(CodeBadRequest, "invalid %s body: %d trailing bytes", t, len(body)-n)
	}
	return nil
}

func msgTypeOf(m Message) (t MsgType) {
	defer func() {
		if recover() != nil { // a nil *T with a pointer-receiver MsgType
			t = 0
		}
	}()
	if m == nil {
		return 0
	}
	return m.MsgType()
}

// Marshal returns the msgpack body of m. The result is freshly allocated and
// owned by the caller. Errors are *Error with CodeInternal (a body type the
// encoder cannot handle).
func Marshal(m Message) ([]byte, error) {
	if m == nil {
		return nil, Errorf(CodeInternal, "marshal nil message")
	}
	e := getEncoder()
	defer putEncoder(e)
	if err := e.encode(m); err != nil {
		return nil, err
	}
	return append([]byte(nil), e.buf...), nil
}

// Unmarshal decodes body, which must hold exactly one msgpack value, into m,
// which must be a non-nil pointer (as returned by NewMessage). *m is zeroed
// first, so no field keeps a previous value. Invalid input, including trailing
// bytes, gives an *Error with CodeBadRequest; Unmarshal never panics and
// never aliases body.
func Unmarshal(body []byte, m Message) error {
	d := decPool.Get().(*decoder)
	err := decodeWith(d, body, m)
	if d.dec != nil {
		d.dec.ResetBytes(emptyBody) // drop the reference to body
	}
	decPool.Put(d)
	return err
}

// copyMessage sets *dst to the decoded src. When dst has src's concrete type
// this is a shallow copy (slices are shared); otherwise src is re-encoded and
// decoded into dst.
func copyMessage(dst, src Message) error {
	if dst == nil {
		return Errorf(CodeInternal, "decode into nil message")
	}
	if dst.MsgType() != src.MsgType() {
		return Errorf(CodeBadRequest, "cannot decode %s body as %s", src.MsgType(), dst.MsgType())
	}
	dv, sv := reflect.ValueOf(dst), reflect.ValueOf(src)
	if dv.Type() == sv.Type() {
		if dv.IsNil() {
			return Errorf(CodeInternal, "decode into nil %T", dst)
		}
		dv.Elem().Set(sv.Elem())
		return nil
	}
	body, err := Marshal(src)
	if err != nil {
		return err
	}
	if err := Unmarshal(body, dst); err != nil {
		return fmt.Errorf("wire: decode %s as %T: %w", src.MsgType(), dst, err)
	}
	return nil
}
