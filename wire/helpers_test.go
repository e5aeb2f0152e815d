package wire

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"
)

// quietLogger discards logs; lockedBuffer captures them.
func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startServer serves h on 127.0.0.1:0 and shuts it down at the end of the
// test, checking that Serve returned ErrServerClosed.
func startServer(t testing.TB, h Handler, cfg ServerConfig) *Server {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(h, cfg)
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	for s.Addr() == nil {
		time.Sleep(time.Millisecond)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return s
}

func dial(t testing.TB, s *Server, opts DialOptions) *Conn {
	t.Helper()
	c, err := Dial(context.Background(), s.Addr().String(), opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// echoHandler answers every request with a reply derived from it.
func echoHandler(ctx context.Context, req *Request) (Message, error) {
	switch m := req.Message().(type) {
	case *GetRequest:
		vals := make([]KeyValue, len(m.Keys))
		for i, k := range m.Keys {
			vals[i] = KeyValue{Key: k, Value: k, Version: m.ReadTS, Found: true}
		}
		return &GetReply{Values: vals, ReadTS: m.ReadTS}, nil
	case *TxnRequest:
		return &TxnReply{TxnID: uint64(len(m.Ops)), Path: "1pc"}, nil
	case *ApplyRequest:
		return &ApplyReply{CommitTS: m.TS}, nil
	case *PrepareRequest:
		return &PrepareReply{MinCommitTS: m.StartTS + 1}, nil
	case *CommitRequest, *AbortRequest, *SyncRequest:
		return nil, nil
	case *OutcomeRequest:
		return &OutcomeReply{State: OutcomeAborted}, nil
	case *StatusRequest:
		return &StatusReply{Processes: []ProcessStatus{{Name: req.Peer.Name, Up: true}}}, nil
	}
	return nil, Errorf(CodeUnknownMessage, "no handler for %s", req.Type)
}

// rawConn is a hand-driven client for malformed-input tests.
type rawConn struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, s *Server) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (r *rawConn) write(b []byte) {
	r.t.Helper()
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

func (r *rawConn) send(m Message, id uint64) {
	r.t.Helper()
	body, err := Marshal(m)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := WriteFrame(r.nc, m.MsgType(), id, body); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

func (r *rawConn) hello() {
	r.t.Helper()
	r.send(&Hello{Version: ProtocolVersion, Role: "client", Name: "raw"}, 1)
	f, err := ReadFrame(r.br, 0)
	if err != nil || f.Type != MsgHelloReply || f.ID != 1 {
		r.t.Fatalf("hello reply: %+v, %v", f, err)
	}
}

// expectErrorThenEOF reads one MsgError frame with the given code and id, then
// requires the server to close the connection.
func (r *rawConn) expectErrorThenEOF(code Code, id uint64) *Error {
	r.t.Helper()
	f, err := ReadFrame(r.br, 0)
	if err != nil {
		r.t.Fatalf("reading error frame: %v", err)
	}
	if f.Type != MsgError || f.ID != id {
		r.t.Fatalf("got %s frame id %d, want error id %d", f.Type, f.ID, id)
	}
	we := &Error{}
	if err := Unmarshal(f.Body, we); err != nil {
		r.t.Fatal(err)
	}
	if we.Code != code {
		r.t.Fatalf("got %v, want code %s", we, code)
	}
	if f, err := ReadFrame(r.br, 0); err != io.EOF {
		r.t.Fatalf("after error frame: %+v, %v; want EOF", f, err)
	}
	return we
}

// fakeServer listens on a loopback port and returns its address. It accepts one connection,
// answers its hello, hands it to then and closes it when then returns.
func fakeServer(t testing.TB, then func(nc net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		nc, err := l.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		f, err := ReadFrame(nc, 0)
		if err != nil || f.Type != MsgHello {
			return
		}
		body, _ := Marshal(&HelloReply{Version: ProtocolVersion, Name: "fake"})
		if WriteFrame(nc, MsgHelloReply, f.ID, body) == nil {
			then(nc)
		}
	}()
	return l.Addr().String()
}
