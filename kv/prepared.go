package kv

import (
	"cmp"
	"fmt"
	"slices"

	badger "github.com/dgraph-io/badger/v4"
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

// A prepared transaction's writes are in its durable prepare record, so it need not keep them
// in memory until its Commit: that can come long after the vote (phase 2 follows the client's
// reply, and an in-doubt transaction waits for its coordinator), and nothing else bounds how
// many transactions are prepared at once. The values of prepared transactions are kept in
// memory up to maxHeldValueBytes in all, for a Commit without a read; past it, a transaction
// keeps only its keys (its locks), and its Commit reads the writes back from the record, one
// Badger read of what the transaction writes anyway. A transaction recovered from a record
// older than request digests keeps its writes: a repeated Prepare is compared with them.

// maxHeldValueBytes is the most bytes of values that prepared transactions keep in memory.
const maxHeldValueBytes = 8 << 20

// holdOrSpillLocked decides, once p is prepared, whether it keeps its writes in memory (and
// counts them in heldValueBytes until finishLocked) or drops them, to be read back at Commit.
func (s *Store) holdOrSpillLocked(p *preparedTxn) {
	if s.mu.heldValueBytes+p.valueBytes <= maxHeldValueBytes || p.digest == nil {
		p.held = p.valueBytes
		s.mu.heldValueBytes += p.held
		return
	}
	p.ops, p.readKeys, p.spilled = nil, nil, true
}

// preparedOps returns p's writes: those it kept, or, if it spilled them, those of its prepare
// record as txn sees it (the record is the one written at p's start timestamp while p is
// prepared, since only its Commit or Abort deletes it).
func (s *Store) preparedOps(txn *badger.Txn, p *preparedTxn) ([]Op, error) {
	if !p.spilled {
		return p.ops, nil
	}
	item, err := txn.Get(prepareKey(p.owner.txnID))
	if err != nil {
		return nil, fmt.Errorf("read back prepare record: %w (%w)", err, errCorrupt)
	}
	rec, err := readRecord(s.db, item)
	if err != nil {
		return nil, fmt.Errorf("read back %w", err)
	}
	if rec.StartTS != p.startTS {
		return nil, fmt.Errorf("read back prepare record: start %d, want %d: %w", rec.StartTS, p.startTS, errCorrupt)
	}
	return rec.Ops, nil
}
