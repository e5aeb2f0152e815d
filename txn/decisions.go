package txn

import (
	"context"
	"sort"
	"sync"
)

// Decision is the master's durable record that a transaction committed. Presumed abort: an
// aborted transaction has no record, and a transaction with none is aborted.
type Decision struct {
	TxnID        uint64
	CommitTS     uint64
	Participants []string
}

// DecisionStore keeps decision records and the oracle's mark. Record must be durable when it
// returns; Forget need not be (a forgotten decision that comes back is re-driven harmlessly,
// since Commit is idempotent).
type DecisionStore interface {
	MarkStore
	Record(ctx context.Context, d Decision) error
	// Forget drops the decisions of txnIDs, all in one write.
	Forget(txnIDs ...uint64) error
	Load() ([]Decision, error)
}

// MemDecisionStore is an in-memory DecisionStore for tests. Everything it holds survives a
// simulated master restart (it stands for the disk); it is safe for concurrent use.
type MemDecisionStore struct {
	mu        sync.Mutex
	mark      uint64
	decisions map[uint64]Decision
}

var _ DecisionStore = (*MemDecisionStore)(nil)

// NewMemDecisionStore returns an empty store.
func NewMemDecisionStore() *MemDecisionStore {
	return &MemDecisionStore{decisions: map[uint64]Decision{}}
}

// LoadMark implements MarkStore.
func (s *MemDecisionStore) LoadMark() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mark, nil
}

// SaveMark implements MarkStore.
func (s *MemDecisionStore) SaveMark(_ context.Context, mark uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mark = mark
	return nil
}

// Record implements DecisionStore.
func (s *MemDecisionStore) Record(_ context.Context, d Decision) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	d.Participants = append([]string(nil), d.Participants...)
	s.decisions[d.TxnID] = d
	return nil
}

// Forget implements DecisionStore.
func (s *MemDecisionStore) Forget(txnIDs ...uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range txnIDs {
		delete(s.decisions, id)
	}
	return nil
}

// Load implements DecisionStore.
func (s *MemDecisionStore) Load() ([]Decision, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Decision, 0, len(s.decisions))
	for _, d := range s.decisions {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TxnID < out[j].TxnID })
	return out, nil
}
