package wire

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"
)

// barrierID is the id of the status request FuzzServerInput appends to the
// fuzzed bytes to learn when the server has consumed them.
const barrierID = 1<<64 - 1

func fuzzFrame(m Message, id uint64) []byte {
	var buf bytes.Buffer
	body, _ := Marshal(m)
	_ = WriteFrame(&buf, m.MsgType(), id, body)
	return buf.Bytes()
}

func fuzzSeeds() [][]byte {
	hello := fuzzFrame(&Hello{Version: ProtocolVersion, Role: "client", Name: "fuzz"}, 1)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	var seeds [][]byte
	seeds = append(seeds, hello, []byte{}, []byte("GET / HTTP/1.0\r\n\r\n"))
	for i, m := range sampleMessages() {
		seeds = append(seeds, cat(hello, fuzzFrame(m, uint64(i+2))))
	}
	seeds = append(seeds,
		cat(hello, hugeHeader(MsgGet, 2, 0xffffffff)),
		cat(hello, hugeHeader(MsgTxn, 2, 40), []byte{0x80}),
		cat(hello, fuzzFrame(&GetRequest{ReadTS: 1}, 2), fuzzFrame(&TxnRequest{}, 3), fuzzFrame(&StatusRequest{}, 2)),
		cat(fuzzFrame(&Hello{Version: 9}, 1)),
	)
	return seeds
}

// FuzzServerInput feeds arbitrary bytes to a server connection over net.Pipe.
// The server must not panic or hang, and everything it sends must be
// well-formed frames.
func FuzzServerInput(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(runFuzzServer)
}

// runFuzzServer feeds data, then a barrier request, to a fresh server
// connection and checks its output.
func runFuzzServer(t *testing.T, data []byte) {
	barrier := fuzzFrame(&StatusRequest{}, barrierID)
	s := NewServer(HandlerFunc(func(ctx context.Context, req *Request) (Message, error) {
		if req.Type == MsgPrepare {
			panic("fuzz panic")
		}
		return echoHandler(ctx, req)
	}), ServerConfig{
		Logger:       quietLogger(),
		MaxFrame:     1 << 16,
		ReadTimeout:  20 * time.Millisecond,
		HelloTimeout: time.Second,
		IdleTimeout:  time.Second,
		WriteTimeout: time.Second,
	})
	cli, srv := net.Pipe()
	defer cli.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		s.ServeConn(srv)
	}()

	// Read every frame the server sends until it closes or answers the
	// barrier.
	readErr := make(chan error, 1)
	go func() {
		br := bufio.NewReader(cli)
		for {
			fr, err := ReadFrame(br, 0)
			if err != nil {
				if err == io.EOF || errors.Is(err, io.ErrClosedPipe) {
					err = nil
				}
				readErr <- err
				return
			}
			m := NewMessage(fr.Type)
			if m == nil {
				readErr <- errors.New("server sent unknown type " + fr.Type.String())
				return
			}
			if err := Unmarshal(fr.Body, m); err != nil {
				readErr <- err
				return
			}
			if we, ok := m.(*Error); ok && we.Code == CodeOK {
				readErr <- errors.New("error frame with code ok")
				return
			}
			if fr.ID == barrierID && fr.Type == MsgStatusReply {
				readErr <- nil
				return
			}
		}
	}()
	go func() {
		if _, err := cli.Write(data); err == nil {
			_, _ = cli.Write(barrier)
		}
	}()
	select {
	case err := <-readErr:
		if err != nil {
			t.Fatalf("server output: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server neither answered nor closed")
	}
	_ = cli.Close()
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("server connection did not finish after close")
	}
}

// FuzzFastDecode decodes arbitrary bodies as a hot message type (chosen by
// typ) with the hand-written decoder and with the reflection codec. The fast
// decoder must not panic; what it accepts the codec must accept as the same
// value, which re-encodes to the codec's bytes and does not alias the body;
// what it rejects (other than with errFallback) the codec must reject; and
// Unmarshal must agree with the codec.
func FuzzFastDecode(f *testing.F) {
	index := map[MsgType]byte{}
	for i, mt := range hotTypes {
		index[mt] = byte(i)
	}
	g := newGen(4)
	for _, m := range sampleMessages() {
		if i, ok := index[m.MsgType()]; ok {
			body, _ := Marshal(m)
			variant, _ := g.rewrite(body)
			f.Add(i, body)
			f.Add(i, variant)
		}
	}
	for _, c := range fastDecodeCases {
		f.Add(index[c.mt], []byte(c.body))
	}
	f.Fuzz(func(t *testing.T, typ byte, body []byte) {
		mt := hotTypes[int(typ)%len(hotTypes)]
		ref, rerr := reflectUnmarshal(mt, body)
		scratch := append([]byte(nil), body...)
		fast, ferr := fastUnmarshal(mt, scratch)
		for i := range scratch {
			scratch[i] = 0xa5 // the decoded value must not change
		}
		switch {
		case ferr == nil:
			if rerr != nil {
				t.Fatalf("fast decoder accepts %x as %#v, the codec rejects it: %v", body, fast, rerr)
			}
			if !reflect.DeepEqual(fast, ref) {
				t.Fatalf("%x decodes differently:\nfast  %#v\ncodec %#v", body, fast, ref)
			}
			if enc, want := string(mustMarshal(t, fast)), string(reflectMarshal(t, fast)); enc != want {
				t.Fatalf("%#v encodes differently:\nfast  %x\ncodec %x", fast, enc, want)
			}
		case ferr != errFallback:
			var we *Error
			if !errors.As(ferr, &we) || we.Code != CodeBadRequest || !strings.HasPrefix(we.Message, "invalid "+mt.String()+" body: ") {
				t.Fatalf("fast decoder error %v is not a bad_request *Error", ferr)
			}
			if rerr == nil {
				t.Fatalf("fast decoder rejects %x (%v), the codec accepts it as %#v", body, ferr, ref)
			}
		}
		m := NewMessage(mt)
		if err := Unmarshal(body, m); (err == nil) != (rerr == nil) || err == nil && !reflect.DeepEqual(m, ref) {
			t.Fatalf("Unmarshal %x = %v, %#v; the codec gives %v, %#v", body, err, m, rerr, ref)
		}
	})
}

func mustMarshal(t *testing.T, m Message) []byte {
	t.Helper()
	b, err := Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
