package kv

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
)

// Apply is the one-phase fast path. It locks every key of ops and cmps at
// once, all or nothing: if any is held, or another Apply is already queued
// for one of them, it takes none and queues for them all (up to
// Options.LockWait and ctx); queued Applies get their keys in arrival order,
// so a hot key's writers take turns, except that one waiting for a key held
// by a prepared transaction does not hold back its other keys (applyWaiter). It never holds some locks while waiting
// for others, so it cannot deadlock. Giving up returns *ConflictError. Under the locks it checks cmps against the latest
// committed versions (the first failure returns *CompareFailedError and
// nothing is written), writes all ops at commitTS = max(ts, maxTS+1) in one
// Badger transaction, waits for a group sync, raises maxTS to commitTS,
// releases the locks and returns commitTS. When it returns nil the writes
// are durable and visible to every read at or above commitTS; on any error
// nothing was written (or, after a sync failure, the store has failed).
// txnID only labels logs and errors. With no ops, nothing is written and no
// sync is needed; the compares were checked and commitTS is still returned.
//
// Cost: one lock-table critical section (plus one per wait), one Badger
// read per compare, one Badger write transaction, one share of a group
// sync; about 5 allocations plus Badger's own.
func (s *Store) Apply(ctx context.Context, txnID, ts uint64, cmps []Compare, ops []Op) (commitTS uint64, err error) {
	if err := validate("apply", txnID, ops, cmps); err != nil {
		return 0, err
	}
	ops = dedupeOps(ops)
	keys := joinKeys(distinctKeys(ops, cmps))
	o := &lockOwner{txnID: txnID}

	s.mu.Lock()
	if err := s.enterLocked(); err != nil {
		s.mu.Unlock()
		return 0, err
	}
	defer s.exit()
	if len(ops) > 0 {
		if err := s.admitWriteLocked(opBytes(ops)); err != nil {
			s.mu.Unlock()
			return 0, err
		}
	}
	if _, holder := s.holderLocked(keys); holder == nil && !s.queuedLocked(keys) {
		s.acquireLocked(keys, o)
	} else if err := s.queueForLocked(ctx, keys, o); err != nil {
		s.mu.Unlock()
		return 0, err
	}
	// The keys are locked for o.
	if s.mu.maxTS >= math.MaxUint64-1 {
		s.releaseLocked(keys, o)
		s.mu.Unlock()
		return 0, invalidf("apply transaction %d: timestamps exhausted (maxTS %d)", txnID, s.mu.maxTS)
	}
	commitTS = max(ts, s.mu.maxTS+1)
	if commitTS == math.MaxUint64 {
		commitTS--
	}
	o.readFrom = commitTS
	if len(ops) == 0 {
		o.readFrom = noWait // writes nothing: no reader needs to wait
	}
	needMark := len(ops) > 0 && commitTS > s.mu.mark
	s.mu.Unlock()

	if err := s.applyHeld(ctx, txnID, commitTS, needMark, cmps, ops); err != nil {
		var cf *CompareFailedError
		s.mu.Lock()
		readPending := errors.As(err, &cf) && s.pendingLocked(cmps)
		if s.mu.failed == nil {
			s.releaseLocked(keys, o)
		} // else keep the locks: see releaseUnlessFailed
		s.mu.Unlock()
		if readPending {
			if err := s.waitSync(); err != nil {
				return 0, err
			}
		}
		return 0, err
	}
	s.mu.Lock()
	if commitTS > s.mu.maxTS {
		s.mu.maxTS = commitTS
	}
	if len(ops) == 0 {
		readPending := s.pendingLocked(cmps)
		s.releaseLocked(keys, o)
		s.mu.Unlock()
		if readPending {
			if err := s.waitSync(); err != nil {
				return 0, err
			}
		}
		return commitTS, nil
	}
	// The writes are in Badger but not yet durable. The next writer of these keys may go
	// ahead (its own sync round covers these writes too, being later in the same log), so a
	// hot key's writers share rounds; readers at or above commitTS wait until this Apply's
	// round is done (readBlockerLocked), so no read sees a write that a crash could take back.
	written := writtenKeys(ops)
	for _, k := range written {
		s.mu.pending[k] = append(s.mu.pending[k], o)
	}
	s.releaseLocked(keys, o)
	s.mu.Unlock()

	err = s.waitSync()
	s.mu.Lock()
	if err == nil { // after a failed sync the store has failed: readers keep waiting
		for _, k := range written {
			q := slices.DeleteFunc(s.mu.pending[k], func(x *lockOwner) bool { return x == o })
			if len(q) == 0 {
				delete(s.mu.pending, k)
			} else {
				s.mu.pending[k] = q
			}
		}
		if o.wake != nil {
			close(o.wake)
			o.wake = nil
		}
	}
	s.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return commitTS, nil
}

// pendingLocked reports whether a key of cmps has a write in Badger that is not yet durable
// (an Apply waiting for its sync round). A reply that depends on what the compares read (a
// failed compare's verdict and reported value, a compare-only success, a no vote) must then
// wait for a sync round before it is sent, or a crash could take back the state the client
// was told about. The caller holds the compare keys' locks, so these are all the undurable
// writes the compares could have read.
func (s *Store) pendingLocked(cmps []Compare) bool {
	if len(s.mu.pending) == 0 {
		return false
	}
	for i := range cmps {
		if len(s.mu.pending[string(cmps[i].Key)]) > 0 {
			return true
		}
	}
	return false
}

// writtenKeys returns the keys of ops (dedupeOps has already removed duplicates).
func writtenKeys(ops []Op) []string {
	keys := make([]string, len(ops))
	for i, op := range ops {
		keys[i] = string(op.Key)
	}
	return keys
}

// applyHeld does Apply's work once the locks are held, short of the sync.
func (s *Store) applyHeld(ctx context.Context, txnID, commitTS uint64, needMark bool, cmps []Compare, ops []Op) error {
	if needMark {
		if err := s.ensureMark(commitTS); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("kv: apply transaction %d: %w", txnID, err)
	}
	txn := s.db.NewTransactionAt(math.MaxUint64, true)
	defer txn.Discard()
	if err := s.checkCompares(txn, cmps); err != nil {
		return err
	}
	if len(ops) == 0 {
		return nil
	}
	if err := s.writeOps(txn, ops); err != nil {
		return fmt.Errorf("kv: apply transaction %d: %w", txnID, err)
	}
	if err := s.commitAt(txn, commitTS, nil); err != nil {
		return fmt.Errorf("kv: apply transaction %d at %d: %w", txnID, commitTS, err)
	}
	return nil
}

// releaseUnlessFailed releases o's locks after an error, unless the store
// has failed: then a write whose durability is unknown may be in Badger, and
// keeping the locks keeps readers from seeing it.
func (s *Store) releaseUnlessFailed(keys []string, o *lockOwner) {
	s.mu.Lock()
	if s.mu.failed == nil {
		s.releaseLocked(keys, o)
	}
	s.mu.Unlock()
}
