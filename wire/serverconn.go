package wire

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"time"
)

// serverConn is one accepted connection: a reader goroutine (serve), a writer
// goroutine and one goroutine per running handler.
type serverConn struct {
	s      *Server
	nc     net.Conn  // the connection: raw itself, or a TLS server over it
	raw    net.Conn  // the accepted socket
	tls    *tls.Conn // nc with ServerConfig.TLS, else nil
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

	// authed, trusted and unlimited are guarded by s.mu: authed once promote let the
	// connection in, trusted if its peer is Trusted; unlimited for ServeConn's, never refused.
	authed, trusted, unlimited bool
	host                       string // the peer's IP address, for MaxConnsPerHost

	mu       sync.Mutex
	active   int  // running handlers
	waiting  bool // the reader is waiting for the start of a frame
	draining bool // Shutdown: read no more requests
}

func newServerConn(s *Server, raw net.Conn) *serverConn {
	nc := raw
	var tc *tls.Conn
	if s.cfg.TLS != nil {
		tc = tls.Server(raw, s.cfg.TLS)
		nc = tc
	}
	sc := &serverConn{
		s:          s,
		nc:         nc,
		raw:        raw,
		tls:        tc,
		remote:     raw.RemoteAddr().String(),
		host:       hostOf(raw.RemoteAddr()),
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
	raw     bool    // the TLS handshake failed: drain and close the socket, sending nothing more
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
	switch {
	case ci.raw:
		lingerClose(sc.raw)
	case ci.frame != nil || drained:
		lingerClose(sc.nc)
	default:
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
	deadline := time.Now().Add(cfg.HelloTimeout)
	if sc.tls != nil {
		if ci := sc.handshake(deadline); ci != nil {
			return *ci
		}
	}
	// The hello.
	if err := sc.waitFrame(time.Until(deadline), false); err != nil {
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
	if !sc.peer.Lane.Valid() {
		return bad(CodeBadRequest, t, id, start, "unknown lane %d", uint8(sc.peer.Lane))
	}
	if sc.tls != nil && cfg.Identify != nil {
		if ci := sc.identify(t, id, start); ci != nil {
			return *ci
		}
	}
	if we := sc.s.promote(sc); we != nil {
		return closeInfo{reason: we.Message, warn: true, frame: we, id: id, typ: t, start: start}
	}
	reply := &HelloReply{Version: ProtocolVersion, Name: cfg.Name, ClusterID: cfg.ClusterID, MaxBytesInFlight: cfg.MaxBytesInFlight}
	sc.send(outMsg{m: reply, id: id, typ: MsgHello, start: start})

	// Requests.
	for {
		if err := sc.waitFrame(cfg.IdleTimeout, true); err != nil {
			return sc.waitFailure(err, false)
		}
		if ci := sc.nextRequest(); ci != nil {
			return *ci
		}
	}
}

// nextRequest reads the request whose first byte waitFrame saw, once admission lets it in,
// and starts its handler; a request refused as busy is answered at once. It returns the
// closeInfo if the connection must close.
func (sc *serverConn) nextRequest() *closeInfo {
	t, id, body, size, ci := sc.readRequest()
	if ci != nil || body == nil {
		return ci // closing, or refused as busy
	}
	start := time.Now()
	started := false
	defer func() {
		if !started {
			sc.s.admission.release(size)
		}
	}()
	switch {
	case !t.Valid():
		ci := bad(CodeUnknownMessage, t, id, start, "unknown message type %d", uint8(t))
		return &ci
	case t == MsgHello:
		ci := bad(CodeBadRequest, t, id, start, "unexpected hello after handshake")
		return &ci
	case !t.IsRequest():
		ci := bad(CodeBadRequest, t, id, start, "%s is not a request", t)
		return &ci
	case sc.peer.Lane == LaneProtocol && t.Lane() != LaneProtocol:
		ci := bad(CodeBadRequest, t, id, start, "%s is not served on a protocol-lane connection", t)
		return &ci
	}
	msg := NewMessage(t)
	if err := decodeWith(sc.dec, body, msg); err != nil {
		we := err.(*Error)
		return &closeInfo{reason: we.Message, warn: true, frame: we, id: id, typ: t, start: start}
	}
	select {
	case sc.sem <- struct{}{}:
	case <-sc.ctx.Done():
		return &closeInfo{reason: "server closed"}
	}
	sc.mu.Lock()
	sc.active++
	sc.mu.Unlock()
	sc.handlers.Add(1)
	started = true
	req := &Request{Type: t, ID: id, Peer: sc.peer, msg: msg}
	sc.s.workers.Go(func() { sc.handle(req, start, size) })
	return nil
}

// readRequest reads a request frame's header, waits for admission to let a body of its size
// in, then reads the body. A request that waited past BusyWait has its body discarded and is
// answered with CodeBusy: body is then nil, and ci too. An admitted request's size must be
// released (admission.release) once done with.
func (sc *serverConn) readRequest() (t MsgType, id uint64, body []byte, size int64, ci *closeInfo) {
	var h header
	if _, err := io.ReadFull(sc.br, h[:]); err != nil {
		return 0, 0, nil, 0, sc.readFailure(err, "frame header", 0, 0)
	}
	start := time.Now()
	n, t, id := h.parse()
	if err := checkLen(n, t, sc.s.cfg.MaxFrame); err != nil {
		we := err.(*Error)
		return t, id, nil, 0, &closeInfo{reason: we.Message, warn: true, frame: we, id: id, typ: t, start: start}
	}
	size = int64(n)
	a := sc.s.admission
	switch {
	case sc.peer.Lane == LaneProtocol:
		a.force(size)
	case sc.trusted:
		if !a.acquire(sc.ctx, size, 0) {
			return t, id, nil, 0, &closeInfo{reason: "server closed"}
		}
	case !a.acquire(sc.ctx, size, sc.s.cfg.BusyWait):
		if sc.ctx.Err() != nil {
			return t, id, nil, 0, &closeInfo{reason: "server closed"}
		}
		_ = sc.nc.SetReadDeadline(time.Now().Add(sc.s.cfg.ReadTimeout))
		if _, err := io.CopyN(io.Discard, sc.br, size); err != nil {
			return t, id, nil, 0, sc.readFailure(err, "frame body", t, id)
		}
		in := a.snapshot()
		sc.send(outMsg{m: Errorf(CodeBusy, "%s is busy: %d requests, %d bytes in flight and %d waiting; retry shortly",
			sc.s.cfg.Name, in.Requests, in.Bytes, in.Waiting), id: id, typ: t, start: start})
		return t, id, nil, 0, nil
	}
	_ = sc.nc.SetReadDeadline(time.Now().Add(sc.s.cfg.ReadTimeout)) // the wait for room is not the peer's
	body, err := readBody(sc.br, int(n), sc.rbuf)
	if err != nil {
		a.release(size)
		return t, id, nil, 0, sc.readFailure(err, "frame body", t, id)
	}
	if cap(body) <= maxPooledBuf {
		sc.rbuf = body[:0]
	}
	if body == nil {
		body = []byte{} // an empty body is still a request
	}
	return t, id, body, size, nil
}

// handshake runs the TLS handshake, which must end by deadline. On failure it returns the
// closeInfo: the socket is drained and closed (crypto/tls sent the alert), and a peer that
// sent something other than TLS (a kvtx client without TLS) gets an error frame in plaintext
// first.
func (sc *serverConn) handshake(deadline time.Time) *closeInfo {
	sc.mu.Lock()
	if sc.draining {
		sc.mu.Unlock()
		return &closeInfo{reason: "server shutting down", raw: true}
	}
	sc.waiting = true // Shutdown's drain interrupts the handshake
	_ = sc.raw.SetDeadline(deadline)
	sc.mu.Unlock()

	err := sc.tls.HandshakeContext(sc.ctx)

	sc.mu.Lock()
	sc.waiting = false
	draining := sc.draining
	sc.mu.Unlock()
	switch {
	case draining:
		return &closeInfo{reason: "server shutting down", raw: true}
	case err == nil:
		if err := sc.raw.SetDeadline(time.Time{}); err != nil {
			return &closeInfo{reason: "set deadline: " + err.Error(), raw: true}
		}
		return nil
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) && rh.Conn != nil {
		we := Errorf(CodeBadRequest, "this server speaks only TLS, with a client certificate: connect with TLS (or start the server without TLS)")
		_ = sc.raw.SetWriteDeadline(time.Now().Add(sc.s.cfg.WriteTimeout))
		if body, err := Marshal(we); err == nil {
			_ = WriteFrame(sc.raw, MsgError, 0, body)
		}
		return &closeInfo{reason: "not TLS: " + err.Error(), warn: true, raw: true}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &closeInfo{reason: fmt.Sprintf("TLS handshake not done within %v", sc.s.cfg.HelloTimeout), warn: true, raw: true}
	}
	return &closeInfo{reason: "TLS handshake failed: " + err.Error(), warn: true, raw: true}
}

// identify replaces the hello's role and name by the certificate's identity, refusing a
// hello that claims another one.
func (sc *serverConn) identify(t MsgType, id uint64, start time.Time) *closeInfo {
	name, role, err := sc.s.cfg.Identify(sc.tls.ConnectionState())
	if err != nil {
		ci := bad(CodePermissionDenied, t, id, start, "%v", err)
		return &ci
	}
	if sc.peer.Name != "" && sc.peer.Name != name {
		ci := bad(CodePermissionDenied, t, id, start, "hello claims %s but the certificate is %s's", sc.peer.Name, name)
		return &ci
	}
	if sc.peer.Role != "" && sc.peer.Role != role {
		ci := bad(CodePermissionDenied, t, id, start, "hello claims role %s but the certificate of %s has role %s", sc.peer.Role, name, role)
		return &ci
	}
	sc.peer.Name, sc.peer.Role = name, role
	return nil
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

// handle runs the handler for req, queues its reply and returns its size to admission.
func (sc *serverConn) handle(req *Request, start time.Time, size int64) {
	defer sc.s.admission.release(size)
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
