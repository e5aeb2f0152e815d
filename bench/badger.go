package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"

	"github.com/kvtx/kvtx/kv"
	"github.com/kvtx/kvtx/txn"
)

// badgerTarget is one local kv.Store, the storage engine of a kvtx node, driven in process: no
// network, no master. Writes go through Store.Apply, which fsyncs through the store's group
// syncer exactly as a node's one-phase path does; reads through Store.Get (and range reads
// through Store.Scan) at a fresh timestamp.
// Timestamps come from a local counter that, like the master's oracle, observes every commit
// timestamp, so that a read sees every write acknowledged before it began.
type badgerTarget struct {
	store   *kv.Store
	dir     string
	removal string // the temporary directory to remove on Close, if any
	clock   atomic.Uint64
	ids     atomic.Uint64
}

func openBadger(tc TargetConfig) (*badgerTarget, error) {
	t := &badgerTarget{dir: tc.DataDir}
	if t.dir == "" {
		dir, err := os.MkdirTemp("", "kvtx-bench-badger-")
		if err != nil {
			return nil, fmt.Errorf("bench: badger data directory: %w", err)
		}
		t.dir, t.removal = dir, dir
	}
	store, err := kv.Open(kv.Options{Dir: t.dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		if t.removal != "" {
			os.RemoveAll(t.removal)
		}
		return nil, fmt.Errorf("bench: open badger in %s: %w", t.dir, err)
	}
	t.store = store
	t.clock.Store(store.Stats().MaxTS)
	return t, nil
}

func (t *badgerTarget) Name() string { return TargetBadger }

// Shards is nil: one store holds every key.
func (t *badgerTarget) Shards() *txn.ShardMap { return nil }

func (t *badgerTarget) NewSession(context.Context, int) (Session, error) {
	return &badgerSession{t: t}, nil
}

func (t *badgerTarget) Close() error {
	err := t.store.Close()
	if t.removal != "" {
		os.RemoveAll(t.removal)
	}
	return err
}

// next returns a fresh timestamp.
func (t *badgerTarget) next() uint64 { return t.clock.Add(1) }

// observe raises the clock to a commit timestamp.
func (t *badgerTarget) observe(ts uint64) {
	for {
		cur := t.clock.Load()
		if ts <= cur || t.clock.CompareAndSwap(cur, ts) {
			return
		}
	}
}

type badgerSession struct {
	t    *badgerTarget
	ops  []kv.Op
	cmps []kv.Compare
	keys [][]byte
}

func (s *badgerSession) apply(ctx context.Context) error {
	id := s.t.ids.Add(1)
	ts, err := s.t.store.Apply(ctx, id, s.t.next(), s.cmps, s.ops)
	if err != nil {
		return badgerError(err)
	}
	s.t.observe(ts)
	return nil
}

func (s *badgerSession) Put(ctx context.Context, key, value []byte) error {
	s.ops = append(s.ops[:0], kv.Op{Kind: kv.OpPut, Key: key, Value: value})
	s.cmps = s.cmps[:0]
	return s.apply(ctx)
}

func (s *badgerSession) Get(ctx context.Context, key []byte) (bool, error) {
	s.keys = append(s.keys[:0], key)
	vs, err := s.t.store.Get(ctx, s.keys, s.t.next())
	if err != nil {
		return false, badgerError(err)
	}
	return vs[0].Found, nil
}

// Scan reads the range with Store.Scan at a fresh timestamp: one Badger iterator in a read
// transaction, after the store's lock check, as a node serves its part of a scan.
func (s *badgerSession) Scan(ctx context.Context, start, end []byte, limit int) (int, error) {
	page, _, err := s.t.store.Scan(ctx, start, end, s.t.next(), kv.ScanOptions{Limit: limit})
	if err != nil {
		return 0, badgerError(err)
	}
	return len(page), nil
}

func (s *badgerSession) Txn(ctx context.Context, keys, values [][]byte) error {
	s.ops, s.cmps = s.ops[:0], s.cmps[:0]
	for i, k := range keys {
		s.ops = append(s.ops, kv.Op{Kind: kv.OpPut, Key: k, Value: values[i]})
	}
	return s.apply(ctx)
}

func (s *badgerSession) Snapshot(ctx context.Context, keys [][]byte) ([]Versioned, error) {
	vs, err := s.t.store.Get(ctx, keys, s.t.next())
	if err != nil {
		return nil, badgerError(err)
	}
	out := make([]Versioned, len(vs))
	for i, v := range vs {
		out[i] = Versioned{Value: v.Value, Version: v.Version, Found: v.Found}
	}
	return out, nil
}

func (s *badgerSession) CondTxn(ctx context.Context, keys [][]byte, versions []uint64, values [][]byte) error {
	s.ops, s.cmps = s.ops[:0], s.cmps[:0]
	for i, k := range keys {
		s.cmps = append(s.cmps, kv.Compare{Kind: kv.CmpVersionEqual, Key: k, Version: versions[i]})
		s.ops = append(s.ops, kv.Op{Kind: kv.OpPut, Key: k, Value: values[i]})
	}
	return s.apply(ctx)
}

func (s *badgerSession) Close() error { return nil }

// badgerError classifies a kv error as the node would report it: a failed compare, a lock
// conflict or a read that gave up on a lock are aborts; the rest are errors.
func badgerError(err error) error {
	switch {
	case errors.Is(err, kv.ErrCompareFailed):
		return &OpError{Outcome: Aborted, Reason: ReasonCompareFailed, Err: err}
	case errors.Is(err, kv.ErrConflict):
		return &OpError{Outcome: Aborted, Reason: "conflict", Err: err}
	case errors.Is(err, kv.ErrLocked):
		return &OpError{Outcome: Aborted, Reason: "locked", Err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &OpError{Outcome: Failed, Reason: "timeout", Err: err}
	}
	return &OpError{Outcome: Failed, Reason: "error", Err: err}
}
