package wire

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"time"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("wire: server closed")

// Request is one decoded request handed to a Handler.
type Request struct {
	Type MsgType // a request type (MsgType.IsRequest)
	ID   uint64  // the request id, echoed in the reply frame
	Peer Hello   // the hello this connection opened with

	msg Message // the decoded body, of NewMessage(Type)'s type
}

// Decode stores the request body in m, which must be a pointer to the body
// type of r.Type (e.g. *GetRequest for MsgGet). It costs a shallow copy: the
// body was decoded and validated before the handler ran, and byte slices are
// shared between Decode calls on the same request. A type mismatch is an
// *Error with CodeBadRequest.
func (r *Request) Decode(m Message) error {
	if r.msg == nil {
		return Errorf(CodeBadRequest, "request %d has no body", r.ID)
	}
	return copyMessage(m, r.msg)
}

// Message returns the decoded request body, a pointer as returned by
// NewMessage(r.Type), handy for a type switch. Handlers must not modify it
// if they also use Decode.
func (r *Request) Message() Message { return r.msg }

// Handler serves requests. Handle is called in its own goroutine for each
// request, so it may block (e.g. on locks); ctx is cancelled when the
// connection closes or the server is force-closed. The returned Message is
// sent as its own type (nil means Ack) and is encoded after Handle returns,
// so the handler must not modify it afterwards; an error is sent as MsgError:
// an *Error found with errors.As as is, any other error as CodeOf(err) with
// err.Error() as the message. A panic is recovered, logged and answered with
// CodeInternal.
type Handler interface {
	Handle(ctx context.Context, req *Request) (Message, error)
}

// HandlerFunc adapts a function to the Handler interface.
type HandlerFunc func(ctx context.Context, req *Request) (Message, error)

// Handle calls f(ctx, req).
func (f HandlerFunc) Handle(ctx context.Context, req *Request) (Message, error) { return f(ctx, req) }

// Observer receives server events, e.g. for metrics. Its methods are called
// concurrently from connection goroutines and must be fast and non-blocking.
type Observer interface {
	// ConnOpened is called when a connection is admitted.
	ConnOpened()
	// ConnClosed is called once for every ConnOpened, after the connection's
	// socket is closed.
	ConnClosed()
	// Request is called once per request handled or rejected (including the
	// hello and bad frames), with the reply's code and the time from having
	// read the frame to having encoded the reply.
	Request(t MsgType, code Code, d time.Duration)
}

// ServerConfig configures a Server. The zero value gives the documented
// defaults.
type ServerConfig struct {
	Name         string        // sent in HelloReply
	ClusterID    uint64        // if non-zero, a Hello with a different non-zero ClusterID is refused with CodeVersionMismatch
	MaxFrame     int           // largest request body accepted; 0 means DefaultMaxFrame
	IdleTimeout  time.Duration // 0 means 5m: a connection with no request and nothing in flight for this long is closed
	ReadTimeout  time.Duration // 0 means 10s: once a frame has started, all of it must arrive within this
	WriteTimeout time.Duration // 0 means 10s: bounds each batch of reply writes
	HelloTimeout time.Duration // 0 means 5s: the hello must arrive within this after accept
	MaxConns     int           // 0 means 1024; extra connections get an error frame CodeUnavailable and are closed
	MaxInFlight  int           // 0 means 256 per connection: the reader stops reading while this many handlers run
	Logger       *slog.Logger  // nil means slog.Default()
	Observer     Observer      // optional
}

// lingerTimeout bounds how long a connection closed after an error frame
// keeps draining the peer's unread input, so that the close is a FIN after
// the error frame rather than a reset that could discard it.
const lingerTimeout = 500 * time.Millisecond

// Server serves the wire protocol on listeners, running each request in its
// own goroutine. It is safe for concurrent use.
type Server struct {
	h      Handler
	cfg    ServerConfig
	log    *slog.Logger
	obs    Observer
	ctx    context.Context // cancelled on force-close
	cancel context.CancelFunc

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	addr      net.Addr
	conns     map[*serverConn]struct{}
	shutdown  bool
	wg        sync.WaitGroup // connection and refusal goroutines
	workers   *WorkerPool    // runs request handlers
}

// NewServer returns a server dispatching requests to h.
func NewServer(h Handler, cfg ServerConfig) *Server {
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = DefaultMaxFrame
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 5 * time.Minute
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 10 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = 5 * time.Second
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 1024
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 256
	}
	s := &Server{
		h:         h,
		workers:   NewWorkerPool(30 * time.Second),
		cfg:       cfg,
		log:       cfg.Logger,
		obs:       cfg.Observer,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*serverConn]struct{}),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.obs == nil {
		s.obs = nopObserver{}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

type nopObserver struct{}

func (nopObserver) ConnOpened()                          {}
func (nopObserver) ConnClosed()                          {}
func (nopObserver) Request(MsgType, Code, time.Duration) {}

// Addr returns the address of the listener being served, or nil before Serve.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Serve accepts connections on l until Shutdown, then returns
// ErrServerClosed; any other accept failure is returned as is. Serve closes l
// when it returns.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		_ = l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	if s.addr == nil {
		s.addr = l.Addr()
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		_ = l.Close()
	}()

	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.closing() {
				return ErrServerClosed
			}
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("wire: accept failed; retrying", "addr", l.Addr().String(), "err", err, "delay", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("wire: accept on %s: %w", l.Addr(), err)
		}
		backoff = 0
		s.admit(nc)
	}
}

func (s *Server) closing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutdown
}

// admit starts serving nc, or refuses it if the server is full or closing.
func (s *Server) admit(nc net.Conn) {
	s.mu.Lock()
	if s.shutdown {
		// Accepted just before the listener closed.
		s.mu.Unlock()
		_ = nc.Close()
		return
	}
	if len(s.conns) >= s.cfg.MaxConns {
		s.wg.Add(1) // before Shutdown can Wait: shutdown is false under s.mu
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			we := Errorf(CodeUnavailable, "too many connections (limit %d)", s.cfg.MaxConns)
			s.log.Warn("wire: refusing connection", "remote", nc.RemoteAddr().String(), "reason", we.Message)
			_ = nc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
			if body, err := Marshal(we); err == nil {
				_ = WriteFrame(nc, MsgError, 0, body)
			}
			lingerClose(nc)
		}()
		return
	}
	sc := newServerConn(s, nc)
	s.conns[sc] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go sc.serve()
}

// ServeConn serves one already-accepted connection (e.g. one end of a
// net.Pipe) in the calling goroutine and returns once it is closed. Unlike
// accepted connections it is never refused for MaxConns, but it counts toward
// the limit and is drained by Shutdown like them.
func (s *Server) ServeConn(nc net.Conn) {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		_ = nc.Close()
		return
	}
	sc := newServerConn(s, nc)
	s.conns[sc] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	sc.serve()
}

func (s *Server) removeConn(sc *serverConn) {
	s.mu.Lock()
	delete(s.conns, sc)
	s.mu.Unlock()
}

// Shutdown stops accepting, stops reading new requests, lets in-flight
// handlers finish and their replies flush, sends each connection a MsgError
// with id 0 and CodeShuttingDown, and closes it. If ctx ends first, it
// cancels every handler's context, closes every connection and returns
// ctx.Err(). After Shutdown, Serve returns ErrServerClosed.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	for l := range s.listeners {
		_ = l.Close()
	}
	for sc := range s.conns {
		sc.drain()
	}
	s.mu.Unlock()

	// No wg.Add happens once shutdown is set (admit and ServeConn check it
	// under s.mu), so waiting is safe.
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.workers.Close()
		return nil
	case <-ctx.Done():
		s.workers.Close()
		// Close sockets before cancelling handlers, so that no reply from a
		// handler reacting to the cancellation goes out.
		s.mu.Lock()
		for sc := range s.conns {
			_ = sc.nc.Close()
		}
		s.mu.Unlock()
		s.cancel()
		return ctx.Err()
	}
}

// lingerClose half-closes nc after everything was written, then discards the
// peer's input until it closes or lingerTimeout passes, and closes nc.
// Closing a TCP socket with unread input sends a reset, which may make the
// peer drop our last frame unread.
func lingerClose(nc net.Conn) {
	if cw, ok := nc.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		_ = nc.SetReadDeadline(time.Now().Add(lingerTimeout))
		_, _ = io.Copy(io.Discard, io.LimitReader(nc, 4<<20))
	}
	_ = nc.Close()
}

// serverConn is one accepted connection: a reader goroutine (serve), a writer
// goroutine and one goroutine per running handler.
type serverConn struct {
	s      *Server
	nc     net.Conn
	remote string
	br     *bufio.Reader
	dec    *decoder
	rbuf   []byte
	out    chan outMsg // replies for the writer; closed by serve once nothing else sends
	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{} // one token per running handler
	peer   Hello

	handlers   sync.WaitGroup
	writerDone chan struct{}

	mu       sync.Mutex
	active   int  // running handlers
	waiting  bool // the reader is waiting for the start of a frame
	draining bool // Shutdown: read no more requests
}

func newServerConn(s *Server, nc net.Conn) *serverConn {
	sc := &serverConn{
		s:          s,
		nc:         nc,
		remote:     nc.RemoteAddr().String(),
		br:         bufio.NewReaderSize(nc, connBufSize),
		dec:        new(decoder),
		out:        make(chan outMsg, s.cfg.MaxInFlight+4),
		sem:        make(chan struct{}, s.cfg.MaxInFlight),
		writerDone: make(chan struct{}),
	}
	sc.ctx, sc.cancel = context.WithCancel(s.ctx)
	return sc
}

// drain asks the reader to stop reading requests (Shutdown). A reader waiting
// between frames is woken at once; one inside a frame finishes reading it.
func (sc *serverConn) drain() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.draining = true
	if sc.waiting {
		_ = sc.nc.SetReadDeadline(time.Unix(1, 0))
	}
}

// closeInfo says why the reader stopped and what to send before closing.
type closeInfo struct {
	reason  string  // for the log
	warn    bool    // bad input: log at Warn
	drained bool    // stopped by Shutdown: finish handlers, say goodbye
	frame   *Error  // sent before closing, if non-nil
	id      uint64  // request id for frame
	typ     MsgType // the offending frame's type, for the observer
	start   time.Time
}

var errDraining = errors.New("wire: draining")

func (sc *serverConn) serve() {
	s := sc.s
	defer s.wg.Done()
	defer s.removeConn(sc)
	s.obs.ConnOpened()
	defer s.obs.ConnClosed()

	go sc.writeLoop()
	ci := sc.readLoop()
	if ci.warn {
		s.log.Warn("wire: closing connection", "remote", sc.remote, "peer", sc.peer.Name, "reason", ci.reason)
	} else {
		s.log.Debug("wire: closing connection", "remote", sc.remote, "peer", sc.peer.Name, "reason", ci.reason)
	}
	if ci.frame != nil {
		sc.send(outMsg{m: ci.frame, id: ci.id, typ: ci.typ, start: ci.start})
	}
	drained := ci.drained
	if !drained {
		sc.cancel()
	}
	sc.handlers.Wait()
	if drained {
		sc.send(outMsg{m: Errorf(CodeShuttingDown, "server shutting down")})
	}
	close(sc.out)
	<-sc.writerDone
	if ci.frame != nil || drained {
		lingerClose(sc.nc)
	} else {
		_ = sc.nc.Close()
	}
	sc.cancel()
}

// outMsg is a message queued for the writer, which encodes it. typ and start,
// when start is set, are reported to the Observer once the reply's code is
// known.
type outMsg struct {
	m     Message
	id    uint64
	typ   MsgType
	start time.Time
}

// send queues a message for the writer. It never blocks for long: out has
// room for every handler plus the reader's own frames, and the writer drains
// it even after a write error. The message must not be modified afterwards.
func (sc *serverConn) send(om outMsg) { sc.out <- om }

// writeLoop encodes and writes queued messages with one reused encoder,
// flushing when the queue runs empty so that concurrent replies share
// syscalls. After a write error it closes the connection and discards the
// rest. Encoding here rather than in handler goroutines keeps the deep
// encoder stack on one long-lived goroutine.
func (sc *serverConn) writeLoop() {
	defer close(sc.writerDone)
	bw := bufio.NewWriterSize(sc.nc, connBufSize)
	e := getEncoder()
	defer putEncoder(e)
	failed := false
	for om := range sc.out {
		if failed {
			sc.observe(om)
			continue
		}
		_ = sc.nc.SetWriteDeadline(time.Now().Add(sc.s.cfg.WriteTimeout))
		var err error
		for ok := true; ok; {
			if err = sc.writeMsg(bw, e, om); err != nil {
				break
			}
			select {
			case om, ok = <-sc.out:
			default:
				// Let runnable handlers enqueue before paying for a syscall.
				runtime.Gosched()
				select {
				case om, ok = <-sc.out:
				default:
					ok = false
				}
			}
		}
		if err == nil {
			err = bw.Flush()
		}
		if err != nil {
			failed = true
			sc.s.log.Debug("wire: write failed", "remote", sc.remote, "err", err)
			sc.cancel()
			_ = sc.nc.Close()
		}
	}
}

// observe reports om to the Observer if it answers a frame.
func (sc *serverConn) observe(om outMsg) {
	if om.start.IsZero() {
		return
	}
	code := CodeOK
	if we, ok := om.m.(*Error); ok {
		code = we.Code
	}
	sc.s.obs.Request(om.typ, code, time.Since(om.start))
}

// writeMsg encodes om into e and writes the frame to bw. A message that
// cannot be encoded, or exceeds MaxFrame, is replaced by an error frame.
func (sc *serverConn) writeMsg(bw *bufio.Writer, e *encoder, om outMsg) error {
	if err := e.frame(om.m, om.id, sc.s.cfg.MaxFrame); err != nil {
		we, ok := err.(*Error)
		if !ok {
			we = Errorf(CodeInternal, "%v", err)
		}
		sc.s.log.Error("wire: cannot send reply", "remote", sc.remote, "type", msgTypeOf(om.m).String(), "err", err)
		om.m = we
		if err := e.frame(we, om.id, sc.s.cfg.MaxFrame); err != nil {
			return err
		}
	}
	sc.observe(om)
	err := e.writeTo(bw)
	if cap(e.buf) > maxPooledBuf {
		e.buf = nil // do not pin a rare huge buffer for the connection's life
	}
	return err
}

// waitFrame waits until the next frame starts (its first byte is buffered),
// with the given deadline, and then gives the rest of the frame ReadTimeout.
// idle means the deadline applies only while no handler runs. It returns
// errDraining once Shutdown asked the reader to stop.
func (sc *serverConn) waitFrame(d time.Duration, idle bool) error {
	sc.mu.Lock()
	if sc.draining {
		sc.mu.Unlock()
		return errDraining
	}
	sc.waiting = true
	if !idle || sc.active == 0 {
		_ = sc.nc.SetReadDeadline(time.Now().Add(d))
	} else {
		_ = sc.nc.SetReadDeadline(time.Time{})
	}
	sc.mu.Unlock()

	_, err := sc.br.Peek(1)

	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.waiting = false
	if sc.draining {
		return errDraining
	}
	if err != nil {
		return err
	}
	return sc.nc.SetReadDeadline(time.Now().Add(sc.s.cfg.ReadTimeout))
}

// handlerDone records the end of a handler and, if it was the last one while
// the reader waits for a frame, starts the idle timer.
func (sc *serverConn) handlerDone() {
	sc.mu.Lock()
	sc.active--
	if sc.active == 0 && sc.waiting && !sc.draining {
		_ = sc.nc.SetReadDeadline(time.Now().Add(sc.s.cfg.IdleTimeout))
	}
	sc.mu.Unlock()
	<-sc.sem
	sc.handlers.Done()
}

// readFrame reads the frame whose first byte waitFrame saw. On failure it
// returns a closeInfo describing the reply and the reason.
func (sc *serverConn) readFrame() (t MsgType, id uint64, body []byte, ci *closeInfo) {
	var h header
	if _, err := io.ReadFull(sc.br, h[:]); err != nil {
		return 0, 0, nil, sc.readFailure(err, "frame header", 0, 0)
	}
	start := time.Now()
	n, t, id := h.parse()
	if err := checkLen(n, t, sc.s.cfg.MaxFrame); err != nil {
		we := err.(*Error)
		return t, id, nil, &closeInfo{reason: we.Message, warn: true, frame: we, id: id, typ: t, start: start}
	}
	body, err := readBody(sc.br, int(n), sc.rbuf)
	if err != nil {
		return t, id, nil, sc.readFailure(err, "frame body", t, id)
	}
	if cap(body) <= maxPooledBuf {
		sc.rbuf = body[:0]
	}
	return t, id, body, nil
}

func (sc *serverConn) readFailure(err error, what string, t MsgType, id uint64) *closeInfo {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded):
		we := Errorf(CodeTimeout, "%s not received within %v", what, sc.s.cfg.ReadTimeout)
		return &closeInfo{reason: we.Message, warn: true, frame: we, id: id, typ: t, start: time.Now()}
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		we := Errorf(CodeBadRequest, "truncated %s", what)
		return &closeInfo{reason: we.Message, warn: true, frame: we, id: id, typ: t, start: time.Now()}
	}
	return &closeInfo{reason: fmt.Sprintf("read %s: %v", what, err)}
}

// bad returns the closeInfo for a frame rejected with code.
func bad(code Code, t MsgType, id uint64, start time.Time, format string, args ...any) closeInfo {
	we := Errorf(code, format, args...)
	return closeInfo{reason: we.Message, warn: true, frame: we, id: id, typ: t, start: start}
}

// readLoop performs the hello and then reads and dispatches requests until the
// connection must close, saying why.
func (sc *serverConn) readLoop() closeInfo {
	cfg := &sc.s.cfg
	// The hello.
	if err := sc.waitFrame(cfg.HelloTimeout, false); err != nil {
		return sc.waitFailure(err, true)
	}
	t, id, body, ci := sc.readFrame()
	if ci != nil {
		return *ci
	}
	start := time.Now()
	if t != MsgHello {
		return bad(CodeBadRequest, t, id, start, "first frame must be hello, got %s", t)
	}
	if err := decodeWith(sc.dec, body, &sc.peer); err != nil {
		we := err.(*Error)
		return closeInfo{reason: we.Message, warn: true, frame: we, id: id, typ: t, start: start}
	}
	if sc.peer.Version != ProtocolVersion {
		return bad(CodeVersionMismatch, t, id, start, "protocol version %d not supported, want %d", sc.peer.Version, ProtocolVersion)
	}
	if cfg.ClusterID != 0 && sc.peer.ClusterID != 0 && sc.peer.ClusterID != cfg.ClusterID {
		return bad(CodeVersionMismatch, t, id, start, "cluster id %d does not match %d", sc.peer.ClusterID, cfg.ClusterID)
	}
	sc.send(outMsg{m: &HelloReply{Version: ProtocolVersion, Name: cfg.Name, ClusterID: cfg.ClusterID}, id: id, typ: MsgHello, start: start})

	// Requests.
	for {
		if err := sc.waitFrame(cfg.IdleTimeout, true); err != nil {
			return sc.waitFailure(err, false)
		}
		t, id, body, ci := sc.readFrame()
		if ci != nil {
			return *ci
		}
		start := time.Now()
		switch {
		case !t.Valid():
			return bad(CodeUnknownMessage, t, id, start, "unknown message type %d", uint8(t))
		case t == MsgHello:
			return bad(CodeBadRequest, t, id, start, "unexpected hello after handshake")
		case !t.IsRequest():
			return bad(CodeBadRequest, t, id, start, "%s is not a request", t)
		}
		msg := NewMessage(t)
		if err := decodeWith(sc.dec, body, msg); err != nil {
			we := err.(*Error)
			return closeInfo{reason: we.Message, warn: true, frame: we, id: id, typ: t, start: start}
		}
		select {
		case sc.sem <- struct{}{}:
		case <-sc.ctx.Done():
			return closeInfo{reason: "server closed"}
		}
		sc.mu.Lock()
		sc.active++
		sc.mu.Unlock()
		sc.handlers.Add(1)
		req := &Request{Type: t, ID: id, Peer: sc.peer, msg: msg}
		sc.s.workers.Go(func() { sc.handle(req, start) })
	}
}

// waitFailure turns a failure to see the start of a frame into a closeInfo.
func (sc *serverConn) waitFailure(err error, hello bool) closeInfo {
	var ne net.Error
	switch {
	case errors.Is(err, errDraining):
		return closeInfo{reason: "server shutting down", drained: true}
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded):
		if hello {
			we := Errorf(CodeTimeout, "no hello within %v", sc.s.cfg.HelloTimeout)
			return closeInfo{reason: we.Message, warn: true, frame: we}
		}
		we := Errorf(CodeTimeout, "idle for %v", sc.s.cfg.IdleTimeout)
		return closeInfo{reason: we.Message, frame: we}
	case errors.Is(err, io.EOF):
		return closeInfo{reason: "closed by peer"}
	}
	return closeInfo{reason: "read: " + err.Error()}
}

// handle runs the handler for req and queues its reply.
func (sc *serverConn) handle(req *Request, start time.Time) {
	defer sc.handlerDone()
	sc.send(outMsg{m: sc.call(req), id: req.ID, typ: req.Type, start: start})
}

// call runs the handler, turning errors and panics into an *Error reply.
func (sc *serverConn) call(req *Request) (reply Message) {
	defer func() {
		if r := recover(); r != nil {
			sc.s.log.Error("wire: handler panicked", "remote", sc.remote, "type", req.Type.String(),
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			reply = Errorf(CodeInternal, "panic in %s handler: %v", req.Type, r)
		}
	}()
	m, err := sc.s.h.Handle(sc.ctx, req)
	if err != nil {
		var we *Error
		if errors.As(err, &we) {
			return we
		}
		return &Error{Code: CodeOf(err), Message: err.Error()}
	}
	if m == nil {
		return &Ack{}
	}
	if t := msgTypeOf(m); !t.Valid() {
		return Errorf(CodeInternal, "%s handler returned a body of unknown type %d", req.Type, uint8(t))
	}
	return m
}
