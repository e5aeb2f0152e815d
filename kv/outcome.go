package kv

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Outcome markers. A transaction that finishes here leaves a small marker under tagOutcome and
// its id: "committed at T", written in the same Badger transaction as its commit, or "aborted"
// with the wall-clock time it was written, written with its abort or, for a transaction never
// prepared here, by Resolve. The marker refuses a late or duplicated Prepare across restarts and
// answers Resolve, the termination query of the parallel commit protocol. Markers go when no
// one can need them any more: a committed one when told that every participant has synced the
// commit (ForgetOutcomes: none can find it prepared again, so none asks), an aborted one once it
// is older than what the caller knows bounds a late Prepare (SweepOutcomes). A Prepare of a
// transaction whose marker went is still refused where it was prepared (the prepare record's
// deletion stays in Badger).
const (
	markerCommitted = 'c' // then uvarint commit timestamp
	markerAborted   = 'a' // then uvarint Unix nanoseconds (none in the first markers written)
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

func abortedMarker(at time.Time) []byte {
	return binary.AppendUvarint([]byte{markerAborted}, uint64(max(at.UnixNano(), 0)))
}

// decodeOutcome parses a marker; at is when an aborted one was written (zero if unknown).
func decodeOutcome(v []byte) (r Resolution, at time.Time, ok bool) {
	if len(v) == 0 {
		return Resolution{}, time.Time{}, false
	}
	n, k := binary.Uvarint(v[1:])
	whole := k > 0 && k == len(v)-1
	switch v[0] {
	case markerAborted:
		if len(v) == 1 {
			return Resolution{State: ResolvedAborted}, time.Time{}, true
		}
		return Resolution{State: ResolvedAborted}, time.Unix(0, int64(n)), whole && n <= math.MaxInt64
	case markerCommitted:
		return Resolution{State: ResolvedCommitted, CommitTS: n}, time.Time{}, whole && n > 0
	}
	return Resolution{}, time.Time{}, false
}

// readOutcome reads txnID's outcome marker. found is false if there is none; recordGone says
// whether the transaction was prepared and finished here all the same (its prepare record's
// deletion stays: its marker went, or the store predates markers).
func readOutcome(txn *badger.Txn, txnID uint64) (r Resolution, found, recordGone bool, err error) {
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
	if r, _, ok := decodeOutcome(v); ok {
		return r, true, false, nil
	}
	return Resolution{}, false, false, fmt.Errorf("kv: outcome of transaction %d: %w", txnID, errCorrupt)
}

// markerVersion returns a version above every version of txnID's marker key, its deletions
// included, so that a marker written or deleted there is the newest.
func markerVersion(txn *badger.Txn, txnID uint64) uint64 {
	it := txn.NewKeyIterator(outcomeKey(txnID), badger.IteratorOptions{AllVersions: true})
	defer it.Close()
	it.Rewind()
	if !it.Valid() {
		return 1
	}
	return it.Item().Version() + 1 // the newest version comes first
}

// finishedHere reports whether txnID finished here before: it has an outcome marker or a
// deleted prepare record.
func finishedHere(txn *badger.Txn, txnID uint64) (bool, error) {
	_, found, recordGone, err := readOutcome(txn, txnID)
	return found || recordGone, err
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
	r, found, recordGone, err := readOutcome(txn, txnID)
	switch {
	case err != nil:
		return Resolution{}, err
	case found:
		return r, nil
	case recordGone:
		// Prepared here and finished, its marker gone. A committed marker goes only once every
		// participant has synced the commit, after which none holds it prepared and none asks;
		// so whoever asks holds an aborted one, whose marker was swept. (A store written before
		// markers existed never had parallel transactions, the only ones participants ask
		// about.) Its prepare record's deletion already refuses a late Prepare.
		return Resolution{State: ResolvedAborted}, nil
	}
	version := markerVersion(txn, txnID)
	if err := txn.Set(outcomeKey(txnID), abortedMarker(time.Now())); err != nil {
		return Resolution{}, fmt.Errorf("kv: resolve transaction %d: record abort: %w", txnID, err)
	}
	if err := s.commitAt(txn, version, nil); err != nil {
		return Resolution{}, fmt.Errorf("kv: resolve transaction %d: record abort: %w", txnID, err)
	}
	return Resolution{State: ResolvedAborted, Refused: true}, nil
}

// ForgetOutcomes drops the markers of the listed commits (txnID → commit timestamp): the caller
// knows that every participant of each has synced its commit, so no participant can find it
// prepared again and ask. A marker that says otherwise (aborted, or another timestamp) stays.
// The deletions need no sync: a marker a crash brings back is only kept longer.
// Cost: one point read per id and one Badger write per 500 ids.
func (s *Store) ForgetOutcomes(commits map[uint64]uint64) (forgotten int, err error) {
	ids := make([]uint64, 0, len(commits))
	for id := range commits {
		ids = append(ids, id)
	}
	return s.dropMarkers(ids, func(id uint64, r Resolution, _ time.Time) bool {
		return r.State == ResolvedCommitted && r.CommitTS == commits[id]
	})
}

// SweepOutcomes drops the aborted markers written before before: the caller knows that no
// Prepare of those transactions can succeed any more (a late one is refused by its age), and a
// participant that still holds one prepared and asks is told "aborted" again.
// Cost: one pass over every marker, and one Badger write per 500 dropped.
func (s *Store) SweepOutcomes(before time.Time) (swept int, err error) {
	old := func(_ uint64, r Resolution, at time.Time) bool {
		return r.State == ResolvedAborted && !at.IsZero() && at.Before(before)
	}
	var ids []uint64
	txn := s.db.NewTransactionAt(math.MaxUint64, false)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagOutcome}})
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		k := item.Key()
		if len(k) != 9 {
			continue
		}
		id := binary.BigEndian.Uint64(k[1:])
		err = item.Value(func(v []byte) error {
			if r, at, ok := decodeOutcome(v); ok && old(id, r, at) {
				ids = append(ids, id)
			}
			return nil
		})
		if err != nil {
			break
		}
	}
	it.Close()
	txn.Discard()
	if err != nil {
		return 0, fmt.Errorf("kv: sweep outcomes: %w", err)
	}
	return s.dropMarkers(ids, old)
}

// markerBatch bounds the markers one Badger transaction deletes.
const markerBatch = 500

// dropMarkers deletes the markers of ids of which drop says so, markerBatch to a Badger
// transaction, each at a version above every marker it deletes.
func (s *Store) dropMarkers(ids []uint64, drop func(uint64, Resolution, time.Time) bool) (dropped int, err error) {
	s.mu.Lock()
	if err := s.enterLocked(); err != nil {
		s.mu.Unlock()
		return 0, err
	}
	s.mu.Unlock()
	defer s.exit()
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), markerBatch)]
		ids = ids[len(chunk):]
		n, err := s.dropMarkerBatch(chunk, drop)
		dropped += n
		if err != nil {
			return dropped, err
		}
	}
	return dropped, nil
}

func (s *Store) dropMarkerBatch(ids []uint64, drop func(uint64, Resolution, time.Time) bool) (int, error) {
	txn := s.db.NewTransactionAt(math.MaxUint64, true)
	defer txn.Discard()
	version, n := uint64(1), 0
	for _, id := range ids {
		item, err := txn.Get(outcomeKey(id))
		if errors.Is(err, badger.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("kv: drop outcome of transaction %d: %w", id, err)
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return 0, fmt.Errorf("kv: drop outcome of transaction %d: %w", id, err)
		}
		if r, at, ok := decodeOutcome(v); !ok || !drop(id, r, at) {
			continue
		}
		version = max(version, item.Version()+1) // the live marker is the key's newest version
		if err := txn.Delete(outcomeKey(id)); err != nil {
			return 0, fmt.Errorf("kv: drop outcome of transaction %d: %w", id, err)
		}
		n++
	}
	if n == 0 {
		return 0, nil
	}
	if err := s.commitAt(txn, version, nil); err != nil {
		return 0, fmt.Errorf("kv: drop %d outcome markers: %w", n, err)
	}
	return n, nil
}
