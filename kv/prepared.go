package kv

import (
	"cmp"
	"slices"
)

// Prepared lists the transactions whose prepare record is durable and that
// still hold their locks here, sorted by TxnID. The slices are copies.
// Cost: one mutex acquisition and a copy of every prepared key.
func (s *Store) Prepared() []PreparedTxn {
	s.mu.Lock()
	out := make([]PreparedTxn, 0, len(s.mu.prepared))
	for _, p := range s.mu.prepared {
		if p.phase == phasePreparing {
			continue
		}
		keys := make([][]byte, len(p.keys))
		for i, k := range p.keys {
			keys[i] = []byte(k)
		}
		out = append(out, PreparedTxn{
			TxnID:        p.owner.txnID,
			StartTS:      p.startTS,
			Keys:         keys,
			Participants: slices.Clone(p.participants),
			PreparedAt:   p.preparedAt,
			MinCommitTS:  p.minCommitTS,
			Parallel:     p.parallel,
			Recovered:    p.recovered,
		})
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b PreparedTxn) int { return cmp.Compare(a.TxnID, b.TxnID) })
	return out
}

// IsPrepared reports whether txnID is durably prepared here and not yet
// committed or aborted. Cost: one mutex acquisition.
func (s *Store) IsPrepared(txnID uint64) bool {
	s.mu.Lock()
	p := s.mu.prepared[txnID]
	ok := p != nil && p.phase != phasePreparing
	s.mu.Unlock()
	return ok
}
