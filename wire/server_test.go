package wire

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// replyFor returns the reply type's zero body for a request type.
func replyFor(t MsgType) Message {
	if t == MsgCommit || t == MsgAbort || t == MsgSync || t == MsgCommitBatch || t == MsgSafePoint {
		return &Ack{}
	}
	return NewMessage(t + 1)
}

func TestCallRoundTripEveryRequestType(t *testing.T) {
	var mu sync.Mutex
	var got []Message
	s := startServer(t, HandlerFunc(func(ctx context.Context, req *Request) (Message, error) {
		m := NewMessage(req.Type)
		if err := req.Decode(m); err != nil {
			return nil, err
		}
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
		// Reply with the sample body of the reply type.
		for _, r := range sampleMessages() {
			if r.MsgType() == replyFor(req.Type).MsgType() {
				return r, nil
			}
		}
		return nil, errors.New("no sample")
	}), ServerConfig{Name: "srv-1"})
	c := dial(t, s, DialOptions{Role: "client", Name: "cli"})
	if c.RemoteName() != "srv-1" {
		t.Fatalf("RemoteName = %q", c.RemoteName())
	}
	var sent []Message
	for _, req := range sampleMessages() {
		if !req.MsgType().IsRequest() {
			continue
		}
		sent = append(sent, req)
		resp := replyFor(req.MsgType())
		if err := c.Call(context.Background(), req, resp); err != nil {
			t.Fatalf("%s: %v", req.MsgType(), err)
		}
		var want Message
		for _, r := range sampleMessages() {
			if r.MsgType() == resp.MsgType() {
				want = r
			}
		}
		if !reflect.DeepEqual(resp, want) {
			t.Errorf("%s reply:\n got %+v\nwant %+v", req.MsgType(), resp, want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !reflect.DeepEqual(got, sent) {
		t.Errorf("server decoded\n %+v\nwant %+v", got, sent)
	}
	if len(sent) != 15 {
		t.Errorf("sent %d request types", len(sent))
	}
}

func TestPipelinedOutOfOrderReplies(t *testing.T) {
	const n = 100
	var order []uint64
	var mu sync.Mutex
	s := startServer(t, HandlerFunc(func(ctx context.Context, req *Request) (Message, error) {
		var g GetRequest
		if err := req.Decode(&g); err != nil {
			return nil, err
		}
		// Later requests finish first.
		time.Sleep(time.Duration(n-g.ReadTS) * 2 * time.Millisecond)
		mu.Lock()
		order = append(order, g.ReadTS)
		mu.Unlock()
		return echoHandler(ctx, req)
	}), ServerConfig{})
	c := dial(t, s, DialOptions{})

	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			key := []byte(fmt.Sprintf("key-%d", i))
			var r GetReply
			if err := c.Call(context.Background(), &GetRequest{Keys: [][]byte{key}, ReadTS: uint64(i)}, &r); err != nil {
				errs <- err
				return
			}
			if r.ReadTS != uint64(i) || len(r.Values) != 1 || string(r.Values[0].Value) != string(key) {
				errs <- fmt.Errorf("call %d got %+v", i, r)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Sequential execution would take sum(2ms*i) ≈ 10s; concurrent ≈ 200ms.
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("calls took %v: not concurrent", d)
	}
	mu.Lock()
	defer mu.Unlock()
	inversions := 0
	for i := 1; i < len(order); i++ {
		if order[i] < order[i-1] {
			inversions++
		}
	}
	if inversions < n/2 {
		t.Errorf("replies mostly in request order (%d inversions): %v", inversions, order)
	}
}

func TestHandlerErrorsCrossTheWire(t *testing.T) {
	s := startServer(t, HandlerFunc(func(ctx context.Context, req *Request) (Message, error) {
		var tx TxnRequest
		if err := req.Decode(&tx); err != nil {
			return nil, err
		}
		switch string(tx.Ops[0].Key) {
		case "compare":
			return nil, &Error{Code: CodeCompareFailed, Message: "compare 3 failed", TxnID: 42, Index: 3}
		case "wrapped":
			return nil, fmt.Errorf("txn: %w", &Error{Code: CodeConflict, Message: "locked", TxnID: 7})
		case "plain":
			return nil, errors.New("disk on fire")
		case "deadline":
			return nil, fmt.Errorf("waiting: %w", context.DeadlineExceeded)
		case "panic":
			panic("handler bug")
		case "nil":
			return nil, nil
		case "wrongtype":
			return &StatusReply{}, nil
		case "badtype":
			return altReply{}, nil
		}
		return &TxnReply{Path: "1pc"}, nil
	}), ServerConfig{})
	c := dial(t, s, DialOptions{})
	call := func(key string) (TxnReply, error) {
		var r TxnReply
		err := c.Call(context.Background(), &TxnRequest{Ops: []Op{{Kind: OpPut, Key: []byte(key)}}}, &r)
		return r, err
	}

	_, err := call("compare")
	var we *Error
	if !errors.As(err, &we) || !reflect.DeepEqual(*we, Error{Code: CodeCompareFailed, Message: "compare 3 failed", TxnID: 42, Index: 3}) {
		t.Errorf("compare: %#v", err)
	}
	if _, err = call("wrapped"); !errors.As(err, &we) || we.Code != CodeConflict || we.TxnID != 7 || we.Message != "locked" {
		t.Errorf("wrapped: %v", err)
	}
	if _, err = call("plain"); CodeOf(err) != CodeInternal || err.Error() != "wire: internal: disk on fire" {
		t.Errorf("plain: %v", err)
	}
	if _, err = call("deadline"); CodeOf(err) != CodeTimeout {
		t.Errorf("deadline: %v", err)
	}
	if _, err = call("panic"); CodeOf(err) != CodeInternal || !strings.Contains(err.Error(), "handler bug") {
		t.Errorf("panic: %v", err)
	}
	if _, err = call("wrongtype"); CodeOf(err) != CodeBadRequest || !strings.Contains(err.Error(), "status_reply reply to txn") {
		t.Errorf("wrong reply type: %v", err)
	}
	if _, err = call("badtype"); CodeOf(err) != CodeInternal {
		t.Errorf("unknown reply type: %v", err)
	}
	if err := c.Call(context.Background(), &TxnRequest{Ops: []Op{{Key: []byte("nil")}}}, &Ack{}); err != nil {
		t.Errorf("nil reply as ack: %v", err)
	}
	if err := c.Call(context.Background(), &TxnRequest{Ops: []Op{{Key: []byte("ok")}}}, nil); err != nil {
		t.Errorf("nil resp: %v", err)
	}
	// After all that the connection is still fine.
	if r, err := call("ok"); err != nil || r.Path != "1pc" || c.Err() != nil {
		t.Errorf("ok: %+v %v %v", r, err, c.Err())
	}
}

type altReply struct{}

func (altReply) MsgType() MsgType { return MsgType(77) }

// TestMalformedInput sends each kind of bad input on its own raw connection
// and checks the single error frame and the close, while a well-behaved
// client keeps working on the same server.
func TestMalformedInput(t *testing.T) {
	logs := &lockedBuffer{}
	s := startServer(t, HandlerFunc(echoHandler), ServerConfig{
		MaxFrame:    1 << 20,
		ReadTimeout: 5 * time.Second,
		Logger:      slog.New(slog.NewTextHandler(logs, nil)),
	})
	good := dial(t, s, DialOptions{Name: "good"})
	checkGood := func() {
		t.Helper()
		var r GetReply
		if err := good.Call(context.Background(), &GetRequest{Keys: [][]byte{[]byte("k")}, ReadTS: 9}, &r); err != nil || r.ReadTS != 9 {
			t.Fatalf("good client: %+v, %v", r, err)
		}
	}
	getBody, _ := Marshal(&GetRequest{ReadTS: 1})
	header := func(n uint32, typ MsgType, id uint64) []byte {
		h := makeHeader(typ, id, 0)
		binary.BigEndian.PutUint32(h[:4], n)
		return h[:]
	}
	frame := func(typ MsgType, id uint64, body []byte) []byte {
		return append(header(uint32(len(body)), typ, id), body...)
	}
	closeWrite := func(r *rawConn) { _ = r.nc.(*net.TCPConn).CloseWrite() }

	cases := []struct {
		name    string
		hello   bool
		run     func(r *rawConn)
		code    Code
		id      uint64
		message string
	}{
		{"no hello", false, func(r *rawConn) { r.write(frame(MsgGet, 3, getBody)) },
			CodeBadRequest, 3, "first frame must be hello, got get"},
		{"wrong version", false, func(r *rawConn) { r.send(&Hello{Version: 7}, 1) },
			CodeVersionMismatch, 1, "protocol version 7 not supported, want 1"},
		{"truncated header", true, func(r *rawConn) { r.write(header(5, MsgGet, 4)[:6]); closeWrite(r) },
			CodeBadRequest, 0, "truncated frame header"},
		{"truncated body", true, func(r *rawConn) { r.write(frame(MsgGet, 4, getBody)[:HeaderSize+2]); closeWrite(r) },
			CodeBadRequest, 4, "truncated frame body"},
		{"declared 4 GiB", true, func(r *rawConn) { r.write(header(0xffffffff, MsgGet, 5)) },
			CodeTooLarge, 5, "get frame body of 4294967295 bytes exceeds limit of 1048576"},
		{"unknown type", true, func(r *rawConn) { r.write(frame(MsgType(99), 6, getBody)) },
			CodeUnknownMessage, 6, "unknown message type 99"},
		{"invalid msgpack", true, func(r *rawConn) { r.write(frame(MsgGet, 7, []byte{0xc1, 0x00})) },
			CodeBadRequest, 7, "invalid get body"},
		{"wrong-type body", true, func(r *rawConn) { r.write(frame(MsgGet, 8, []byte{0x81, 0xa4, 'K', 'e', 'y', 's', 0x05})) },
			CodeBadRequest, 8, "invalid get body"},
		{"empty body", true, func(r *rawConn) { r.write(frame(MsgTxn, 8, nil)) },
			CodeBadRequest, 8, "invalid txn body"},
		{"reply type as request", true, func(r *rawConn) { r.send(&GetReply{}, 9) },
			CodeBadRequest, 9, "get_reply is not a request"},
		{"second hello", true, func(r *rawConn) { r.send(&Hello{Version: ProtocolVersion}, 10) },
			CodeBadRequest, 10, "unexpected hello after handshake"},
		{"error as request", true, func(r *rawConn) { r.send(&Error{Code: CodeInternal}, 11) },
			CodeBadRequest, 11, "error is not a request"},
		{"garbage first", false, func(r *rawConn) { r.write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")) },
			CodeTooLarge, 0 /* see below */, "exceeds limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, s)
			if tc.hello {
				r.hello()
			}
			var before uint64
			if tc.code == CodeTooLarge {
				before = totalAlloc()
			}
			tc.run(r)
			id := tc.id
			if tc.name == "garbage first" {
				id = binary.BigEndian.Uint64([]byte(" HTTP/1."))
			}
			we := r.expectErrorThenEOF(tc.code, id)
			if !strings.Contains(we.Message, tc.message) {
				t.Errorf("message %q does not contain %q", we.Message, tc.message)
			}
			if tc.code == CodeTooLarge {
				if d := totalAlloc() - before; d > 32<<20 {
					t.Errorf("server allocated %d bytes for a rejected frame", d)
				}
			}
			checkGood()
		})
	}
	// One warning per bad connection, naming the remote address.
	warns := strings.Count(logs.String(), "level=WARN")
	if warns != len(cases) {
		t.Errorf("%d warnings for %d bad connections:\n%s", warns, len(cases), logs.String())
	}
	if !strings.Contains(logs.String(), "remote=127.0.0.1:") || !strings.Contains(logs.String(), "reason=") {
		t.Errorf("warning lacks remote or reason:\n%s", logs.String())
	}
}

func totalAlloc() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

func TestHelloRefusals(t *testing.T) {
	s := startServer(t, HandlerFunc(echoHandler), ServerConfig{ClusterID: 5, HelloTimeout: 200 * time.Millisecond})

	_, err := Dial(context.Background(), s.Addr().String(), DialOptions{ClusterID: 6})
	var we *Error
	if !errors.As(err, &we) || we.Code != CodeVersionMismatch || !strings.Contains(we.Message, "cluster id 6") {
		t.Fatalf("wrong cluster: %v", err)
	}
	// ClusterID 0 skips the check; the reply carries the server's id.
	c := dial(t, s, DialOptions{})
	if err := c.Call(context.Background(), &StatusRequest{}, &StatusReply{}); err != nil {
		t.Fatal(err)
	}

	// A connection that never says hello is closed after HelloTimeout.
	r := dialRaw(t, s)
	start := time.Now()
	r.expectErrorThenEOF(CodeTimeout, 0)
	if d := time.Since(start); d < 150*time.Millisecond || d > 3*time.Second {
		t.Errorf("hello timeout after %v", d)
	}

	// Dialing something that is not a wire server fails within DialTimeout.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		nc, err := l.Accept()
		if err == nil {
			defer nc.Close()
			_, _ = io.Copy(io.Discard, nc)
		}
	}()
	start = time.Now()
	_, err = Dial(context.Background(), l.Addr().String(), DialOptions{DialTimeout: 200 * time.Millisecond})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("silent server: %v after %v", err, time.Since(start))
	}
}

func TestIdleTimeout(t *testing.T) {
	release := make(chan struct{})
	s := startServer(t, HandlerFunc(func(ctx context.Context, req *Request) (Message, error) {
		if req.Type == MsgStatus {
			<-release
		}
		return echoHandler(ctx, req)
	}), ServerConfig{IdleTimeout: 300 * time.Millisecond})

	// A busy connection outlives the idle timeout.
	busy := dial(t, s, DialOptions{})
	done := make(chan error, 1)
	go func() { done <- busy.Call(context.Background(), &StatusRequest{}, &StatusReply{}) }()

	idle := dial(t, s, DialOptions{})
	start := time.Now()
	select {
	case <-idle.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("idle connection not closed")
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("closed after %v", d)
	}
	if CodeOf(idle.Err()) != CodeTimeout {
		t.Errorf("idle conn Err = %v", idle.Err())
	}
	if err := idle.Call(context.Background(), &StatusRequest{}, nil); !errors.Is(err, ErrNotSent) {
		t.Errorf("call on closed conn: %v", err)
	}

	time.Sleep(200 * time.Millisecond) // > IdleTimeout since dial
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("busy call: %v", err)
	}
	if busy.Err() != nil {
		t.Fatalf("busy connection closed: %v", busy.Err())
	}
	// Once nothing is in flight, the idle timer applies again.
	select {
	case <-busy.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection not closed after its last request")
	}
}

func TestSlowWriterIsCut(t *testing.T) {
	s := startServer(t, HandlerFunc(echoHandler), ServerConfig{ReadTimeout: 200 * time.Millisecond})
	good := dial(t, s, DialOptions{})

	r := dialRaw(t, s)
	r.hello()
	body, _ := Marshal(&GetRequest{ReadTS: 1})
	h := makeHeader(MsgGet, 3, len(body))
	whole := append(h[:], body...)
	start := time.Now()
	r.write(whole[:8]) // the frame starts, then stalls
	r.expectErrorThenEOF(CodeTimeout, 0)
	if d := time.Since(start); d < 150*time.Millisecond || d > 3*time.Second {
		t.Errorf("cut after %v", d)
	}

	// A frame trickling in slower than ReadTimeout is cut mid-body too.
	r = dialRaw(t, s)
	r.hello()
	r.write(whole[:HeaderSize])
	time.Sleep(100 * time.Millisecond)
	r.write(whole[HeaderSize : HeaderSize+1])
	r.expectErrorThenEOF(CodeTimeout, 3)

	if err := good.Call(context.Background(), &StatusRequest{}, &StatusReply{}); err != nil {
		t.Fatal(err)
	}
}

func TestShutdownWaitsForInFlightHandlers(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	var cancelled atomic.Bool
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(HandlerFunc(func(ctx context.Context, req *Request) (Message, error) {
		close(started)
		<-release
		if ctx.Err() != nil {
			cancelled.Store(true)
		}
		return &ApplyReply{CommitTS: 99}, nil
	}), ServerConfig{Logger: quietLogger()})
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	for s.Addr() == nil {
		time.Sleep(time.Millisecond)
	}
	c := dial(t, s, DialOptions{})
	idle := dial(t, s, DialOptions{})

	var reply ApplyReply
	callDone := make(chan error, 1)
	go func() { callDone <- c.Call(context.Background(), &ApplyRequest{TxnID: 1}, &reply) }()
	<-started

	shutDone := make(chan error, 1)
	go func() { shutDone <- s.Shutdown(context.Background()) }()

	// The idle connection is told and closed right away.
	select {
	case <-idle.Done():
		if CodeOf(idle.Err()) != CodeShuttingDown {
			t.Errorf("idle conn Err = %v", idle.Err())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("idle connection not closed by Shutdown")
	}
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
	if _, err := net.Dial("tcp", s.Addr().String()); err == nil {
		t.Error("listener still accepting")
	}
	select {
	case err := <-shutDone:
		t.Fatalf("Shutdown returned %v with a handler running", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-callDone; err != nil || reply.CommitTS != 99 {
		t.Fatalf("in-flight call: %+v, %v", reply, err)
	}
	if err := <-shutDone; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if cancelled.Load() {
		t.Error("graceful shutdown cancelled the handler's context")
	}
	<-c.Done()
	if CodeOf(c.Err()) != CodeShuttingDown {
		t.Errorf("conn Err = %v", c.Err())
	}
	if err := s.Serve(l); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Shutdown: %v", err)
	}
}

func TestShutdownForceClosesOnContextExpiry(t *testing.T) {
	handlerCtxDone := make(chan struct{})
	started := make(chan struct{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(HandlerFunc(func(ctx context.Context, req *Request) (Message, error) {
		close(started)
		<-ctx.Done()
		close(handlerCtxDone)
		time.Sleep(50 * time.Millisecond)
		return nil, ctx.Err()
	}), ServerConfig{Logger: quietLogger()})
	go func() { _ = s.Serve(l) }()
	for s.Addr() == nil {
		time.Sleep(time.Millisecond)
	}
	c := dial(t, s, DialOptions{})
	callDone := make(chan error, 1)
	go func() { callDone <- c.Call(context.Background(), &AbortRequest{TxnID: 1}, &Ack{}) }()
	<-started

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want deadline exceeded", err)
	}
	select {
	case <-handlerCtxDone:
	case <-time.After(5 * time.Second):
		t.Fatal("handler context not cancelled by force close")
	}
	if err := <-callDone; !errors.Is(err, ErrConnLost) {
		t.Fatalf("in-flight call: %v, want ErrConnLost", err)
	}
}

func TestNotSentVersusConnLost(t *testing.T) {
	// A fake server that answers the hello, reads one request and then
	// drops the connection without replying.
	gotRequest := make(chan struct{})
	addr := fakeServer(t, func(nc net.Conn) {
		if _, err := ReadFrame(nc, 0); err == nil {
			close(gotRequest)
		}
	})
	c, err := Dial(context.Background(), addr, DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Call(context.Background(), &PrepareRequest{TxnID: 1}, &PrepareReply{})
	<-gotRequest
	if !errors.Is(err, ErrConnLost) || errors.Is(err, ErrNotSent) {
		t.Fatalf("in-flight call: %v, want ErrConnLost", err)
	}
	if c.Err() == nil {
		t.Fatal("conn not broken")
	}
	err = c.Call(context.Background(), &PrepareRequest{TxnID: 2}, &PrepareReply{})
	if !errors.Is(err, ErrNotSent) || errors.Is(err, ErrConnLost) || CodeOf(err) != CodeUnavailable {
		t.Fatalf("call on broken conn: %v, want ErrNotSent", err)
	}

	// Close fails in-flight calls with ErrConnLost, later ones with ErrNotSent.
	block := make(chan struct{})
	defer close(block)
	s := startServer(t, HandlerFunc(func(ctx context.Context, req *Request) (Message, error) {
		select {
		case <-block:
		case <-ctx.Done():
		}
		return nil, nil
	}), ServerConfig{})
	c2 := dial(t, s, DialOptions{})
	done := make(chan error, 1)
	go func() { done <- c2.Call(context.Background(), &CommitRequest{TxnID: 1}, &Ack{}) }()
	time.Sleep(50 * time.Millisecond)
	_ = c2.Close()
	if err := <-done; !errors.Is(err, ErrConnLost) {
		t.Fatalf("call in flight at Close: %v", err)
	}
	if err := c2.Call(context.Background(), &CommitRequest{TxnID: 2}, &Ack{}); !errors.Is(err, ErrNotSent) {
		t.Fatalf("call after Close: %v", err)
	}
	if err := c2.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestCallContext(t *testing.T) {
	release := make(chan struct{})
	s := startServer(t, HandlerFunc(func(ctx context.Context, req *Request) (Message, error) {
		if req.Type == MsgOutcome {
			<-release
			return &OutcomeReply{State: OutcomeCommitted}, nil
		}
		return echoHandler(ctx, req)
	}), ServerConfig{})
	c := dial(t, s, DialOptions{})

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var r OutcomeReply
	err := c.Call(ctx, &OutcomeRequest{TxnID: 1}, &r)
	if !errors.Is(err, context.DeadlineExceeded) || CodeOf(err) != CodeTimeout {
		t.Fatalf("timed-out call: %v", err)
	}
	close(release) // the late reply arrives and is ignored
	var g GetReply
	if err := c.Call(context.Background(), &GetRequest{ReadTS: 3}, &g); err != nil || g.ReadTS != 3 {
		t.Fatalf("next call: %+v %v", g, err)
	}
	if r.State != 0 {
		t.Fatalf("abandoned resp was written: %+v", r)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if err := c.Call(cctx, &GetRequest{}, &g); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled ctx: %v", err)
	}
	if c.Err() != nil {
		t.Fatalf("conn broken: %v", c.Err())
	}
}

type countingObserver struct {
	opened, closed atomic.Int64
	mu             sync.Mutex
	requests       map[string]int
}

func (o *countingObserver) ConnOpened() { o.opened.Add(1) }
func (o *countingObserver) ConnClosed() { o.closed.Add(1) }
func (o *countingObserver) Request(t MsgType, code Code, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if d < 0 {
		code = 999
	}
	o.requests[t.String()+"/"+code.String()]++
}

func TestObserver(t *testing.T) {
	obs := &countingObserver{requests: map[string]int{}}
	s := startServer(t, HandlerFunc(func(ctx context.Context, req *Request) (Message, error) {
		if req.Type == MsgAbort {
			return nil, Errorf(CodeNotFound, "no such txn")
		}
		return echoHandler(ctx, req)
	}), ServerConfig{Observer: obs})
	c := dial(t, s, DialOptions{})
	for range 3 {
		if err := c.Call(context.Background(), &GetRequest{}, &GetReply{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Call(context.Background(), &AbortRequest{}, &Ack{}); CodeOf(err) != CodeNotFound {
		t.Fatal(err)
	}
	r := dialRaw(t, s)
	r.hello()
	r.send(&Ack{}, 5)
	r.expectErrorThenEOF(CodeBadRequest, 5)
	_ = c.Close()

	deadline := time.Now().Add(5 * time.Second)
	for obs.closed.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if o, cl := obs.opened.Load(), obs.closed.Load(); o != 2 || cl != 2 {
		t.Errorf("opened %d, closed %d; want 2, 2", o, cl)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	want := map[string]int{"hello/ok": 2, "get/ok": 3, "abort/not_found": 1, "ack/bad_request": 1}
	if !reflect.DeepEqual(obs.requests, want) {
		t.Errorf("requests %v, want %v", obs.requests, want)
	}
}

// The server refuses frames over MaxFrame, runs at most MaxInFlight handlers at a time and
// refuses connections past MaxConns.
func TestServerEnforcesFrameHandlerAndConnectionLimits(t *testing.T) {
	var running, peak atomic.Int64
	release := make(chan struct{})
	s := startServer(t, HandlerFunc(func(ctx context.Context, req *Request) (Message, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		if req.Type == MsgStatus {
			<-release
		}
		if req.Type == MsgGet {
			return &GetReply{Values: []KeyValue{{Value: make([]byte, 2000)}}}, nil
		}
		return nil, nil
	}), ServerConfig{MaxConns: 2, MaxInFlight: 2, MaxFrame: 1000})

	c := dial(t, s, DialOptions{MaxFrame: 1000})
	// A request above the client's own limit is refused locally.
	big := &TxnRequest{Ops: []Op{{Kind: OpPut, Key: []byte("k"), Value: make([]byte, 2000)}}}
	if err := c.Call(context.Background(), big, &TxnReply{}); CodeOf(err) != CodeTooLarge || c.Err() != nil {
		t.Fatalf("big request: %v (conn %v)", err, c.Err())
	}
	// A reply above the server's limit becomes a too_large error.
	if err := c.Call(context.Background(), &GetRequest{}, &GetReply{}); CodeOf(err) != CodeTooLarge || c.Err() != nil {
		t.Fatalf("big reply: %v (conn %v)", err, c.Err())
	}

	// MaxInFlight: five blocked requests, at most two handlers at a time.
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			if err := c.Call(context.Background(), &StatusRequest{}, nil); err != nil {
				t.Error(err)
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	if p := peak.Load(); p != 2 {
		t.Errorf("peak concurrent handlers %d, want 2", p)
	}

	// MaxConns: the second connection fills the server, the third is refused.
	dial(t, s, DialOptions{})
	_, err := Dial(context.Background(), s.Addr().String(), DialOptions{})
	if CodeOf(err) != CodeUnavailable {
		t.Errorf("third connection: %v, want unavailable", err)
	}
	close(release)
	wg.Wait()
	if p := peak.Load(); p != 2 {
		t.Errorf("peak concurrent handlers %d, want 2", p)
	}
}

func TestClientIgnoresUnknownIDsAndBreaksOnConnectionError(t *testing.T) {
	addr := fakeServer(t, func(nc net.Conn) {
		// First request: answer an unknown id first, then the right one.
		f, _ := ReadFrame(nc, 0)
		body, _ := Marshal(&GetReply{ReadTS: 666})
		_ = WriteFrame(nc, MsgGetReply, f.ID+1000, body)
		body, _ = Marshal(&GetReply{ReadTS: 1})
		_ = WriteFrame(nc, MsgGetReply, f.ID, body)
		// Second request: a connection-level error frame (id 0).
		_, _ = ReadFrame(nc, 0)
		body, _ = Marshal(&Error{Code: CodeShuttingDown, Message: "bye"})
		_ = WriteFrame(nc, MsgError, 0, body)
		_, _ = io.Copy(io.Discard, nc)
	})
	c, err := Dial(context.Background(), addr, DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var r GetReply
	if err := c.Call(context.Background(), &GetRequest{}, &r); err != nil || r.ReadTS != 1 {
		t.Fatalf("first call: %+v %v", r, err)
	}
	err = c.Call(context.Background(), &GetRequest{}, &r)
	if !errors.Is(err, ErrConnLost) || !strings.Contains(err.Error(), "bye") {
		t.Fatalf("second call: %v", err)
	}
	var we *Error
	if !errors.As(c.Err(), &we) || we.Code != CodeShuttingDown {
		t.Fatalf("Err() = %v", c.Err())
	}
}

func TestManyConnectionsConcurrently(t *testing.T) {
	s := startServer(t, HandlerFunc(echoHandler), ServerConfig{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			c, err := Dial(context.Background(), s.Addr().String(), DialOptions{Name: fmt.Sprint("c", i)})
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			var inner sync.WaitGroup
			for j := range 8 {
				inner.Go(func() {
					for k := range 50 {
						ts := uint64(i*10000 + j*100 + k)
						var r GetReply
						if err := c.Call(context.Background(), &GetRequest{Keys: [][]byte{[]byte("x")}, ReadTS: ts}, &r); err != nil || r.ReadTS != ts {
							t.Errorf("call: %+v %v", r, err)
							return
						}
					}
				})
			}
			inner.Wait()
			var st StatusReply
			if err := c.Call(context.Background(), &StatusRequest{}, &st); err != nil || st.Processes[0].Name != fmt.Sprint("c", i) {
				t.Errorf("status: %+v %v", st, err)
			}
		})
	}
	wg.Wait()
}

// BenchmarkCallPipelined measures concurrent small calls sharing one Conn.
func BenchmarkCallPipelined(b *testing.B) {
	s := startServer(b, HandlerFunc(echoHandler), ServerConfig{})
	c := dial(b, s, DialOptions{})
	req := &GetRequest{Keys: [][]byte{[]byte("some-key-0001")}, ReadTS: 7}
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var r GetReply
		for pb.Next() {
			if err := c.Call(context.Background(), req, &r); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkCallSequential measures the round-trip latency of one caller.
func BenchmarkCallSequential(b *testing.B) {
	s := startServer(b, HandlerFunc(echoHandler), ServerConfig{})
	c := dial(b, s, DialOptions{})
	req := &GetRequest{Keys: [][]byte{[]byte("some-key-0001")}, ReadTS: 7}
	var r GetReply
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Call(context.Background(), req, &r); err != nil {
			b.Fatal(err)
		}
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := NewServer(HandlerFunc(echoHandler), ServerConfig{Logger: quietLogger()})
		served := make(chan error, 1)
		go func() { served <- s.Serve(l) }()
		for s.Addr() == nil {
			time.Sleep(time.Millisecond)
		}
		var conns []*Conn
		for range 3 {
			c, err := Dial(context.Background(), s.Addr().String(), DialOptions{})
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			for range 10 {
				if err := c.Call(context.Background(), &GetRequest{ReadTS: 1}, &GetReply{}); err != nil {
					t.Fatal(err)
				}
			}
		}
		_ = conns[0].Close()
		if err := s.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		<-served
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Dial(ctx, "127.0.0.1:1", DialOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Dial with cancelled ctx: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines before, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}
