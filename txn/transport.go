package txn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/kvtx/kvtx/wire"
)

// Transport carries one request to a named process (a node name, or MasterName) and its reply
// back. Implementations must be safe for concurrent use.
//
// An error that wraps ErrNotDelivered means the receiver certainly never saw the request; any
// other error (a lost connection, a timeout) means it may have executed it. A *wire.Error is
// the receiver's own answer.
type Transport interface {
	Call(ctx context.Context, to string, req, resp wire.Message) error
}

// ErrNotDelivered marks a transport error after which the request certainly did not reach
// the receiver.
var ErrNotDelivered = errors.New("txn: request not delivered")

// Handler is what a Transport delivers to: the coordinator and the participant implement it.
type Handler interface {
	Handle(ctx context.Context, req wire.Message) (wire.Message, error)
}

// WireTransport is the real Transport: one multiplexed wire.Conn per destination and lane
// (wire.Lane), dialled on first use and re-dialled after it breaks. Each request travels on
// its type's lane, so the commits, aborts and syncs that free a node's locks never queue behind
// the reads and writes waiting for those locks on the client lane.
type WireTransport struct {
	addrs map[string]string
	opts  wire.DialOptions
	tls   TransportTLS
	mu    sync.Mutex
	conns map[connKey]*wireConn

	sends  int64        // WarnIfAdmitsLess's budget; 0: no check
	log    *slog.Logger // where the check warns
	warned sync.Map     // process name → struct{}: warned once
}

// connKey names one of a WireTransport's connections.
type connKey struct {
	to   string
	lane wire.Lane
}

type wireConn struct {
	mu   sync.Mutex // serialises dialling
	conn *wire.Conn
}

var _ Transport = (*WireTransport)(nil)

// TransportTLS gives a WireTransport's connections their TLS (a certs.Loader is one).
type TransportTLS interface {
	// ClientConfig is the TLS of a connection to the process named to: it presents this
	// process's certificate and accepts only to's.
	ClientConfig(to string) *tls.Config
	// Explain turns a failed handshake's error into one that says which certificate problem
	// it is; other errors come back as they are.
	Explain(err error) error
}

// NewWireTransport returns a transport to the processes named in addrs (name → host:port),
// introducing itself with opts on every connection, over mutual TLS with tls (nil:
// plaintext).
func NewWireTransport(addrs map[string]string, opts wire.DialOptions, tls TransportTLS) *WireTransport {
	return &WireTransport{addrs: addrs, opts: opts, tls: tls, conns: map[connKey]*wireConn{}}
}

// WarnIfAdmitsLess makes the transport log a warning, once per process, when a process it
// connects to says it admits fewer request bytes in flight than sends, the sender's own
// budget: what the sender admitted then waits at the receiver, and may time out there into an
// unknown outcome. It must be called before the first Call.
func (t *WireTransport) WarnIfAdmitsLess(sends int64, log *slog.Logger) {
	t.sends, t.log = sends, log
}

// checkBudget is WarnIfAdmitsLess's check of a new connection to the process named to.
func (t *WireTransport) checkBudget(to string, conn *wire.Conn) {
	admits := conn.RemoteMaxBytesInFlight()
	if t.sends == 0 || admits == 0 || admits >= t.sends {
		return
	}
	if _, done := t.warned.LoadOrStore(to, struct{}{}); done {
		return
	}
	t.log.Warn("a process admits fewer request bytes in flight than this one sends it; give both the same limits.max_inflight_bytes",
		"process", to, "its_max_inflight_bytes", admits, "ours", t.sends)
}

// Call implements Transport.
func (t *WireTransport) Call(ctx context.Context, to string, req, resp wire.Message) error {
	key := connKey{to, req.MsgType().Lane()}
	conn, err := t.conn(ctx, key)
	if err != nil {
		return err
	}
	err = conn.Call(ctx, req, resp)
	if err == nil {
		return nil
	}
	if errors.Is(err, wire.ErrNotSent) {
		if conn.Err() != nil { // not a call that gave up waiting for the writer
			t.drop(key, conn)
		}
		return fmt.Errorf("%w: %s: %w", ErrNotDelivered, to, err)
	}
	if errors.Is(err, wire.ErrConnLost) || conn.Err() != nil {
		t.drop(key, conn)
	}
	return err
}

func (t *WireTransport) conn(ctx context.Context, key connKey) (*wire.Conn, error) {
	to := key.to
	addr, ok := t.addrs[to]
	if !ok {
		return nil, fmt.Errorf("%w: unknown process %q", ErrNotDelivered, to)
	}
	t.mu.Lock()
	wc := t.conns[key]
	if wc == nil {
		wc = &wireConn{}
		t.conns[key] = wc
	}
	t.mu.Unlock()
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if wc.conn != nil && wc.conn.Err() == nil {
		return wc.conn, nil
	}
	opts := t.opts
	opts.Lane = key.lane
	if t.tls != nil {
		opts.TLS = t.tls.ClientConfig(to)
	}
	conn, err := wire.Dial(ctx, addr, opts)
	if err != nil {
		if t.tls != nil {
			err = t.tls.Explain(err)
		}
		var werr *wire.Error
		if errors.As(err, &werr) && werr.Code == wire.CodeVersionMismatch {
			return nil, fmt.Errorf("%w: %s at %s refused us: %w", ErrNotDelivered, to, addr, err)
		}
		return nil, fmt.Errorf("%w: dial %s at %s: %w", ErrNotDelivered, to, addr, err)
	}
	t.checkBudget(to, conn)
	wc.conn = conn
	return conn, nil
}

func (t *WireTransport) drop(key connKey, conn *wire.Conn) {
	t.mu.Lock()
	wc := t.conns[key]
	t.mu.Unlock()
	if wc == nil {
		return
	}
	wc.mu.Lock()
	if wc.conn == conn {
		wc.conn = nil
	}
	wc.mu.Unlock()
	conn.Close()
}

// Close closes every connection.
func (t *WireTransport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, wc := range t.conns {
		wc.mu.Lock()
		if wc.conn != nil {
			wc.conn.Close()
			wc.conn = nil
		}
		wc.mu.Unlock()
	}
	return nil
}

// Fault is what an InmemTransport does with one request.
type Fault int

const (
	// Deliver delivers the request and its reply.
	Deliver Fault = iota
	// DropRequest loses the request: the receiver never sees it (ErrNotDelivered).
	DropRequest
	// DropReply delivers the request but loses the reply: the sender sees a lost connection.
	DropReply
	// Duplicate delivers the request twice (the second copy after the first is handled).
	Duplicate
)

// ErrReplyLost is what an InmemTransport returns when it dropped a reply.
var ErrReplyLost = errors.New("txn: reply lost")

// InmemTransport delivers requests to in-process Handlers, copying every message through the
// wire codec so that no memory is shared. A fault hook decides, per request, whether to deliver,
// drop or duplicate it; it may also block to delay it. Handlers can be swapped or removed at any
// time to simulate a restart or a crash.
type InmemTransport struct {
	mu       sync.RWMutex
	handlers map[string]Handler
	fault    func(from, to string, req wire.Message) Fault
}

var _ Transport = (*InmemTransport)(nil)

// NewInmemTransport returns a transport with no handlers and no faults.
func NewInmemTransport() *InmemTransport {
	return &InmemTransport{handlers: map[string]Handler{}}
}

// Register makes h receive requests sent to name; a nil h makes name unreachable (crashed).
func (t *InmemTransport) Register(name string, h Handler) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if h == nil {
		delete(t.handlers, name)
		return
	}
	t.handlers[name] = h
}

// SetFault installs the fault hook (nil: deliver everything). from is "" for calls made
// through the transport itself; use From for a per-sender view.
func (t *InmemTransport) SetFault(f func(from, to string, req wire.Message) Fault) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.fault = f
}

// From returns a Transport that reports from as the sender to the fault hook.
func (t *InmemTransport) From(from string) Transport { return inmemFrom{t, from} }

type inmemFrom struct {
	t    *InmemTransport
	from string
}

func (f inmemFrom) Call(ctx context.Context, to string, req, resp wire.Message) error {
	return f.t.call(ctx, f.from, to, req, resp)
}

// Call implements Transport.
func (t *InmemTransport) Call(ctx context.Context, to string, req, resp wire.Message) error {
	return t.call(ctx, "", to, req, resp)
}

func (t *InmemTransport) call(ctx context.Context, from, to string, req, resp wire.Message) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrNotDelivered, err)
	}
	// Deliver in the background, as a network would: a caller that gives up does not stop a
	// request already on its way, and the receiver's context is not the caller's.
	type result struct {
		out wire.Message
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := t.deliver(context.WithoutCancel(ctx), from, to, req)
		done <- result{out, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if r.err != nil {
		return r.err
	}
	if r.out.MsgType() != resp.MsgType() {
		return wire.Errorf(wire.CodeBadRequest, "reply %s to %s, want %s", r.out.MsgType(), req.MsgType(), resp.MsgType())
	}
	body, err := wire.Marshal(r.out)
	if err != nil {
		return err
	}
	return wire.Unmarshal(body, resp)
}

// deliver applies the fault hook and runs the receiver's handler.
func (t *InmemTransport) deliver(ctx context.Context, from, to string, req wire.Message) (wire.Message, error) {
	t.mu.RLock()
	fault := t.fault
	t.mu.RUnlock()
	f := Deliver
	if fault != nil {
		f = fault(from, to, req) // may block: a delay
	}
	t.mu.RLock()
	h := t.handlers[to]
	t.mu.RUnlock()
	if h == nil || f == DropRequest {
		return nil, fmt.Errorf("%w: %s unreachable", ErrNotDelivered, to)
	}
	in, err := roundTrip(req)
	if err != nil {
		return nil, err
	}
	out, herr := h.Handle(ctx, in)
	if f == Duplicate {
		in2, err := roundTrip(req)
		if err != nil {
			return nil, err
		}
		out, herr = h.Handle(ctx, in2)
	}
	if f == DropReply {
		return nil, ErrReplyLost
	}
	if herr != nil {
		var werr *wire.Error
		if errors.As(herr, &werr) {
			cp := *werr
			return nil, &cp
		}
		return nil, &wire.Error{Code: wire.CodeOf(herr), Message: herr.Error()}
	}
	return out, nil
}

func roundTrip(m wire.Message) (wire.Message, error) {
	body, err := wire.Marshal(m)
	if err != nil {
		return nil, err
	}
	cp := wire.NewMessage(m.MsgType())
	if cp == nil {
		return nil, wire.Errorf(wire.CodeUnknownMessage, "unknown message %s", m.MsgType())
	}
	if err := wire.Unmarshal(body, cp); err != nil {
		return nil, err
	}
	return cp, nil
}
