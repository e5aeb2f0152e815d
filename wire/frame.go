package wire

import (
	"encoding/binary"
	"errors"
	"io"
	"math"
)

// HeaderSize is the size of a frame header: a 4-byte big-endian body length,
// a 1-byte MsgType and an 8-byte big-endian request id, followed by the
// msgpack body.
const HeaderSize = 13

// DefaultMaxFrame is the default limit on a frame's body length. Readers check
// a declared length against their limit before allocating anything for it.
const DefaultMaxFrame = 8 << 20

// initialBodyChunk is how much body buffer a reader allocates before any of
// the body has arrived; it then grows by doubling as bytes actually arrive, so
// a peer that declares a large body but sends little costs little memory.
const initialBodyChunk = 64 << 10

// Frame is one decoded frame header with its raw body.
type Frame struct {
	Type MsgType
	ID   uint64
	Body []byte
}

type header [HeaderSize]byte

func makeHeader(t MsgType, id uint64, n int) (h header) {
	binary.BigEndian.PutUint32(h[0:4], uint32(n))
	h[4] = byte(t)
	binary.BigEndian.PutUint64(h[5:13], id)
	return h
}

func (h *header) parse() (n uint32, t MsgType, id uint64) {
	return binary.BigEndian.Uint32(h[0:4]), MsgType(h[4]), binary.BigEndian.Uint64(h[5:13])
}

// WriteFrame writes one frame with the given type, request id and body. It
// issues a single Write for bodies up to 4 KiB and two otherwise; the writer
// is not flushed (wrap a bufio.Writer yourself for batching).
func WriteFrame(w io.Writer, t MsgType, id uint64, body []byte) error {
	if uint64(len(body)) > math.MaxUint32 {
		return Errorf(CodeTooLarge, "frame body of %d bytes cannot be framed", len(body))
	}
	h := makeHeader(t, id, len(body))
	if len(body) <= 4096 {
		buf := make([]byte, 0, HeaderSize+len(body))
		buf = append(append(buf, h[:]...), body...)
		_, err := w.Write(buf)
		return err
	}
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(body)
	return err
}

// ReadFrame reads one frame from r. It returns io.EOF if r ends cleanly before
// the frame starts and io.ErrUnexpectedEOF if it ends inside the frame. A
// declared body length above maxFrame (<= 0 means DefaultMaxFrame) returns an
// *Error with CodeTooLarge before anything is allocated for the body; below
// the limit, the body buffer grows with the bytes actually received. The
// returned Body is never longer than maxFrame and is owned by the caller.
func ReadFrame(r io.Reader, maxFrame int) (Frame, error) {
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrame
	}
	var h header
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return Frame{}, err // io.EOF at a boundary, io.ErrUnexpectedEOF inside
	}
	n, t, id := h.parse()
	if err := checkLen(n, t, maxFrame); err != nil {
		return Frame{Type: t, ID: id}, err
	}
	body, err := readBody(r, int(n), nil)
	if err != nil {
		return Frame{Type: t, ID: id}, err
	}
	return Frame{Type: t, ID: id, Body: body}, nil
}

func checkLen(n uint32, t MsgType, maxFrame int) error {
	if uint64(n) > uint64(maxFrame) {
		return Errorf(CodeTooLarge, "%s frame body of %d bytes exceeds limit of %d", t, n, maxFrame)
	}
	return nil
}

// readBody reads exactly n bytes, reusing buf when its capacity suffices and
// otherwise growing a new buffer geometrically as data arrives. io.EOF is
// reported as io.ErrUnexpectedEOF: the header promised more.
func readBody(r io.Reader, n int, buf []byte) ([]byte, error) {
	if cap(buf) >= n {
		b := buf[:n]
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, noEOF(err)
		}
		return b, nil
	}
	b := buf[:0]
	for len(b) < n {
		if len(b) == cap(b) {
			nb := make([]byte, len(b), min(n, max(2*cap(b), initialBodyChunk)))
			copy(nb, b)
			b = nb
		}
		m, err := io.ReadFull(r, b[len(b):cap(b)])
		b = b[:len(b)+m]
		if err != nil {
			return nil, noEOF(err)
		}
	}
	return b, nil
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
