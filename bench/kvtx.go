package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/certs"
	"github.com/kvtx/kvtx/txn/client"
	"github.com/kvtx/kvtx/wire"
)

// kvtxTarget is a running kvtx cluster, reached through txn/client. Its shard map comes from the
// master's status report, which lists the nodes in shard order.
type kvtxTarget struct {
	name   string // TargetKvtx or TargetKvtxPlain
	tc     TargetConfig
	shards *txn.ShardMap

	mu    sync.Mutex
	conns map[int]*client.Client // by connection slot
}

func openKvtx(ctx context.Context, tc TargetConfig) (*kvtxTarget, error) {
	if tc.Endpoint == "" {
		tc.Endpoint = txn.DefaultConfig().Master.DialAddr()
	}
	t := &kvtxTarget{name: TargetKvtx, tc: tc, conns: map[int]*client.Client{}}
	if tc.Kind == TargetKvtxPlain {
		t.name = TargetKvtxPlain
	}
	cl, err := t.conn(ctx, 0)
	if err != nil {
		return nil, err
	}
	procs, err := cl.Status(ctx)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("bench: kvtx status at %s: %w", tc.Endpoint, err)
	}
	var names []string
	for _, p := range procs {
		if p.Role != "node" {
			continue
		}
		if !p.Up {
			t.Close()
			return nil, fmt.Errorf("bench: kvtx node %s is down: %s", p.Name, p.Error)
		}
		names = append(names, p.Name)
	}
	if len(names) == 0 {
		t.Close()
		return nil, fmt.Errorf("bench: kvtx master at %s reports no nodes", tc.Endpoint)
	}
	t.shards = txn.NewShardMap(names)
	return t, nil
}

// conn returns the client of connection slot i, dialling it the first time.
func (t *kvtxTarget) conn(ctx context.Context, i int) (*client.Client, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cl, ok := t.conns[i]; ok {
		return cl, nil
	}
	cl, err := client.Dial(ctx, t.tc.Endpoint, t.clientOptions())
	if err != nil {
		return nil, fmt.Errorf("bench: dial kvtx at %s: %w", t.tc.Endpoint, err)
	}
	t.conns[i] = cl
	return cl, nil
}

// clientOptions are the options of every client of the target: over TLS the certificate
// names the client, without it "kvctl-bench".
func (t *kvtxTarget) clientOptions() client.Options {
	o := client.Options{DialTimeout: t.tc.DialTimeout, TLS: t.tc.TLS, ExplainTLS: certs.Refusal}
	if t.tc.TLS == nil {
		o.Name = "kvctl-bench"
	}
	return o
}

func (t *kvtxTarget) Name() string          { return t.name }
func (t *kvtxTarget) Shards() *txn.ShardMap { return t.shards }

// NewSession gives client i connection i mod tc.Conns.
func (t *kvtxTarget) NewSession(ctx context.Context, i int) (Session, error) {
	cl, err := t.conn(ctx, i%max(1, t.tc.Conns))
	if err != nil {
		return nil, err
	}
	return &kvtxSession{cl: cl}, nil
}

func (t *kvtxTarget) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, cl := range t.conns {
		cl.Close()
		delete(t.conns, i)
	}
	return nil
}

type kvtxSession struct {
	cl  *client.Client
	ops []client.Op
	cmp []client.Compare
}

func (s *kvtxSession) Put(ctx context.Context, key, value []byte) error {
	_, err := s.cl.Put(ctx, key, value)
	return kvtxError(err)
}

func (s *kvtxSession) Get(ctx context.Context, key []byte) (bool, error) {
	kvs, _, err := s.cl.Snapshot(ctx, key)
	if err != nil {
		return false, kvtxError(err)
	}
	return len(kvs) == 1 && kvs[0].Found, nil
}

// Scan reads the range through the client's Scan iterator with pages of limit keys: one
// request when the range holds at most limit keys.
func (s *kvtxSession) Scan(ctx context.Context, start, end []byte, limit int) (int, error) {
	n := 0
	for _, err := range s.cl.Scan(ctx, start, end, client.ScanPageSize(limit)) {
		if err != nil {
			return n, kvtxError(err)
		}
		if n++; n == limit {
			break
		}
	}
	return n, nil
}

func (s *kvtxSession) Txn(ctx context.Context, keys, values [][]byte) error {
	s.ops = s.ops[:0]
	for i, k := range keys {
		s.ops = append(s.ops, client.Put(k, values[i]))
	}
	_, err := s.cl.Txn(ctx, nil, s.ops...)
	return kvtxError(err)
}

func (s *kvtxSession) Snapshot(ctx context.Context, keys [][]byte) ([]Versioned, error) {
	kvs, _, err := s.cl.Snapshot(ctx, keys...)
	if err != nil {
		return nil, kvtxError(err)
	}
	out := make([]Versioned, len(kvs))
	for i, kv := range kvs {
		out[i] = Versioned{Value: kv.Value, Version: kv.Version, Found: kv.Found}
	}
	return out, nil
}

func (s *kvtxSession) CondTxn(ctx context.Context, keys [][]byte, versions []uint64, values [][]byte) error {
	s.ops, s.cmp = s.ops[:0], s.cmp[:0]
	for i, k := range keys {
		s.cmp = append(s.cmp, client.IfVersion(k, versions[i]))
		s.ops = append(s.ops, client.Put(k, values[i]))
	}
	_, err := s.cl.Txn(ctx, s.cmp, s.ops...)
	return kvtxError(err)
}

// Close does nothing: the target owns the connections.
func (s *kvtxSession) Close() error { return nil }

// kvtxError classifies a client error: failed compares and aborts (conflict, locked,
// unavailable, ...) are aborts under the error code's name, an unknown outcome is unknown, and
// the rest are errors under the code's name.
func kvtxError(err error) error {
	if err == nil {
		return nil
	}
	var ce *client.Error
	if !errors.As(err, &ce) {
		return &OpError{Outcome: Failed, Reason: "error", Err: err}
	}
	switch {
	case errors.Is(err, client.ErrUnknownOutcome):
		return &OpError{Outcome: Unknown, Reason: ce.Reason(), Err: err}
	case errors.Is(err, client.ErrCompareFailed):
		return &OpError{Outcome: Aborted, Reason: ReasonCompareFailed, Err: err}
	case errors.Is(err, client.ErrAborted), ce.Code == wire.CodeTimeout:
		return &OpError{Outcome: Aborted, Reason: ce.Reason(), Err: err}
	}
	return &OpError{Outcome: Failed, Reason: ce.Reason(), Err: err}
}
