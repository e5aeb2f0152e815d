package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"
)

func TestFrameRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 10000)
	var buf bytes.Buffer
	frames := []Frame{
		{Type: MsgGet, ID: 1, Body: []byte{0x80}},
		{Type: MsgAck, ID: 1<<64 - 1, Body: []byte{}},
		{Type: MsgType(200), ID: 0, Body: big},
	}
	for _, f := range frames {
		if err := WriteFrame(&buf, f.Type, f.ID, f.Body); err != nil {
			t.Fatal(err)
		}
	}
	if got := buf.Len(); got != 3*HeaderSize+1+len(big) {
		t.Fatalf("wrote %d bytes", got)
	}
	if hdr := buf.Bytes()[:HeaderSize]; binary.BigEndian.Uint32(hdr) != 1 || hdr[4] != byte(MsgGet) || binary.BigEndian.Uint64(hdr[5:]) != 1 {
		t.Fatalf("header layout: %x", hdr)
	}
	// One byte at a time exercises partial reads.
	r := iotest.OneByteReader(&buf)
	for _, want := range frames {
		got, err := ReadFrame(r, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got.Type != want.Type || got.ID != want.ID || !bytes.Equal(got.Body, want.Body) {
			t.Fatalf("got %v/%d/%d bytes, want %v/%d/%d", got.Type, got.ID, len(got.Body), want.Type, want.ID, len(want.Body))
		}
	}
	if _, err := ReadFrame(r, 0); err != io.EOF {
		t.Fatalf("at end: %v, want io.EOF", err)
	}
}

func TestReadFrameTruncated(t *testing.T) {
	var buf bytes.Buffer
	_ = WriteFrame(&buf, MsgGet, 7, []byte{0x81, 0xa1, 'a', 0x01})
	whole := buf.Bytes()
	for n := 1; n < len(whole); n++ {
		_, err := ReadFrame(bytes.NewReader(whole[:n]), 0)
		if err != io.ErrUnexpectedEOF {
			t.Fatalf("%d of %d bytes: %v, want io.ErrUnexpectedEOF", n, len(whole), err)
		}
	}
	if _, err := ReadFrame(bytes.NewReader(nil), 0); err != io.EOF {
		t.Fatalf("empty: %v, want io.EOF", err)
	}
	if _, err := ReadFrame(iotest.ErrReader(io.ErrClosedPipe), 0); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("reader error: %v", err)
	}
}

func hugeHeader(t MsgType, id uint64, n uint32) []byte {
	h := makeHeader(t, id, 0)
	binary.BigEndian.PutUint32(h[:4], n)
	return h[:]
}

// allocated returns the bytes allocated while running f.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestReadFrameTooLargeAllocatesNothing(t *testing.T) {
	in := hugeHeader(MsgGet, 5, 0xffffffff) // declares 4 GiB
	var f Frame
	var err error
	n := allocated(func() { f, err = ReadFrame(bytes.NewReader(in), 0) })
	if CodeOf(err) != CodeTooLarge || f.ID != 5 || f.Type != MsgGet {
		t.Fatalf("got %+v, %v; want too_large for id 5", f, err)
	}
	if n > 64<<10 {
		t.Fatalf("allocated %d bytes for a rejected frame", n)
	}
	_, err = ReadFrame(bytes.NewReader(hugeHeader(MsgGet, 1, 101)), 100)
	if CodeOf(err) != CodeTooLarge {
		t.Fatalf("101 > 100: %v", err)
	}
}

func TestReadFrameMemoryTracksReceivedBytes(t *testing.T) {
	// Declares 8 MiB (allowed) but sends 10 bytes: the reader must not
	// allocate the declared size up front.
	in := append(hugeHeader(MsgGet, 1, DefaultMaxFrame), make([]byte, 10)...)
	var err error
	n := allocated(func() { _, err = ReadFrame(bytes.NewReader(in), 0) })
	if err != io.ErrUnexpectedEOF {
		t.Fatalf("err = %v", err)
	}
	if n > 1<<20 {
		t.Fatalf("allocated %d bytes for a 10-byte partial body", n)
	}
	// And a full body of the maximum size still reads fine.
	body := bytes.Repeat([]byte{7}, DefaultMaxFrame)
	var buf bytes.Buffer
	_ = WriteFrame(&buf, MsgGet, 2, body)
	f, err := ReadFrame(&buf, 0)
	if err != nil || !bytes.Equal(f.Body, body) {
		t.Fatalf("max-size frame: %v", err)
	}
}

// FuzzReadFrame checks that ReadFrame never panics, never returns a body above
// its limit and reports consistent errors.
func FuzzReadFrame(f *testing.F) {
	var buf bytes.Buffer
	_ = WriteFrame(&buf, MsgGet, 1, []byte{0x80})
	f.Add(buf.Bytes(), uint16(0))
	f.Add(buf.Bytes()[:7], uint16(0))
	f.Add(hugeHeader(MsgTxn, 9, 0xffffffff), uint16(100))
	f.Add(hugeHeader(MsgTxn, 9, 20), uint16(10))
	f.Fuzz(func(t *testing.T, data []byte, max uint16) {
		maxFrame := int(max)
		limit := maxFrame
		if limit <= 0 {
			limit = DefaultMaxFrame
		}
		r := bytes.NewReader(data)
		for i := 0; i < 64; i++ {
			fr, err := ReadFrame(r, maxFrame)
			if len(fr.Body) > limit {
				t.Fatalf("body of %d bytes above limit %d", len(fr.Body), limit)
			}
			if err != nil {
				var we *Error
				if err != io.EOF && err != io.ErrUnexpectedEOF && !(errors.As(err, &we) && we.Code == CodeTooLarge) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if m := NewMessage(fr.Type); m != nil {
				_ = Unmarshal(fr.Body, m) // must not panic
			}
		}
	})
}
