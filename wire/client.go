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
	"sync"
	"sync/atomic"
	"time"
)

// ErrNotSent is wrapped by a Call error when the server certainly never saw the
// request, so any request may be retried, elsewhere too: the connection was
// already broken before the request reached the connection's writer, or the
// call's context ended while the request waited for the writer (behind other
// requests on a connection the server reads slowly). The context's error is
// wrapped too then, and the connection stays usable.
var ErrNotSent = errors.New("wire: request not sent")

// ErrConnLost is wrapped by a Call error when the connection broke while the
// request was in flight: the server may or may not have executed it.
var ErrConnLost = errors.New("wire: connection lost with request in flight")

// errConnClosed is the reason of a Conn closed by its owner.
var errConnClosed = errors.New("wire: connection closed by client")

// connBufSize is the size of each connection's bufio reader and writer.
const connBufSize = 32 << 10

// DialOptions configures Dial. The zero value is usable.
type DialOptions struct {
	Role      string // sent in Hello: "client", "master" or "node"; with TLS, empty means the certificate's
	Name      string // sent in Hello: this process's name; with TLS, empty means the certificate's
	ClusterID uint64 // sent in Hello; 0 skips the cluster check
	Lane      Lane   // sent in Hello: the requests this connection may carry (default LaneClient, any)

	MaxFrame    int           // largest reply body accepted; 0 means DefaultMaxFrame
	DialTimeout time.Duration // bounds the TCP connect, the TLS handshake and the hello exchange; 0 means 5s

	// TLS, if set, makes the connection TLS (a certs.Loader's ClientConfig, which presents
	// this process's certificate and checks the server's identity); nil is plaintext. The
	// server then takes Role and Name from the certificate and refuses a hello that claims
	// others. In TLS 1.3 a server that refuses this side's certificate says so only after the
	// client's handshake is done: Dial returns its alert as the hello's error.
	TLS *tls.Config
}

// Conn is a client connection multiplexing many concurrent calls: requests
// are pipelined through one writer goroutine and replies are matched to
// callers by request id, so they may arrive in any order. A Conn is safe for
// concurrent use; once broken (see Err) it stays broken, and the owner should
// Close it and dial again.
type Conn struct {
	nc       net.Conn
	maxFrame int
	remote   HelloReply
	nextID   atomic.Uint64
	wq       chan queued // framed requests for the writer

	mu      sync.Mutex
	pending map[uint64]*call // nil once broken
	err     error            // why the conn broke; nil while usable
	broken  chan struct{}    // closed when err is set

	readerDone chan struct{}
	writerDone chan struct{}
}

// call states: a call is completed by exactly one of the reader (a reply), a
// break (ErrConnLost) or its caller giving up (abandoned), decided by CAS.
const (
	callWaiting uint32 = iota
	callClaimed
	callAbandoned
)

// send states: a queued request is either taken by the writer (from then on the
// server may see it) or withdrawn by its caller (never written), decided by CAS.
const (
	sendQueued uint32 = iota
	sendWriting
	sendWithdrawn
)

// queued is a framed request waiting for the writer, with its call.
type queued struct {
	e  *encoder
	cl *call
}

type call struct {
	state   atomic.Uint32
	send    atomic.Uint32
	reqType MsgType
	resp    Message
	err     error
	done    chan struct{}
}

// Dial connects to addr over TCP, does the TLS handshake if opts.TLS is set,
// and exchanges Hello/HelloReply. A refused hello returns the server's *Error
// (CodeVersionMismatch for another protocol version or cluster id,
// CodePermissionDenied for a hello that claims another identity than the
// certificate's). A failed handshake returns crypto/tls's error, wrapped. The
// whole dial is bounded by ctx and opts.DialTimeout.
func Dial(ctx context.Context, addr string, opts DialOptions) (*Conn, error) {
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, opts.DialTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("wire: dial %s: %w", addr, err)
	}
	if opts.TLS != nil {
		tc := tls.Client(nc, opts.TLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = nc.Close()
			if ctx.Err() != nil {
				err = fmt.Errorf("%w (%w)", ctx.Err(), err)
			}
			return nil, fmt.Errorf("wire: TLS handshake with %s: %w", addr, err)
		}
		nc = tc
	}
	c, err := newConn(ctx, nc, opts)
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	return c, nil
}

// newConn performs the client side of the hello on nc and starts the
// connection's reader and writer. The caller closes nc on error.
func newConn(ctx context.Context, nc net.Conn, opts DialOptions) (*Conn, error) {
	if opts.MaxFrame <= 0 {
		opts.MaxFrame = DefaultMaxFrame
	}
	c := &Conn{
		nc:         nc,
		maxFrame:   opts.MaxFrame,
		wq:         make(chan queued, 128),
		pending:    make(map[uint64]*call),
		broken:     make(chan struct{}),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	br := bufio.NewReaderSize(nc, connBufSize)
	bw := bufio.NewWriterSize(nc, connBufSize)
	if err := c.hello(ctx, br, bw, opts); err != nil {
		return nil, err
	}
	go c.readLoop(br)
	go c.writeLoop(bw)
	return c, nil
}

func (c *Conn) hello(ctx context.Context, br *bufio.Reader, bw *bufio.Writer, opts DialOptions) error {
	addr := c.nc.RemoteAddr()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	fail := func(err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("wire: hello to %s: %w", addr, ctx.Err())
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The socket deadline is ctx's; it may fire a hair before ctx.
			return fmt.Errorf("wire: hello to %s: %w", addr, context.DeadlineExceeded)
		}
		return fmt.Errorf("wire: hello to %s: %w", addr, err)
	}

	id := c.nextID.Add(1)
	e := getEncoder()
	err := e.frame(&Hello{Version: ProtocolVersion, Role: opts.Role, Name: opts.Name, ClusterID: opts.ClusterID, Lane: opts.Lane}, id, c.maxFrame)
	if err == nil {
		err = e.writeTo(bw)
	}
	putEncoder(e)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return fail(err)
	}
	f, err := ReadFrame(br, c.maxFrame)
	if err != nil {
		return fail(err)
	}
	switch {
	case f.Type == MsgError:
		we := &Error{}
		if err := Unmarshal(f.Body, we); err != nil {
			return fail(err)
		}
		return we
	case f.Type != MsgHelloReply || f.ID != id:
		return fail(Errorf(CodeBadRequest, "got %s frame with id %d in reply to hello %d", f.Type, f.ID, id))
	}
	if err := Unmarshal(f.Body, &c.remote); err != nil {
		return fail(err)
	}
	if c.remote.Version != ProtocolVersion {
		return Errorf(CodeVersionMismatch, "server %s speaks protocol version %d, want %d", addr, c.remote.Version, ProtocolVersion)
	}
	if opts.ClusterID != 0 && c.remote.ClusterID != 0 && opts.ClusterID != c.remote.ClusterID {
		return Errorf(CodeVersionMismatch, "server %s is in cluster %d, want %d", addr, c.remote.ClusterID, opts.ClusterID)
	}
	if !stop() {
		return fail(ctx.Err())
	}
	if err := c.nc.SetDeadline(time.Time{}); err != nil {
		return fail(err)
	}
	return nil
}

// Call sends req with a fresh request id and waits for its reply, decoding it
// into resp (zeroed first), which must be a pointer of the expected reply
// type; a nil resp accepts any non-error reply and discards it. A MsgError
// reply is returned as its *Error; a reply of another type is an *Error with
// CodeBadRequest. If ctx ends first, Call returns ctx.Err() wrapped: with
// ErrNotSent if the writer had not begun to write the request, and otherwise
// the server may still execute it. If the conn breaks before the writer began
// to write the request, the error wraps ErrNotSent; if it breaks while the
// request is in flight, it wraps ErrConnLost. A request body larger than
// DialOptions.MaxFrame is refused locally with CodeTooLarge.
func (c *Conn) Call(ctx context.Context, req Message, resp Message) error {
	t := msgTypeOf(req)
	if !t.Valid() {
		return Errorf(CodeInternal, "call with a nil or unknown request %T", req)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("wire: %s call not sent: %w", t, err)
	}
	id := c.nextID.Add(1)
	e := getEncoder()
	if err := e.frame(req, id, c.maxFrame); err != nil {
		putEncoder(e)
		return err
	}
	cl := &call{reqType: t, resp: resp, done: make(chan struct{})}
	c.mu.Lock()
	if c.err != nil {
		reason := c.err
		c.mu.Unlock()
		putEncoder(e)
		return notSent(reason)
	}
	c.pending[id] = cl
	c.mu.Unlock()

	select {
	case c.wq <- queued{e, cl}:
	case <-c.broken:
		putEncoder(e)
		c.forget(id, cl)
		return notSent(c.Err())
	case <-ctx.Done():
		putEncoder(e)
		c.forget(id, cl)
		return fmt.Errorf("wire: %s call: %w: %w", t, ErrNotSent, ctx.Err())
	}

	select {
	case <-cl.done:
		if errors.Is(cl.err, ErrConnLost) && cl.send.CompareAndSwap(sendQueued, sendWithdrawn) {
			return notSent(c.Err()) // the break came before the writer reached it
		}
		return cl.err
	case <-ctx.Done():
		if cl.send.CompareAndSwap(sendQueued, sendWithdrawn) {
			// The writer drops it unwritten (and recycles e). A break that claimed the call
			// first does not change that nothing was sent.
			c.forget(id, cl)
			return fmt.Errorf("wire: %s call: %w: %w", t, ErrNotSent, ctx.Err())
		}
		if c.forget(id, cl) {
			return fmt.Errorf("wire: %s call: %w", t, ctx.Err())
		}
		// The reply (or the break) won the race; it completes shortly.
		<-cl.done
		return cl.err
	}
}

func notSent(reason error) error { return fmt.Errorf("%w: %v", ErrNotSent, reason) }

// forget unregisters cl after its caller gave up. It returns true if the call
// is now abandoned; false if the reader or a break claimed it first, in which
// case cl.done is closed shortly and the caller must wait for it before
// touching resp again.
func (c *Conn) forget(id uint64, cl *call) bool {
	c.mu.Lock()
	if c.pending[id] == cl {
		delete(c.pending, id)
	}
	c.mu.Unlock()
	if cl.state.CompareAndSwap(callWaiting, callAbandoned) {
		return true
	}
	<-cl.done
	return false
}

// readLoop reads replies and hands each to its waiting caller until the
// connection breaks.
func (c *Conn) readLoop(br *bufio.Reader) {
	defer close(c.readerDone)
	d := new(decoder)
	var buf []byte // reused body buffer: decoding never aliases it
	var h header
	for {
		if _, err := io.ReadFull(br, h[:]); err != nil {
			if errors.Is(err, io.EOF) {
				c.fail(fmt.Errorf("wire: connection closed by %s: %w", c.nc.RemoteAddr(), err))
			} else {
				c.fail(fmt.Errorf("wire: read from %s: %w", c.nc.RemoteAddr(), err))
			}
			return
		}
		n, t, id := h.parse()
		if err := checkLen(n, t, c.maxFrame); err != nil {
			c.fail(err)
			return
		}
		body, err := readBody(br, int(n), buf)
		if err != nil {
			c.fail(fmt.Errorf("wire: read from %s: %w", c.nc.RemoteAddr(), err))
			return
		}
		if cap(body) <= maxPooledBuf {
			buf = body[:0]
		}
		if t == MsgError && id == 0 {
			we := &Error{}
			if err := decodeWith(d, body, we); err != nil {
				c.fail(err)
			} else {
				c.fail(we)
			}
			return
		}
		c.mu.Lock()
		cl := c.pending[id]
		if cl != nil {
			delete(c.pending, id)
		}
		c.mu.Unlock()
		if cl == nil || !cl.state.CompareAndSwap(callWaiting, callClaimed) {
			continue // unknown id, or its caller gave up: ignore
		}
		cl.err = deliver(d, t, body, cl)
		close(cl.done)
	}
}

func deliver(d *decoder, t MsgType, body []byte, cl *call) error {
	switch {
	case t == MsgError:
		we := &Error{}
		if err := decodeWith(d, body, we); err != nil {
			return err
		}
		return we
	case cl.resp == nil:
		return nil
	case t == cl.resp.MsgType():
		return decodeWith(d, body, cl.resp)
	}
	return Errorf(CodeBadRequest, "got %s reply to %s request", t, cl.reqType)
}

// writeLoop writes queued requests, flushing whenever the queue runs empty so
// that concurrent calls share syscalls.
func (c *Conn) writeLoop(bw *bufio.Writer) {
	defer close(c.writerDone)
	for {
		var q queued
		select {
		case q = <-c.wq:
		case <-c.broken:
			return
		}
		for q.e != nil {
			var err error
			if q.cl.send.CompareAndSwap(sendQueued, sendWriting) {
				err = q.e.writeTo(bw)
			}
			putEncoder(q.e)
			if err != nil {
				c.fail(fmt.Errorf("wire: write to %s: %w", c.nc.RemoteAddr(), err))
				return
			}
			select {
			case q = <-c.wq:
			default:
				// Let runnable callers enqueue before paying for a syscall.
				runtime.Gosched()
				select {
				case q = <-c.wq:
				default:
					q = queued{}
				}
			}
		}
		if err := bw.Flush(); err != nil {
			c.fail(fmt.Errorf("wire: write to %s: %w", c.nc.RemoteAddr(), err))
			return
		}
	}
}

// fail breaks the connection for reason (the first reason wins) and fails
// every in-flight call with ErrConnLost.
func (c *Conn) fail(reason error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = reason
	pending := c.pending
	c.pending = nil
	close(c.broken)
	c.mu.Unlock()
	_ = c.nc.Close()
	lost := fmt.Errorf("%w: %v", ErrConnLost, reason)
	for _, cl := range pending {
		if cl.state.CompareAndSwap(callWaiting, callClaimed) {
			cl.err = lost
			close(cl.done)
		}
	}
}

// Close breaks the connection, failing in-flight calls with ErrConnLost, and
// waits for its goroutines to exit. It is idempotent and always returns nil.
func (c *Conn) Close() error {
	c.fail(errConnClosed)
	<-c.readerDone
	<-c.writerDone
	return nil
}

// Err returns nil while the connection is usable and, once it is broken, the
// reason: the server's *Error if it sent one (e.g. CodeShuttingDown), a read
// or write error, or a "closed by client" error after Close.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Done returns a channel closed when the connection breaks.
func (c *Conn) Done() <-chan struct{} { return c.broken }

// RemoteName returns the server's name from its HelloReply.
func (c *Conn) RemoteName() string { return c.remote.Name }

// RemoteMaxBytesInFlight returns the server's budget of request bytes in flight, as its hello
// reply said (0 if it did not say).
func (c *Conn) RemoteMaxBytesInFlight() int64 { return c.remote.MaxBytesInFlight }

// RemoteAddr returns the server's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }
