package wire

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("wire: server closed")

// Request is one decoded request handed to a Handler.
type Request struct {
	Type MsgType // a request type (MsgType.IsRequest)
	ID   uint64  // the request id, echoed in the reply frame
	Peer Hello   // the hello this connection opened with; with ServerConfig.Identify, Name and Role are the certificate's

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
	HelloTimeout time.Duration // 0 means 5s: the TLS handshake and the hello must be done within this after accept
	MaxConns     int           // 0 means 1024 authenticated connections (past the handshake and hello); extra ones get an error frame CodeUnavailable and are closed
	MaxPending   int           // 0 means 1024 accepted connections not yet past the handshake and hello; extra ones are closed at once
	MaxInFlight  int           // 0 means 256 per connection, so per lane (Lane): the reader stops reading while this many handlers run
	// MaxConnsPerHost bounds the authenticated connections from one IP address, of peers
	// that are not Trusted; 0 means 256. Extra ones are refused like those past MaxConns.
	MaxConnsPerHost int
	Logger          *slog.Logger // nil means slog.Default()
	Observer        Observer     // optional

	// TLS, if set, makes every connection TLS: the handshake comes first, then the hello. It
	// should require and verify a client certificate (a certs.Loader's ServerConfig). A
	// connection whose handshake fails is closed after a short drain (so that the peer reads
	// the alert), and a peer that does not speak TLS gets a plaintext error frame saying so.
	TLS *tls.Config
	// Identify, with TLS, reads the peer's verified name and role from its completed
	// handshake. The hello's Role and Name, where not empty, must equal them, else the hello
	// is refused with CodePermissionDenied; Request.Peer then carries them. It is the only
	// source of a TLS peer's identity: nil leaves the hello's claims unchecked.
	Identify func(tls.ConnectionState) (name, role string, err error)

	// MaxBytesInFlight bounds, server-wide, the bytes of the request bodies read and not yet
	// answered (0 means 32 MiB), and MaxRequestsInFlight their number (0 means 4096). A
	// request that does not fit waits, its connection unread meanwhile, for BusyWait (0 means
	// 1s), and is then refused with CodeBusy, its body discarded without being kept. The
	// requests of a Trusted peer wait as long as it takes, and protocol-lane requests never
	// wait (admission).
	MaxBytesInFlight    int64
	MaxRequestsInFlight int
	BusyWait            time.Duration
	// Trusted, if set, says which authenticated peers are processes of the cluster: their
	// connections count toward neither MaxConns nor MaxConnsPerHost (they are few, and must
	// get in whatever clients hold), and their requests wait for room instead of being
	// refused as busy, since they come from work the cluster already admitted.
	Trusted func(peer Hello) bool
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
	conns     map[*serverConn]struct{} // every connection served, authenticated or not
	pending   int                      // connections of conns not yet past the handshake and hello
	authed    int                      // connections of conns past them, not Trusted: what MaxConns bounds
	hosts     map[string]int           // those per IP address, which MaxConnsPerHost bounds
	shutdown  bool
	wg        sync.WaitGroup // connection and refusal goroutines
	workers   *WorkerPool    // runs request handlers
	admission *admission     // MaxBytesInFlight and MaxRequestsInFlight
}

// DefaultMaxBytesInFlight is a server's ServerConfig.MaxBytesInFlight when the config leaves it
// zero: 32 MiB.
const DefaultMaxBytesInFlight = 32 << 20

// InFlight returns what the server's requests hold now, for metrics.
func (s *Server) InFlight() InFlight { return s.admission.snapshot() }

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
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 1024
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 256
	}
	if cfg.MaxConnsPerHost <= 0 {
		cfg.MaxConnsPerHost = 256
	}
	if cfg.MaxBytesInFlight <= 0 {
		cfg.MaxBytesInFlight = DefaultMaxBytesInFlight
	}
	if cfg.MaxRequestsInFlight <= 0 {
		cfg.MaxRequestsInFlight = 4096
	}
	if cfg.BusyWait <= 0 {
		cfg.BusyWait = time.Second
	}
	s := &Server{
		h:         h,
		workers:   NewWorkerPool(30 * time.Second),
		cfg:       cfg,
		log:       cfg.Logger,
		obs:       cfg.Observer,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*serverConn]struct{}),
		hosts:     make(map[string]int),
		admission: newAdmission(cfg.MaxBytesInFlight, cfg.MaxRequestsInFlight),
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

// admit starts serving nc, or refuses it if too many connections are still in their
// handshake and hello (MaxPending) or the server is closing. MaxConns is checked once the
// connection is authenticated (promote), so that connections that never get through their
// handshake cannot take the slots of those that do.
func (s *Server) admit(nc net.Conn) {
	s.mu.Lock()
	if s.shutdown {
		// Accepted just before the listener closed.
		s.mu.Unlock()
		_ = nc.Close()
		return
	}
	if s.pending >= s.cfg.MaxPending {
		s.wg.Add(1) // before Shutdown can Wait: shutdown is false under s.mu
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			reason := fmt.Sprintf("too many connections not yet authenticated (limit %d)", s.cfg.MaxPending)
			s.log.Warn("wire: refusing connection", "remote", nc.RemoteAddr().String(), "reason", reason)
			if s.cfg.TLS != nil {
				_ = nc.Close() // a TLS peer could not read a plaintext frame
				return
			}
			_ = nc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
			if body, err := Marshal(Errorf(CodeUnavailable, "%s", reason)); err == nil {
				_ = WriteFrame(nc, MsgError, 0, body)
			}
			lingerClose(nc)
		}()
		return
	}
	sc := newServerConn(s, nc)
	s.conns[sc] = struct{}{}
	s.pending++
	s.wg.Add(1)
	s.mu.Unlock()
	go sc.serve()
}

// promote counts sc, now authenticated, toward MaxConns and MaxConnsPerHost unless its peer
// is Trusted, or returns the error to refuse it with if the server or its host is full. A
// ServeConn connection is never refused.
func (s *Server) promote(sc *serverConn) *Error {
	trusted := s.cfg.Trusted != nil && s.cfg.Trusted(sc.peer)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case trusted:
		sc.trusted = true
	case sc.unlimited:
	case s.authed >= s.cfg.MaxConns:
		return Errorf(CodeUnavailable, "too many connections (limit %d)", s.cfg.MaxConns)
	case s.hosts[sc.host] >= s.cfg.MaxConnsPerHost:
		return Errorf(CodeUnavailable, "too many connections from %s (limit %d per host)", sc.host, s.cfg.MaxConnsPerHost)
	}
	s.pending--
	if !sc.trusted {
		s.authed++
		s.hosts[sc.host]++
	}
	sc.authed = true
	return nil
}

// ServeConn serves one already-accepted connection (e.g. one end of a
// net.Pipe) in the calling goroutine and returns once it is closed, with TLS
// if ServerConfig.TLS is set. Unlike accepted connections it is never refused
// for MaxPending or MaxConns, but it counts toward them and is drained by
// Shutdown like them.
func (s *Server) ServeConn(nc net.Conn) {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		_ = nc.Close()
		return
	}
	sc := newServerConn(s, nc)
	sc.unlimited = true
	s.conns[sc] = struct{}{}
	s.pending++
	s.wg.Add(1)
	s.mu.Unlock()
	sc.serve()
}

func (s *Server) removeConn(sc *serverConn) {
	s.mu.Lock()
	delete(s.conns, sc)
	switch {
	case sc.authed && !sc.trusted:
		s.authed--
		if s.hosts[sc.host]--; s.hosts[sc.host] <= 0 {
			delete(s.hosts, sc.host)
		}
	case sc.authed:
	default:
		s.pending--
	}
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

// hostOf returns the IP address of a connection's remote end, or the whole address if it has
// no port (a pipe).
func hostOf(a net.Addr) string {
	if a == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}
