package kv

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	badger "github.com/dgraph-io/badger/v4"
)

// Outcome markers. A transaction that finishes here leaves a small marker under tagOutcome and
// its id: "committed at T", written in the same Badger transaction as its commit, or "aborted",
// written with its abort or, for a transaction never prepared here, by Resolve. The marker
// refuses a late or duplicated Prepare across restarts and answers Resolve, the termination
// query of the parallel commit protocol. Markers stay until the garbage collector of finished
// transactions exists; until then they cost about 20 bytes per cross-shard transaction.
const (
	markerCommitted = 'c' // then uvarint commit timestamp
	markerAborted   = 'a'
)

// ResolutionState is what a store knows of a transaction's fate.
type ResolutionState uint8

// The states Resolve reports.
const (
	// ResolvedPrepared: the transaction holds a durable yes vote here and is not finished.
	ResolvedPrepared ResolutionState = iota + 1
	// ResolvedCommitted: it committed here, at Resolution.CommitTS.
	ResolvedCommitted
	// ResolvedAborted: it aborted here, or it was never prepared here and never will be.
	ResolvedAborted
)

var resolutionNames = [...]string{ResolvedPrepared: "prepared", ResolvedCommitted: "committed", ResolvedAborted: "aborted"}

// String returns the state's name.
func (st ResolutionState) String() string {
	if int(st) < len(resolutionNames) && resolutionNames[st] != "" {
		return resolutionNames[st]
	}
	return fmt.Sprintf("resolution(%d)", uint8(st))
}

// Resolution answers Resolve. Every state it reports is durable here when Resolve returns.
type Resolution struct {
	State ResolutionState
	// MinCommitTS is this store's minimum commit timestamp (ResolvedPrepared), fixed in the
	// prepare record.
	MinCommitTS uint64
	// CommitTS is the commit timestamp (ResolvedCommitted).
	CommitTS uint64
	// Refused says that this call recorded the abort: the transaction was never prepared here.
	Refused bool
}

// outcomeKey returns the Badger key of txnID's outcome marker.
func outcomeKey(txnID uint64) []byte {
	var k [9]byte
	k[0] = tagOutcome
	binary.BigEndian.PutUint64(k[1:], txnID)
	return k[:]
}

func committedMarker(commitTS uint64) []byte {
	return binary.AppendUvarint([]byte{markerCommitted}, commitTS)
}

var abortedMarker = []byte{markerAborted}

// readOutcome reads txnID's outcome marker. found is false if there is none; a store written
// before markers existed may still know the transaction finished from its prepare record's
// deletion (legacy).
func readOutcome(txn *badger.Txn, txnID uint64) (r Resolution, found, legacy bool, err error) {
	item, err := txn.Get(outcomeKey(txnID))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return Resolution{}, false, everPrepared(txn, txnID), nil
	}
	if err != nil {
		return Resolution{}, false, false, fmt.Errorf("kv: read outcome of transaction %d: %w", txnID, err)
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return Resolution{}, false, false, fmt.Errorf("kv: read outcome of transaction %d: %w", txnID, err)
	}
	switch {
	case len(v) == 1 && v[0] == markerAborted:
		return Resolution{State: ResolvedAborted}, true, false, nil
	case len(v) > 1 && v[0] == markerCommitted:
		ts, n := binary.Uvarint(v[1:])
		if n > 0 && n == len(v)-1 && ts > 0 {
			return Resolution{State: ResolvedCommitted, CommitTS: ts}, true, false, nil
		}
	}
	return Resolution{}, false, false, fmt.Errorf("kv: outcome of transaction %d: %w", txnID, errCorrupt)
}

// finishedHere reports whether txnID finished here before: it has an outcome marker or a
// deleted prepare record.
func finishedHere(txn *badger.Txn, txnID uint64) (bool, error) {
	_, found, legacy, err := readOutcome(txn, txnID)
	return found || legacy, err
}

// Resolve answers a termination query about txnID with what this store durably knows:
// prepared (with its minimum commit timestamp), committed at a timestamp, or aborted. A
// transaction this store has never prepared is refused first: Resolve records "aborted" durably,
// so that a Prepare arriving later (late, duplicated, or after a restart) is refused, and then
// answers aborted. A transaction whose Prepare is still writing is waited for (bounded by ctx).
// A transaction that an Abort has claimed is reported aborted: whoever sent the Abort knew it
// cannot commit.
//
// Cost: for a prepared transaction, one mutex acquisition; otherwise one point read and one
// share of a group sync, plus one small write when it refuses.
func (s *Store) Resolve(ctx context.Context, txnID uint64) (Resolution, error) {
	s.mu.Lock()
	if err := s.enterLocked(); err != nil {
		s.mu.Unlock()
		return Resolution{}, err
	}
	defer s.exit()
	for {
		if err := s.mu.failed; err != nil {
			s.mu.Unlock()
			return Resolution{}, err
		}
		p := s.mu.prepared[txnID]
		if p == nil {
			break
		}
		if p.busy == nil {
			r := Resolution{State: ResolvedPrepared, MinCommitTS: p.minCommitTS}
			if p.phase == phaseAborting {
				r = Resolution{State: ResolvedAborted}
			}
			s.mu.Unlock()
			return r, nil
		}
		ch := p.busy
		s.mu.Unlock()
		if err := s.waitChan(ctx, ch, fmt.Sprintf("transaction %d", txnID)); err != nil {
			return Resolution{}, err
		}
		s.mu.Lock()
	}
	// Not prepared here, and from now on no Prepare of it starts (it finds the id finished).
	s.mu.finished.add(txnID)
	s.mu.Unlock()

	r, err := s.markOutcome(txnID)
	if err != nil {
		return Resolution{}, err
	}
	// The marker read may be a commit not yet synced (CommitNoSync): answer once it is durable.
	if err := s.waitSync(); err != nil {
		return Resolution{}, err
	}
	return r, nil
}

// markOutcome returns txnID's outcome marker, writing "aborted" if it has none.
func (s *Store) markOutcome(txnID uint64) (Resolution, error) {
	txn := s.db.NewTransactionAt(math.MaxUint64, true)
	defer txn.Discard()
	r, found, legacy, err := readOutcome(txn, txnID)
	switch {
	case err != nil:
		return Resolution{}, err
	case found:
		return r, nil
	case legacy:
		return Resolution{}, fmt.Errorf("kv: resolve transaction %d: it finished here before outcomes were recorded: %w", txnID, ErrOutcomeUnknown)
	}
	if err := txn.Set(outcomeKey(txnID), abortedMarker); err != nil {
		return Resolution{}, fmt.Errorf("kv: resolve transaction %d: record abort: %w", txnID, err)
	}
	if err := txn.CommitAt(1, nil); err != nil {
		return Resolution{}, fmt.Errorf("kv: resolve transaction %d: record abort: %w", txnID, err)
	}
	return Resolution{State: ResolvedAborted, Refused: true}, nil
}
