package bench

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvtx/kvtx/txn"
)

// fakeTarget is an in-memory target: a map of versioned values behind one mutex, so that its
// transactions are trivially atomic. inject, if set, decides the fate of operation n (counted
// from 1 over all sessions) before it runs: a non-nil error fails it without effect.
type fakeTarget struct {
	shards *txn.ShardMap
	inject func(n int64) error
	delay  time.Duration

	calls atomic.Int64
	mu    sync.Mutex
	data  map[string]Versioned
	clock uint64
	txns  [][]string // keys of every Txn, for inspection
	scans [][]string // keys every Scan read, for inspection
}

func newFakeTarget() *fakeTarget { return &fakeTarget{data: map[string]Versioned{}} }

func (f *fakeTarget) Name() string          { return "fake" }
func (f *fakeTarget) Shards() *txn.ShardMap { return f.shards }
func (f *fakeTarget) Close() error          { return nil }
func (f *fakeTarget) NewSession(context.Context, int) (Session, error) {
	return &fakeSession{f: f}, nil
}

// sum returns the total of the balances of the keys with prefix.
func (f *fakeTarget) sumBalances(ks *keySpace) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var total int64
	for i := 0; i < ks.n; i++ {
		total += balance(f.data[string(ks.key(i))])
	}
	return total
}

type fakeSession struct{ f *fakeTarget }

// begin runs the injection and the delay of one operation.
func (s *fakeSession) begin(ctx context.Context) error {
	n := s.f.calls.Add(1)
	if s.f.delay > 0 {
		select {
		case <-time.After(s.f.delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.f.inject != nil {
		return s.f.inject(n)
	}
	return nil
}

func (s *fakeSession) write(keys, values [][]byte) {
	s.f.clock++
	for i, k := range keys {
		s.f.data[string(k)] = Versioned{Value: append([]byte(nil), values[i]...), Version: s.f.clock, Found: true}
	}
}

func (s *fakeSession) Put(ctx context.Context, key, value []byte) error {
	return s.Txn(ctx, [][]byte{key}, [][]byte{value})
}

func (s *fakeSession) Get(ctx context.Context, key []byte) (bool, error) {
	vs, err := s.Snapshot(ctx, [][]byte{key})
	if err != nil {
		return false, err
	}
	return vs[0].Found, nil
}

func (s *fakeSession) Txn(ctx context.Context, keys, values [][]byte) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = string(k)
	}
	s.f.txns = append(s.f.txns, names)
	s.write(keys, values)
	return nil
}

func (s *fakeSession) Snapshot(ctx context.Context, keys [][]byte) ([]Versioned, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	out := make([]Versioned, len(keys))
	for i, k := range keys {
		out[i] = s.f.data[string(k)]
	}
	return out, nil
}

func (s *fakeSession) Scan(ctx context.Context, start, end []byte, limit int) (int, error) {
	if err := s.begin(ctx); err != nil {
		return 0, err
	}
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	var keys []string
	for k, v := range s.f.data {
		if v.Found && k >= string(start) && k < string(end) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	keys = keys[:min(limit, len(keys))]
	s.f.scans = append(s.f.scans, keys)
	return len(keys), nil
}

func (s *fakeSession) CondTxn(ctx context.Context, keys [][]byte, versions []uint64, values [][]byte) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	for i, k := range keys {
		if s.f.data[string(k)].Version != versions[i] {
			return &OpError{Outcome: Aborted, Reason: ReasonCompareFailed, Err: strconv.ErrRange}
		}
	}
	s.write(keys, values)
	return nil
}

func (s *fakeSession) Close() error { return nil }
