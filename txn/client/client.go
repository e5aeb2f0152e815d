// Package client is kvtx's Go API: Dial a master, then Get, Snapshot, ReadAt, Scan, Put, Delete and
// conditional transactions (Txn), each with a context. Every write ends in exactly one of three
// ways, which the error tells apart:
//
//   - nil: committed, durable on every shard it touched;
//   - an error matching ErrAborted or ErrCompareFailed: nothing was written anywhere, and it is
//     safe to retry (Error.Reason says why: conflict, unavailable, compare_failed, ...);
//   - an error matching ErrUnknownOutcome: it may have committed. Read before retrying;
//   - an error matching ErrSpaceExceeded: a node it writes to is over its disk quota; nothing
//     was written, and the same write fails again until the GC frees space there.
//
// A request the master refuses as busy (too much in flight) was not read: the client sends it
// again, backing off, until its deadline, and only then returns an error matching ErrBusy.
//
// A Client is safe for concurrent use; its requests share one pipelined connection.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"iter"
	"strings"
	"sync"
	"time"

	"github.com/kvtx/kvtx/wire"
)

// Errors a call can match with errors.Is. Every error a call returns is an *Error.
var (
	// ErrNotFound: Get found no value for the key.
	ErrNotFound = errors.New("client: key not found")
	// ErrCompareFailed: a compare of a transaction did not hold; nothing was written.
	ErrCompareFailed = errors.New("client: compare failed")
	// ErrAborted: the transaction was aborted and nothing was written; safe to retry.
	ErrAborted = errors.New("client: transaction aborted")
	// ErrUnknownOutcome: the transaction may or may not have committed.
	ErrUnknownOutcome = errors.New("client: transaction outcome unknown")
	// ErrUnavailable: the master or a node could not be reached; nothing was written.
	ErrUnavailable = errors.New("client: unavailable")
	// ErrInvalid: the request was refused as malformed or over a limit; nothing was written.
	ErrInvalid = errors.New("client: invalid request")
	// ErrNotEmpty: a restore found data, or running transactions, in the cluster it was to
	// fill; nothing was written.
	ErrNotEmpty = errors.New("client: cluster not empty")
	// ErrCompacted: a read at a version below the GC safe point (older than gc.retention).
	ErrCompacted = errors.New("client: version compacted")
	// ErrSpaceExceeded: a node the write touches is over its disk quota (storage.quota_bytes);
	// nothing was written. Not retryable until the GC has freed space on that node.
	ErrSpaceExceeded = errors.New("client: space exceeded")
	// ErrPermissionDenied: this client's role may not send the request; nothing was done.
	ErrPermissionDenied = errors.New("client: permission denied")
	// ErrBusy: the master stayed too busy to read the request until its deadline; nothing was
	// done, and it also matches ErrAborted.
	ErrBusy = errors.New("client: busy")
)

// Error is the error of every failed call: the server's code and message, and the
// transaction concerned.
type Error struct {
	// Code is the protocol's error code.
	Code wire.Code
	// Message explains the error in one line.
	Message string
	// TxnID is the transaction concerned, if any.
	TxnID uint64
	// Index is the failed compare's position in the request, with ErrCompareFailed.
	Index int

	cause error // a certificate problem (Options.ExplainTLS), for errors.As
}

// Error implements error.
func (e *Error) Error() string { return "client: " + e.Message }

// Unwrap returns the certificate problem that refused the connection, if that was the error.
func (e *Error) Unwrap() error { return e.cause }

// Reason is the error code's name: conflict, unavailable, compare_failed, unknown_outcome, ...
func (e *Error) Reason() string { return e.Code.String() }

// Retryable reports whether nothing was written, so that the same request may be sent again.
func (e *Error) Retryable() bool {
	switch e.Code {
	case wire.CodeConflict, wire.CodeLocked, wire.CodeUnavailable, wire.CodeAborted, wire.CodeCompareFailed, wire.CodeTimeout, wire.CodeShuttingDown, wire.CodeBusy:
		return true
	}
	return false
}

// Is matches the package's sentinel errors.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Code == wire.CodeNotFound
	case ErrCompareFailed:
		return e.Code == wire.CodeCompareFailed
	case ErrAborted:
		switch e.Code {
		case wire.CodeConflict, wire.CodeLocked, wire.CodeUnavailable, wire.CodeAborted, wire.CodeShuttingDown, wire.CodeBusy:
			return true
		}
	case ErrBusy:
		return e.Code == wire.CodeBusy
	case ErrUnavailable:
		return e.Code == wire.CodeUnavailable || e.Code == wire.CodeShuttingDown
	case ErrUnknownOutcome:
		return e.Code == wire.CodeUnknownOutcome
	case ErrNotEmpty:
		return e.Code == wire.CodeNotEmpty
	case ErrCompacted:
		return e.Code == wire.CodeCompacted
	case ErrSpaceExceeded:
		return e.Code == wire.CodeSpaceExceeded
	case ErrPermissionDenied:
		return e.Code == wire.CodePermissionDenied
	case ErrInvalid:
		switch e.Code {
		case wire.CodeBadRequest, wire.CodeTooLarge, wire.CodeWrongShard, wire.CodeUnknownMessage, wire.CodeVersionMismatch:
			return true
		}
	}
	return false
}

// KeyValue is one key as read: its value and version (the commit timestamp of the write that
// produced it), or Found=false.
type KeyValue = wire.KeyValue

// Op is one write of a transaction; build it with Put or Del.
type Op = wire.Op

// Compare is one condition of a transaction; build it with the If... functions.
type Compare = wire.Compare

// Put is the operation that sets key to value.
func Put(key, value []byte) Op { return Op{Kind: wire.OpPut, Key: key, Value: value} }

// Del is the operation that deletes key.
func Del(key []byte) Op { return Op{Kind: wire.OpDelete, Key: key} }

// IfValue holds when key exists with exactly value.
func IfValue(key, value []byte) Compare {
	return Compare{Kind: wire.CmpValueEqual, Key: key, Value: value}
}

// IfVersion holds when key's version is exactly version (0: the key does not exist).
func IfVersion(key []byte, version uint64) Compare {
	return Compare{Kind: wire.CmpVersionEqual, Key: key, Version: version}
}

// IfVersionLess holds when key's version is below version.
func IfVersionLess(key []byte, version uint64) Compare {
	return Compare{Kind: wire.CmpVersionLess, Key: key, Version: version}
}

// IfVersionGreater holds when key's version is above version.
func IfVersionGreater(key []byte, version uint64) Compare {
	return Compare{Kind: wire.CmpVersionGreater, Key: key, Version: version}
}

// IfExists holds when key has a value.
func IfExists(key []byte) Compare { return Compare{Kind: wire.CmpExists, Key: key} }

// IfMissing holds when key has no value.
func IfMissing(key []byte) Compare { return Compare{Kind: wire.CmpMissing, Key: key} }

// Result describes a committed write.
type Result struct {
	// TxnID identifies the transaction in every process's transaction log.
	TxnID uint64
	// CommitTS is the version every written key now carries.
	CommitTS uint64
	// Path is "1pc" (one shard) or "2pc" (two-phase commit across shards).
	Path string
}

// Options tune a Client. A zero field takes the default in its comment.
type Options struct {
	// DialTimeout bounds connecting (default 5s).
	DialTimeout time.Duration
	// Timeout bounds each call whose context has no deadline (default 30s).
	Timeout time.Duration
	// Name introduces the client in the hello (default "kvctl"; with TLS, the certificate's
	// name, which the master requires: leave it empty).
	Name string
	// TLS, if set, makes the connection mutual TLS: it must present a client certificate of
	// the cluster's CA and accept only the master's. A certs.Loader of the client's files
	// makes one: certs.NewLoader(certs.FilesFor(dir, "client"), ...).ClientConfig("master").
	// Nil is plaintext, which a master started without --insecure refuses.
	TLS *tls.Config
	// ExplainTLS, if set, returns the certificate problem a failed connection's error is, in
	// one readable line, or nil if it is none (certs.Refusal, or a certs.Loader's Refusal).
	// A connection refused for a certificate problem fails with CodePermissionDenied and that
	// line, and errors.As finds the problem in the client's error.
	ExplainTLS func(error) error
}

// Client talks to one master.
type Client struct {
	addr string
	opts Options
	mu   sync.Mutex
	conn *wire.Conn
}

// Dial connects to the master at addr.
func Dial(ctx context.Context, addr string, opts Options) (*Client, error) {
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.Timeout == 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Name == "" && opts.TLS == nil {
		opts.Name = "kvctl"
	}
	c := &Client{addr: addr, opts: opts}
	if _, err := c.connect(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Close closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		err := c.conn.Close()
		c.conn = nil
		return err
	}
	return nil
}

func (c *Client) connect(ctx context.Context) (*wire.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil && c.conn.Err() == nil {
		return c.conn, nil
	}
	conn, err := wire.Dial(ctx, c.addr, wire.DialOptions{Role: "client", Name: c.opts.Name, DialTimeout: c.opts.DialTimeout, TLS: c.opts.TLS})
	if err != nil {
		var werr *wire.Error
		if errors.As(err, &werr) {
			return nil, &Error{Code: werr.Code, Message: fmt.Sprintf("master at %s refused the connection: %s", c.addr, werr.Message)}
		}
		if c.opts.ExplainTLS != nil {
			if e := c.opts.ExplainTLS(err); e != nil {
				return nil, &Error{Code: wire.CodePermissionDenied, Message: fmt.Sprintf("master at %s: %s", c.addr, e), cause: e}
			}
		}
		return nil, &Error{Code: wire.CodeUnavailable, Message: fmt.Sprintf("cannot reach the master at %s: %v", c.addr, err)}
	}
	c.conn = conn
	return conn, nil
}

// A request refused as busy is sent again after busyBackoff, doubling up to maxBusyBackoff.
const (
	busyBackoff    = 5 * time.Millisecond
	maxBusyBackoff = 200 * time.Millisecond
)

// call sends one request. write says whether it may change data: then a reply lost after the
// request went out leaves the outcome unknown.
func (c *Client) call(ctx context.Context, req, resp wire.Message, write bool) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.Timeout)
		defer cancel()
	}
	conn, err := c.connect(ctx)
	if err != nil {
		return err
	}
	err = conn.Call(ctx, req, resp)
	for backoff := busyBackoff; wire.CodeOf(err) == wire.CodeBusy; backoff = min(2*backoff, maxBusyBackoff) {
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return &Error{Code: wire.CodeBusy, Message: fmt.Sprintf("%v (until the deadline)", strings.TrimPrefix(err.Error(), "wire: busy: "))}
		}
		if conn, err = c.connect(ctx); err != nil {
			return err
		}
		err = conn.Call(ctx, req, resp)
	}
	if err == nil {
		return nil
	}
	var werr *wire.Error
	if errors.As(err, &werr) {
		return &Error{Code: werr.Code, Message: werr.Message, TxnID: werr.TxnID, Index: werr.Index}
	}
	if errors.Is(err, wire.ErrNotSent) {
		if ctx.Err() != nil {
			// It waited behind other requests on a connection the master was too busy to read.
			return &Error{Code: wire.CodeBusy, Message: fmt.Sprintf("the master at %s did not take the request before the deadline: %v", c.addr, err)}
		}
		return &Error{Code: wire.CodeUnavailable, Message: fmt.Sprintf("lost the connection to the master at %s before sending: %v", c.addr, err)}
	}
	if write {
		return &Error{Code: wire.CodeUnknownOutcome, Message: fmt.Sprintf("no answer from the master at %s, the transaction may have committed: %v", c.addr, err)}
	}
	return &Error{Code: wire.CodeUnavailable, Message: fmt.Sprintf("no answer from the master at %s: %v", c.addr, err)}
}

// Get reads the latest committed value of key; ErrNotFound if it has none.
func (c *Client) Get(ctx context.Context, key []byte) (KeyValue, error) {
	kvs, _, err := c.Snapshot(ctx, key)
	if err != nil {
		return KeyValue{}, err
	}
	if !kvs[0].Found {
		return kvs[0], &Error{Code: wire.CodeNotFound, Message: fmt.Sprintf("key %q not found", key)}
	}
	return kvs[0], nil
}

// Snapshot reads keys as one atomic snapshot (never half of a transaction) and returns them
// in order with the snapshot's timestamp. A missing key comes back with Found=false.
func (c *Client) Snapshot(ctx context.Context, keys ...[]byte) ([]KeyValue, uint64, error) {
	var rep wire.GetReply
	if err := c.call(ctx, &wire.GetRequest{Keys: keys}, &rep, false); err != nil {
		return nil, 0, err
	}
	return rep.Values, rep.ReadTS, nil
}

// Put sets key to value.
func (c *Client) Put(ctx context.Context, key, value []byte) (Result, error) {
	return c.Txn(ctx, nil, Put(key, value))
}

// Delete deletes keys in one transaction. Deleting a missing key is not an error.
func (c *Client) Delete(ctx context.Context, keys ...[]byte) (Result, error) {
	ops := make([]Op, len(keys))
	for i, k := range keys {
		ops[i] = Del(k)
	}
	return c.Txn(ctx, nil, ops...)
}

// Txn applies ops atomically across shards if every compare holds; otherwise it writes nothing
// and returns an error matching ErrCompareFailed whose Index names the failed compare.
func (c *Client) Txn(ctx context.Context, compares []Compare, ops ...Op) (Result, error) {
	var rep wire.TxnReply
	if err := c.call(ctx, &wire.TxnRequest{Compares: compares, Ops: ops}, &rep, true); err != nil {
		return Result{}, err
	}
	return Result{TxnID: rep.TxnID, CommitTS: rep.CommitTS, Path: rep.Path}, nil
}

// Status reports the master and every node, with their prepared and in-doubt transactions.
func (c *Client) Status(ctx context.Context) ([]wire.ProcessStatus, error) {
	var rep wire.StatusReply
	if err := c.call(ctx, &wire.StatusRequest{}, &rep, false); err != nil {
		return nil, err
	}
	return rep.Processes, nil
}

// ReadAt reads keys as one atomic snapshot at version ts (a read timestamp or commit timestamp
// the cluster has handed out), as Snapshot does at a fresh one: the state every later read at
// ts sees too.
func (c *Client) ReadAt(ctx context.Context, ts uint64, keys ...[]byte) ([]KeyValue, error) {
	if ts == 0 {
		return nil, &Error{Code: wire.CodeBadRequest, Message: "read at version 0: want a version the cluster has handed out"}
	}
	var rep wire.GetReply
	if err := c.call(ctx, &wire.GetRequest{Keys: keys, ReadTS: ts}, &rep, false); err != nil {
		return nil, err
	}
	return rep.Values, nil
}

// ScanOption tunes a Scan.
type ScanOption func(*wire.ScanRequest)

// ScanAt reads at version ts instead of a fresh read timestamp.
func ScanAt(ts uint64) ScanOption { return func(r *wire.ScanRequest) { r.ReadTS = ts } }

// ScanKeysOnly leaves the values out.
func ScanKeysOnly() ScanOption { return func(r *wire.ScanRequest) { r.KeysOnly = true } }

// ScanPageSize sets how many keys one request fetches (default 1,000, at most 10,000).
func ScanPageSize(n int) ScanOption { return func(r *wire.ScanRequest) { r.Limit = n } }

// ScanPageBytes bounds the keys and values one request fetches (default and most 4 MiB;
// every shard gets at least 64 KiB of it): a page stops growing once it reaches n.
func ScanPageBytes(n int) ScanOption { return func(r *wire.ScanRequest) { r.MaxBytes = n } }

// Scan returns the keys of [start, end) in key order (an empty end: to the last key), every
// one at the same version, which is the read timestamp of the first page: the iterator pages
// under the hood, each page starting just after the last key of the one before, and sees one
// snapshot however long it takes (never half of a transaction). An error ends the sequence.
// ScanPage gives the version and paging to a caller that wants them.
func (c *Client) Scan(ctx context.Context, start, end []byte, opts ...ScanOption) iter.Seq2[KeyValue, error] {
	return func(yield func(KeyValue, error) bool) {
		req := wire.ScanRequest{Start: start, End: end}
		for _, o := range opts {
			o(&req)
		}
		for {
			var rep wire.ScanReply
			if err := c.call(ctx, &req, &rep, false); err != nil {
				yield(KeyValue{}, err)
				return
			}
			for _, v := range rep.Values {
				if !yield(v, nil) {
					return
				}
			}
			if !rep.More || len(rep.Values) == 0 {
				return
			}
			req.ReadTS = rep.ReadTS
			req.Start = append(bytes.Clone(rep.Values[len(rep.Values)-1].Key), 0)
		}
	}
}

// ScanPage reads one page of [start, end) (at most limit keys; 0: the server's default) and
// returns it with the version it was read at and whether keys remain: the next page is
// ScanPage from just after the last key, at that version.
func (c *Client) ScanPage(ctx context.Context, start, end []byte, limit int, opts ...ScanOption) (page []KeyValue, version uint64, more bool, err error) {
	req := wire.ScanRequest{Start: start, End: end, Limit: limit}
	for _, o := range opts {
		o(&req)
	}
	var rep wire.ScanReply
	if err := c.call(ctx, &req, &rep, false); err != nil {
		return nil, 0, false, err
	}
	return rep.Values, rep.ReadTS, rep.More, nil
}
