package kv

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"

	badger "github.com/dgraph-io/badger/v4"
)

// RestoreState is what a store holds, as a restore sees it: a restore writes keys at their
// old versions, which any version already there (a deletion too) could hide, so it wants a
// store that holds none.
type RestoreState struct {
	// HasData is set when the store holds any version of any key, deletions included.
	HasData bool
	// Locks and Prepared count the keys locked and the prepared transactions.
	Locks, Prepared int
}

// RestoreState reports whether the store holds any version of any key, and its locks and
// prepared transactions. Cost: one Badger iterator positioned once, one mutex acquisition.
func (s *Store) RestoreState() (RestoreState, error) {
	s.mu.Lock()
	if err := s.enterLocked(); err != nil {
		s.mu.Unlock()
		return RestoreState{}, err
	}
	defer s.exit()
	st := RestoreState{Locks: len(s.mu.locks), Prepared: len(s.mu.prepared)}
	s.mu.Unlock()
	txn := s.db.NewTransactionAt(math.MaxUint64, false)
	defer txn.Discard()
	// AllVersions also yields deletions, which a plain iterator skips.
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagData}, AllVersions: true, PrefetchValues: false})
	defer it.Close()
	it.Rewind()
	st.HasData = it.Valid()
	return st, nil
}

// Restore writes every value of vals at its own Version (Found is ignored), as a backup
// recorded them: the keys of one version in one Badger transaction at that version, so the
// part of a transaction that one shard held lands whole. It returns once they are durable.
//
// It takes the keys' locks without waiting (a key locked by a transaction or an Apply is a
// *ConflictError and nothing is written), so no read at or above the lowest restored version
// sees them before they are durable, and raises maxTS (and its durable mark) to the highest
// version, so that later writes land above them. Writing a key again at the same version
// with the same value changes nothing, so a restore that failed half-way can be run again. A
// version already present above a restored one still hides it: restore into an empty store
// (RestoreState). Versions must lie in [1, math.MaxUint64-2] and a key may appear once.
//
// Cost: one Badger transaction per distinct version, committed without waiting for each
// other, then one share of a group sync.
func (s *Store) Restore(ctx context.Context, vals []Value) error {
	if len(vals) == 0 {
		return nil
	}
	keys := make([]string, len(vals))
	seen := make(map[string]struct{}, len(vals))
	lo, hi := uint64(math.MaxUint64), uint64(0)
	for i, v := range vals {
		if v.Version == 0 || v.Version > math.MaxUint64-2 {
			return invalidf("restore %s at version %d", quoteKey(v.Key), v.Version)
		}
		k := string(v.Key)
		if _, dup := seen[k]; dup {
			return invalidf("restore: key %s appears twice", quoteKey(v.Key))
		}
		seen[k] = struct{}{}
		keys[i] = k
		lo, hi = min(lo, v.Version), max(hi, v.Version)
	}
	o := &lockOwner{readFrom: lo}
	s.mu.Lock()
	if err := s.enterLocked(); err != nil {
		s.mu.Unlock()
		return err
	}
	defer s.exit()
	var n int64
	for _, v := range vals {
		n += int64(len(v.Key) + len(v.Value))
	}
	if err := s.admitWriteLocked(n); err != nil {
		s.mu.Unlock()
		return err
	}
	for _, k := range keys {
		if holder := s.mu.locks[k]; holder != nil {
			s.mu.Unlock()
			return &ConflictError{Key: []byte(k), TxnID: holder.txnID}
		}
		if len(s.mu.queues[k]) > 0 || s.mu.prepWaiting[k] > 0 {
			s.mu.Unlock()
			return &ConflictError{Key: []byte(k)}
		}
	}
	s.acquireLocked(keys, o)
	if hi > s.mu.maxTS {
		s.mu.maxTS = hi
	}
	needMark := hi > s.mu.mark
	s.mu.Unlock()

	err := s.restoreHeld(ctx, vals, needMark, hi)
	if err == nil {
		err = s.waitSync()
	}
	s.releaseUnlessFailed(keys, o)
	return err
}

// restoreHeld writes vals, their keys locked, short of the sync.
func (s *Store) restoreHeld(ctx context.Context, vals []Value, needMark bool, hi uint64) error {
	if needMark {
		if err := s.ensureMark(hi); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("kv: restore: %w", err)
	}
	byVersion := map[uint64][]int{}
	for i, v := range vals {
		byVersion[v.Version] = append(byVersion[v.Version], i)
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	record := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	commit := func(txn *badger.Txn, version uint64) {
		wg.Add(1)
		// With a callback, CommitAt reports every outcome through it, exactly once.
		_ = s.commitAt(txn, version, func(err error) {
			if err != nil {
				record(fmt.Errorf("kv: restore at version %d: %w", version, err))
			}
			wg.Done()
		})
	}
	for _, version := range slices.Sorted(maps.Keys(byVersion)) {
		txn := s.db.NewTransactionAt(math.MaxUint64, true)
		for _, i := range byVersion[version] {
			dkey := append([]byte{tagData}, vals[i].Key...)
			value := vals[i].Value
			if value == nil {
				value = []byte{}
			}
			err := setValue(txn, dkey, value)
			if errors.Is(err, badger.ErrTxnTooBig) {
				// This version's keys do not fit one Badger transaction: commit what fits and
				// go on in another at the same version (a rerun repairs a crash in between).
				commit(txn, version)
				txn = s.db.NewTransactionAt(math.MaxUint64, true)
				err = setValue(txn, dkey, value)
			}
			if err != nil {
				txn.Discard()
				wg.Wait()
				return fmt.Errorf("kv: restore %s at version %d: %w", quoteKey(vals[i].Key), version, err)
			}
		}
		commit(txn, version)
	}
	wg.Wait()
	return firstErr
}
