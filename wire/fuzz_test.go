package wire

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
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
