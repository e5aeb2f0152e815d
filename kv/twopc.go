package kv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"math"
	"slices"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// PrepareRecord is everything needed to commit a prepared transaction after
// a crash. It is stored durably by Prepare and loaded by Open.
type PrepareRecord struct {
	TxnID        uint64
	StartTS      uint64 // must be > 0; the commit timestamp must exceed it
	Ops          []Op
	Participants []string  // every participant's node name, this one included
	PreparedAt   time.Time // zero means now
	// Parallel marks a transaction of the parallel commit protocol: it is committed exactly when
	// every participant holds its yes vote, so it is resolved by asking the other participants
	// (Resolve), not a coordinator. The flag is kept in the record.
	Parallel bool
}

// PreparedTxn describes a transaction holding prepare locks here.
type PreparedTxn struct {
	TxnID, StartTS uint64
	Keys           [][]byte // every locked key: op keys, then compare-only keys
	Participants   []string
	PreparedAt     time.Time
	MinCommitTS    uint64 // fixed in the prepare record: the vote's minimum commit timestamp
	Parallel       bool   // PrepareRecord.Parallel
	Recovered      bool   // loaded from disk by Open rather than prepared by this process
}

// prepPhase is where a transaction holding prepare locks here is in its life. Every
// transition happens under Store.mu:
//
//	preparing  → prepared     its prepare record is durable (Prepare returns the vote)
//	preparing  → gone         Prepare failed before the record was written
//	prepared   → committing   a Commit claimed it
//	prepared   → aborting     an Abort claimed it (also from committing, after a failed Commit)
//	committing → prepared     the Commit failed; it may be tried again
//	aborting   → aborting     the Abort failed; only an Abort may try again
//	committing, aborting → gone   it finished, releasing its locks
//
// Open recovers a transaction in phase prepared. While a call does I/O for the
// transaction (preparing, and the claims above) preparedTxn.busy is set.
type prepPhase uint8

const (
	phasePreparing prepPhase = iota + 1
	phasePrepared
	phaseCommitting
	phaseAborting
)

var prepPhaseNames = [...]string{phasePreparing: "preparing", phasePrepared: "prepared", phaseCommitting: "committing", phaseAborting: "aborting"}

// String returns the phase's name, as logs and errors use it.
func (ph prepPhase) String() string {
	if int(ph) < len(prepPhaseNames) && prepPhaseNames[ph] != "" {
		return prepPhaseNames[ph]
	}
	return fmt.Sprintf("phase(%d)", uint8(ph))
}

// preparedTxn is the in-memory state of a prepared transaction. All fields
// but owner.readFrom, owner.wake, minCommitTS, phase and busy are
// immutable once the txn is in Store.mu.prepared; those are guarded by mu.
type preparedTxn struct {
	owner        lockOwner
	startTS      uint64
	ops          []Op     // deduplicated, owned copies; nil once spilled
	readKeys     [][]byte // compare keys that are not op keys, owned copies; nil once spilled
	keys         []string // every locked key: op keys, then readKeys
	participants []string
	preparedAt   time.Time
	minCommitTS  uint64
	parallel     bool
	recovered    bool
	phase        prepPhase
	// valueBytes is the size of ops' values; held is what of it counts toward
	// Store.mu.heldValueBytes (0 once spilled), and spilled says that ops are not in memory:
	// Commit reads them back from the prepare record (holdOrSpillLocked).
	valueBytes int64
	held       int64
	spilled    bool
	// digest identifies the Prepare request (requestDigest), so that a repeat is known to
	// be the same request; nil for a transaction recovered from a record older than it.
	digest []byte

	// busy is non-nil while a Prepare, Commit or Abort of this transaction
	// is doing I/O; it is closed when that call finishes, successfully or
	// not, and other calls for the same transaction wait for it.
	busy chan struct{}
}

// samePrepare reports whether p, a repeated Prepare, is the request q was prepared by: a
// repeat may only be a retry, never a different transaction under a known id, which would be
// told "prepared" while the shard holds other writes, or whose compares were never checked.
// A transaction recovered from a record older than the digest is compared by its writes.
func samePrepare(q, p *preparedTxn) bool {
	if q.digest != nil {
		return bytes.Equal(q.digest, p.digest)
	}
	return q.parallel == p.parallel && slices.EqualFunc(q.ops, p.ops, func(a, b Op) bool {
		return a.Kind == b.Kind && bytes.Equal(a.Key, b.Key) && bytes.Equal(a.Value, b.Value)
	})
}

// requestDigest is the SHA-256 of everything a Prepare asks for: its start timestamp, its
// (deduplicated) writes, its compares, its participants and its protocol.
func requestDigest(startTS uint64, ops []Op, cmps []Compare, participants []string, parallel bool) []byte {
	h := sha256.New()
	var b []byte
	b = binary.AppendUvarint(b, startTS)
	b = binary.AppendUvarint(b, uint64(len(ops)))
	for _, op := range ops {
		b = append(b, byte(op.Kind))
		b = appendBytes(b, op.Key)
		b = appendBytes(b, op.Value)
		b = flush(h, b)
	}
	b = binary.AppendUvarint(b, uint64(len(cmps)))
	for _, c := range cmps {
		b = append(b, byte(c.Kind))
		b = appendBytes(b, c.Key)
		b = appendBytes(b, c.Value)
		b = binary.AppendUvarint(b, c.Version)
		b = flush(h, b)
	}
	b = binary.AppendUvarint(b, uint64(len(participants)))
	for _, name := range participants {
		b = appendBytes(b, []byte(name))
	}
	if parallel {
		b = append(b, 1)
	}
	h.Write(b)
	return h.Sum(nil)
}

// flush writes b to h and returns it emptied, so that the digest's buffer stays small.
func flush(h hash.Hash, b []byte) []byte {
	h.Write(b)
	return b[:0]
}

// newPrepared builds the in-memory state of a prepared transaction, copying
// ops and readKeys into one owned buffer (callers may reuse theirs).
func newPrepared(txnID, startTS uint64, ops []Op, readKeys [][]byte, participants []string, at time.Time) *preparedTxn {
	total, values := 0, int64(0)
	for i := range ops {
		total += len(ops[i].Key) + len(ops[i].Value)
		if ops[i].Kind == OpPut {
			values += int64(len(ops[i].Value))
		}
	}
	for _, k := range readKeys {
		total += len(k)
	}
	buf := make([]byte, 0, total)
	own := func(b []byte) []byte {
		start := len(buf)
		buf = append(buf, b...)
		return buf[start:len(buf):len(buf)]
	}
	p := &preparedTxn{
		owner:        lockOwner{txnID: txnID, prepared: true},
		startTS:      startTS,
		ops:          make([]Op, len(ops)),
		readKeys:     make([][]byte, len(readKeys)),
		participants: slices.Clone(participants),
		preparedAt:   at,
		valueBytes:   values,
	}
	raw := make([][]byte, 0, len(ops)+len(readKeys))
	for i := range ops {
		p.ops[i].Kind = ops[i].Kind
		p.ops[i].Key = own(ops[i].Key)
		if ops[i].Kind == OpPut {
			p.ops[i].Value = own(ops[i].Value)
		}
		raw = append(raw, p.ops[i].Key)
	}
	for i, k := range readKeys {
		p.readKeys[i] = own(k)
		raw = append(raw, p.readKeys[i])
	}
	p.keys = joinKeys(raw)
	return p
}

// Prepare is the first phase of two-phase commit for rec.TxnID.
//
// It locks every key of rec.Ops and cmps, all or nothing. A key locked by
// another prepared transaction fails the call at once with *ConflictError
// (no waiting, so prepared transactions never wait for each other and
// cannot deadlock); a key locked by an in-progress one-phase Apply, which
// depends on nobody, is waited for up to Options.LockWait. Under the locks
// it checks cmps against the latest committed versions (failure releases
// everything and returns *CompareFailedError), writes the prepare record,
// and waits for a group sync. When Prepare returns nil the record is
// durable: the locks are re-taken after a crash and the transaction can
// still be committed or aborted. The result is the minimum commit
// timestamp, max(maxTS, StartTS)+1 when the locks were taken, kept in the
// record: Commit must use a timestamp at least this large, which places the
// writes above every read this store served; from the moment the locks are
// taken, a read at or above it waits for the transaction.
// Prepare does not by itself look for writes committed after StartTS; a
// caller that wants snapshot isolation says so with compares (for example
// CmpVersionLess with Version StartTS+1 on each written key).
//
// Prepare is idempotent: for a transaction already prepared here it
// returns the same minimum commit timestamp again. For a transaction this
// store has already committed or aborted, or refused in Resolve, it returns
// *AbortedError (a late duplicate, whatever the outcome: Resolve tells it):
// recent ones are remembered in memory, and all are recognised from their
// outcome marker, across restarts. ctx bounds the waits and is checked before the
// record is written; once written, Prepare waits for the sync regardless.
//
// Cost: one Badger read per compare plus one point lookup for the
// outcome-marker check, a dry run of the commit's Badger transaction (so a yes
// vote can always be committed), one Badger write, one share of a group
// sync; ops are copied once and kept in memory until Commit or Abort, or only
// their keys past a budget (prepared.go).
func (s *Store) Prepare(ctx context.Context, rec PrepareRecord, cmps []Compare) (minCommitTS uint64, err error) {
	if rec.StartTS == 0 || rec.StartTS >= math.MaxUint64-1 {
		return 0, invalidf("prepare transaction %d: start timestamp %d out of range", rec.TxnID, rec.StartTS)
	}
	if err := validate("prepare", rec.TxnID, rec.Ops, cmps); err != nil {
		return 0, err
	}
	ops := dedupeOps(rec.Ops)
	raw := distinctKeys(ops, cmps)
	at := rec.PreparedAt
	if at.IsZero() {
		at = time.Now()
	}
	p := newPrepared(rec.TxnID, rec.StartTS, ops, raw[len(ops):], rec.Participants, at)
	p.parallel = rec.Parallel
	p.digest = requestDigest(rec.StartTS, ops, cmps, rec.Participants, rec.Parallel)
	p.phase = phasePreparing
	p.busy = make(chan struct{})

	s.mu.Lock()
	if err := s.enterLocked(); err != nil {
		s.mu.Unlock()
		return 0, err
	}
	defer s.exit()
	var timer *time.Timer
	// leave ends the loop without the locks: it hands any key a wait held
	// back to the Applies queued for it (waitForHolderLocked).
	leave := func() {
		s.grantLocked(p.keys)
		s.mu.Unlock()
		stopTimer(timer)
	}
	for {
		if err := s.mu.failed; err != nil {
			leave()
			return 0, err
		}
		if q := s.mu.prepared[rec.TxnID]; q != nil {
			if q.busy != nil {
				ch := q.busy
				s.grantLocked(p.keys)
				s.mu.Unlock()
				if err := s.waitChan(ctx, ch, fmt.Sprintf("transaction %d", rec.TxnID)); err != nil {
					stopTimer(timer)
					return 0, err
				}
				s.mu.Lock()
				continue
			}
			min, startTS := q.minCommitTS, q.startTS
			leave()
			if startTS != rec.StartTS {
				return 0, invalidf("prepare transaction %d with start %d: already prepared with start %d", rec.TxnID, rec.StartTS, startTS)
			}
			if !samePrepare(q, p) {
				return 0, invalidf("prepare transaction %d: already prepared by another request (other writes, compares or participants)", rec.TxnID)
			}
			return min, nil
		}
		if s.mu.finished.has(rec.TxnID) {
			leave()
			return 0, &AbortedError{TxnID: rec.TxnID, Reason: "already finished here (late duplicate prepare)"}
		}
		k, holder := s.holderLocked(p.keys)
		if holder == nil {
			break
		}
		if holder.prepared {
			leave()
			return 0, &ConflictError{Key: []byte(k), TxnID: holder.txnID}
		}
		if s.mu.maxTS >= math.MaxUint64-2 {
			leave()
			return 0, invalidf("prepare transaction %d: timestamps exhausted (maxTS %d)", rec.TxnID, s.mu.maxTS)
		}
		// Hand on any key an earlier wait held back: this Prepare is not taking it now.
		s.grantLocked(p.keys)
		if timer, err = s.waitForHolderLocked(ctx, k, holder, timer); err != nil {
			s.mu.Unlock()
			stopTimer(timer)
			return 0, err
		}
	}
	// A new prepare that writes needs room for its record and, at commit, its writes.
	if len(ops) > 0 {
		if err := s.admitWriteLocked(2 * opBytes(ops)); err != nil {
			leave()
			return 0, err
		}
	}
	// The minimum commit timestamp is fixed now, under the locks: every read served so far is
	// below it, and from now on a read at or above it waits for this transaction.
	p.minCommitTS = max(s.mu.maxTS, p.startTS) + 1
	p.owner.readFrom = p.minCommitTS
	s.acquireLocked(p.keys, &p.owner)
	s.mu.prepared[rec.TxnID] = p
	s.grantAroundLocked(p.keys)
	s.mu.Unlock()
	stopTimer(timer)

	if err := s.writePrepare(ctx, p, cmps); err != nil {
		_, late := err.(*AbortedError)
		var cf *CompareFailedError
		s.mu.Lock()
		readPending := errors.As(err, &cf) && s.pendingLocked(cmps)
		s.releaseLocked(p.keys, &p.owner)
		delete(s.mu.prepared, rec.TxnID)
		if late {
			s.mu.finished.add(rec.TxnID)
		}
		close(p.busy)
		p.busy = nil
		s.mu.Unlock()
		if readPending {
			if err := s.waitSync(); err != nil {
				return 0, err
			}
		}
		return 0, err
	}
	err = s.waitSync()

	s.mu.Lock()
	if err == nil {
		p.phase = phasePrepared
		s.holdOrSpillLocked(p)
	} // else the store has failed: keep the locks, and waiters see the failure
	close(p.busy)
	p.busy = nil
	minCommitTS = p.minCommitTS
	s.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return minCommitTS, nil
}

// writePrepare checks that p may be prepared and writes its record. It does
// not wait for the sync.
func (s *Store) writePrepare(ctx context.Context, p *preparedTxn, cmps []Compare) error {
	id := p.owner.txnID
	txn := s.db.NewTransactionAt(math.MaxUint64, true)
	defer txn.Discard()
	pkey := prepareKey(id)

	if done, err := finishedHere(txn, id); err != nil {
		return err
	} else if done {
		return &AbortedError{TxnID: id, Reason: "it already finished here (late duplicate prepare)"}
	}
	if err := s.checkCompares(txn, cmps); err != nil {
		return err
	}
	if err := s.checkCommitFits(p); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("kv: prepare transaction %d: %w", id, err)
	}
	val := encodeRecord(&diskRecord{
		TxnID:        id,
		StartTS:      p.startTS,
		PreparedAt:   p.preparedAt,
		Ops:          p.ops,
		ReadKeys:     p.readKeys,
		Participants: p.participants,
		MinCommitTS:  p.minCommitTS,
		Parallel:     p.parallel,
		Digest:       p.digest,
	})
	if err := setValue(txn, pkey, val); err != nil {
		return fmt.Errorf("kv: prepare transaction %d: write record: %w", id, err)
	}
	if err := s.commitAt(txn, p.startTS, nil); err != nil {
		return fmt.Errorf("kv: prepare transaction %d: write record: %w", id, err)
	}
	return nil
}

// checkCommitFits builds, without committing, the Badger transaction that
// Commit will write, so that Badger's size limits are hit here (a no vote)
// rather than after the coordinator has decided to commit.
func (s *Store) checkCommitFits(p *preparedTxn) error {
	txn := s.db.NewTransactionAt(math.MaxUint64, true)
	defer txn.Discard()
	err := s.writeOps(txn, p.ops)
	if err == nil {
		err = txn.Delete(prepareKey(p.owner.txnID))
	}
	if err == nil {
		err = txn.Set(outcomeKey(p.owner.txnID), committedMarker(math.MaxUint64-1))
	}
	if err != nil {
		return invalidf("prepare transaction %d: its commit cannot be written in one Badger transaction: %w", p.owner.txnID, err)
	}
	return nil
}

// claim begins a Commit or Abort of txnID: it registers the operation (enterLocked), waits
// until no other call is doing I/O for the transaction, and marks it busy for the caller.
// On error nothing is registered and s.mu is released. Otherwise the caller must call s.exit;
// it returns (nil, nil), with s.mu released, if the transaction is not prepared here
// (remembering the id as finished), and the transaction with s.mu held if it is.
func (s *Store) claim(ctx context.Context, txnID uint64) (*preparedTxn, error) {
	s.mu.Lock()
	if err := s.enterLocked(); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	for {
		if err := s.mu.failed; err != nil {
			s.mu.Unlock()
			s.exit()
			return nil, err
		}
		p := s.mu.prepared[txnID]
		if p == nil {
			s.mu.finished.add(txnID)
			s.mu.Unlock()
			return nil, nil
		}
		if p.busy == nil {
			p.busy = make(chan struct{})
			return p, nil
		}
		ch := p.busy
		s.mu.Unlock()
		if err := s.waitChan(ctx, ch, fmt.Sprintf("transaction %d", txnID)); err != nil {
			s.exit()
			return nil, err
		}
		s.mu.Lock()
	}
}

// unclaim ends a failed Commit or Abort in phase ph (prepared after a Commit, aborting after
// an Abort): another call may try again.
func (s *Store) unclaim(p *preparedTxn, ph prepPhase) {
	s.mu.Lock()
	p.phase = ph
	close(p.busy)
	p.busy = nil
	s.mu.Unlock()
}

// finishLocked releases a committed or aborted transaction's locks (waking
// waiting readers and writers) and forgets it.
func (s *Store) finishLocked(p *preparedTxn) {
	s.mu.heldValueBytes -= p.held
	s.releaseLocked(p.keys, &p.owner)
	delete(s.mu.prepared, p.owner.txnID)
	s.mu.finished.add(p.owner.txnID)
	close(p.busy)
	p.busy = nil
}

// Commit is the second phase for a transaction decided committed: it writes
// the prepared ops at commitTS and deletes the prepare record in one Badger
// transaction (atomic across crashes), waits for a group sync, raises maxTS
// to commitTS, and then releases the locks, waking waiting readers. When it
// returns nil the writes are durable and visible to reads at or above
// commitTS. commitTS must be at least the minimum Prepare returned (after a
// restart: above StartTS); otherwise nothing happens and the error wraps
// ErrInvalidArgument.
//
// Commit is idempotent: for a transaction already committed or aborted here
// it returns nil. For one this store never prepared it returns an error
// wrapping ErrNotPrepared (the store lost a prepare record, or the caller
// has a bug) and writes nothing. A Commit arriving while this transaction's Prepare, Commit or
// Abort is still writing waits for it (bounded by ctx). Errors other than
// ErrInvalidArgument leave the transaction prepared; retrying is safe.
//
// Cost: one Badger write transaction with every op, one share of a group
// sync; one more write and sync when commitTS passes the durable maxTS mark; one read
// of the prepare record if the transaction did not keep its writes (prepared.go).
func (s *Store) Commit(ctx context.Context, txnID, commitTS uint64) error {
	return s.commit(ctx, txnID, commitTS, true)
}

// CommitNoSync is Commit without waiting for the group sync: the writes and
// the deletion of the prepare record are applied atomically and visible when
// it returns, and the locks are released, but they become durable only with
// the next sync round (Sync, or any later call that waits for one, since a
// round covers every earlier write). Until then a crash of the machine (not
// of the process: Badger's write-ahead log is in the page cache) can bring
// the transaction back prepared, to be committed again. So the coordinator
// must keep its decision until Sync has returned after this call. Readers
// may see the writes before they are durable; that is safe because the
// decision is durable and the same writes come back at the same timestamp.
func (s *Store) CommitNoSync(ctx context.Context, txnID, commitTS uint64) error {
	return s.commit(ctx, txnID, commitTS, false)
}

// Sync returns once a group-sync round that began after the call has
// completed: every write applied before it, CommitNoSync's included, is then
// durable.
func (s *Store) Sync(ctx context.Context) error {
	s.mu.Lock()
	if err := s.enterLocked(); err != nil {
		s.mu.Unlock()
		return err
	}
	s.mu.Unlock()
	defer s.exit()
	return s.waitSync()
}

func (s *Store) commit(ctx context.Context, txnID, commitTS uint64, sync bool) error {
	if commitTS == 0 || commitTS == math.MaxUint64 {
		return invalidf("commit transaction %d: commit timestamp %d out of range", txnID, commitTS)
	}
	p, err := s.claim(ctx, txnID)
	if err != nil {
		return err
	}
	defer s.exit()
	if p == nil {
		return s.checkFinished(txnID)
	}
	if p.phase == phaseAborting || commitTS < p.owner.readFrom {
		ph, min := p.phase, p.owner.readFrom
		close(p.busy)
		p.busy = nil
		s.mu.Unlock()
		if ph == phaseAborting {
			return invalidf("commit transaction %d: an abort of it has already begun", txnID)
		}
		return invalidf("commit transaction %d at %d: below its minimum commit timestamp %d", txnID, commitTS, min)
	}
	p.phase = phaseCommitting
	// Readers below commitTS cannot see these writes; let them through.
	p.owner.readFrom = commitTS
	needMark := commitTS > s.mu.mark
	s.mu.Unlock()

	if err := s.commitHeld(p, commitTS, needMark, sync); err != nil {
		s.unclaim(p, phasePrepared)
		return err
	}
	s.mu.Lock()
	if commitTS > s.mu.maxTS {
		s.mu.maxTS = commitTS
	}
	s.finishLocked(p)
	s.mu.Unlock()
	return nil
}

// everPrepared reports whether txn sees any version of id's prepare record, even a deletion
// marker: a record, once committed or aborted, leaves that tombstone (and an outcome marker),
// so a store that finds one prepared the transaction before.
func everPrepared(txn *badger.Txn, id uint64) bool {
	it := txn.NewKeyIterator(prepareKey(id), badger.IteratorOptions{})
	defer it.Close()
	it.Rewind()
	return it.Valid()
}

// checkFinished tells a Commit of a transaction that is not prepared here whether it was
// committed here (nil: the Commit is a repeat), or never prepared or aborted here
// (ErrNotPrepared).
func (s *Store) checkFinished(txnID uint64) error {
	txn := s.db.NewTransactionAt(math.MaxUint64, false)
	defer txn.Discard()
	r, found, recordGone, err := readOutcome(txn, txnID)
	switch {
	case err != nil:
		return err
	case found && r.State == ResolvedAborted:
		return fmt.Errorf("kv: commit transaction %d: it was aborted here: %w", txnID, ErrNotPrepared)
	case !found && !recordGone:
		return fmt.Errorf("kv: commit transaction %d: no prepare record of it was ever written here: %w", txnID, ErrNotPrepared)
	}
	return nil
}

func (s *Store) commitHeld(p *preparedTxn, commitTS uint64, needMark, sync bool) error {
	if needMark {
		if err := s.ensureMark(commitTS); err != nil {
			return err
		}
	}
	id := p.owner.txnID
	txn := s.db.NewTransactionAt(math.MaxUint64, true)
	defer txn.Discard()
	ops, err := s.preparedOps(txn, p)
	if err != nil {
		return fmt.Errorf("kv: commit transaction %d: %w", id, err)
	}
	if err := s.writeOps(txn, ops); err != nil {
		return fmt.Errorf("kv: commit transaction %d: %w", id, err)
	}
	if err := txn.Delete(prepareKey(id)); err != nil {
		return fmt.Errorf("kv: commit transaction %d: delete prepare record: %w", id, err)
	}
	if err := txn.Set(outcomeKey(id), committedMarker(commitTS)); err != nil {
		return fmt.Errorf("kv: commit transaction %d: record outcome: %w", id, err)
	}
	if err := s.commitAt(txn, commitTS, nil); err != nil {
		return fmt.Errorf("kv: commit transaction %d at %d: %w", id, commitTS, err)
	}
	if !sync {
		return nil
	}
	return s.waitSync()
}

// Abort is the second phase for a transaction decided aborted: it deletes
// the prepare record (if any) and records the outcome "aborted", waits for
// a group sync, releases the locks and remembers the id as finished, so a
// late duplicate Prepare is refused.
// When it returns nil the abort is durable. Abort is idempotent: for a
// transaction not prepared here it only remembers the id. An Abort
// arriving while this transaction's Prepare is still writing waits for it
// (bounded by ctx) and then aborts it. On error the transaction stays
// prepared; retrying is safe.
//
// Cost: one small Badger write and one share of a group sync.
func (s *Store) Abort(ctx context.Context, txnID uint64) error {
	p, err := s.claim(ctx, txnID)
	if err != nil {
		return err
	}
	defer s.exit()
	if p == nil {
		return nil
	}
	// No writes will come from this transaction: no reader needs to wait,
	// and a Commit is refused from now on.
	p.phase = phaseAborting
	p.owner.readFrom = noWait
	s.mu.Unlock()

	if err := s.abortHeld(p); err != nil {
		s.unclaim(p, phaseAborting)
		return err
	}
	s.mu.Lock()
	s.finishLocked(p)
	s.mu.Unlock()
	return nil
}

func (s *Store) abortHeld(p *preparedTxn) error {
	id := p.owner.txnID
	txn := s.db.NewTransactionAt(math.MaxUint64, true)
	defer txn.Discard()
	if err := txn.Delete(prepareKey(id)); err != nil {
		return fmt.Errorf("kv: abort transaction %d: delete prepare record: %w", id, err)
	}
	if err := txn.Set(outcomeKey(id), abortedMarker(time.Now())); err != nil {
		return fmt.Errorf("kv: abort transaction %d: record outcome: %w", id, err)
	}
	// Versioned just above the record, so the deletion shadows it.
	if err := s.commitAt(txn, p.startTS+1, nil); err != nil {
		return fmt.Errorf("kv: abort transaction %d: delete prepare record: %w", id, err)
	}
	return s.waitSync()
}
