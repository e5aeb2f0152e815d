package kv

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// OpKind says what an Op does.
type OpKind uint8

// Op kinds.
const (
	// OpPut sets Key to Value (an empty Value is stored as such and read
	// back with Found set).
	OpPut OpKind = 1
	// OpDelete removes Key: reads at or after the commit timestamp see it
	// missing, with version 0. Value is ignored.
	OpDelete OpKind = 2
)

// Op is one write of a transaction. Within one Apply or Prepare, when
// several ops name the same key, the last one wins and the key is locked once.
type Op struct {
	Kind  OpKind
	Key   []byte
	Value []byte
}

// CompareKind says what a Compare checks.
type CompareKind uint8

// Compare kinds.
const (
	CmpValueEqual     CompareKind = 1 // key exists and its value equals Compare.Value
	CmpVersionEqual   CompareKind = 2 // latest version (0 if missing) == Compare.Version
	CmpVersionLess    CompareKind = 3 // latest version (0 if missing) < Compare.Version
	CmpVersionGreater CompareKind = 4 // latest version (0 if missing) > Compare.Version
	CmpExists         CompareKind = 5 // key exists
	CmpMissing        CompareKind = 6 // key is missing (never written, or deleted)
)

// Compare is checked against the latest committed version of Key: a missing
// (never written or deleted) key has version 0 and no value. Compares are
// evaluated while their keys are locked by the calling Apply or Prepare, so
// for a prepared transaction they keep holding until it commits or aborts.
type Compare struct {
	Kind    CompareKind
	Key     []byte
	Value   []byte
	Version uint64
}

// Value is the result of reading one key. Key is the caller's slice; Value
// is a fresh copy (non-nil when Found); Version is the commit timestamp of
// the version read, 0 when not Found.
type Value struct {
	Key     []byte
	Value   []byte
	Version uint64
	Found   bool
}

// Options configure Open.
type Options struct {
	// Dir is the directory of the Badger database; required. It is created
	// if missing.
	Dir string
	// LockWait bounds how long a Get or an Apply (and a Prepare meeting a
	// one-phase Apply) waits for a lock before giving up; 0 means 2s.
	LockWait time.Duration
	// Logger receives recovery and failure reports; nil means slog.Default().
	Logger *slog.Logger
	// OnSync, if set, is called with the duration of every group-sync round
	// (for an fsync-latency histogram). It runs on the syncer goroutine and
	// must not block.
	OnSync func(time.Duration)
	// MaxTSBatch is how far above the timestamp that requires it the
	// persisted maxTS high-water mark is set, so that one durable write
	// covers that many timestamps; 0 means 1,000,000.
	MaxTSBatch uint64
	// MemoryBytes is the memory budget of the store's Badger database: its memtables are sized
	// from it, and the rest of what Badger holds is bounded with them (memory.go says how);
	// 0 means DefaultMemoryBytes (128 MiB). Open refuses a budget below Badger's minimum
	// (about 42 MiB); MinMemoryBytes is the budget that transaction limits need.
	MemoryBytes int64
	// MemTableSize, if set, overrides the memtable size MemoryBytes gives (tests set small
	// ones, to rotate and flush often). It must be at least 7 MiB, since Badger caps a write
	// batch at 15% of it and a value of 1 MiB must fit.
	MemTableSize int64
	// ValueLogFileSize is the size at which Badger starts a new value-log file (values of
	// 1 MiB or more live there); 0 means Badger's 1 GiB.
	ValueLogFileSize int64
	// MaxReadBytes bounds the key and value bytes one Get returns (a key listed twice counts
	// twice); past it Get fails with ErrTooLarge. 0 means no bound.
	MaxReadBytes int
	// QuotaBytes is the most bytes Dir may take on disk: at it, new writes are refused with
	// *SpaceExceededError until the GC frees space (quota.go); 0 means no quota.
	QuotaBytes int64
	// ReclaimEvery is the least time between two reclaims of disk space while over the quota
	// (quota.go): the GC retention, after which a reclaim can drop every version written
	// before the last one; 0 means 10 minutes.
	ReclaimEvery time.Duration
}

const (
	defaultLockWait   = 2 * time.Second
	defaultMaxTSBatch = 1_000_000
	// defaultReclaimEvery is the default GC retention.
	defaultReclaimEvery = 10 * time.Minute
	// finishedMemory is how many finished transaction ids are remembered to
	// refuse late duplicate Prepares; older ones are caught by the durable
	// outcome markers.
	finishedMemory = 100_000
)

// Store is one shard's storage engine: MVCC versions of user keys in a
// managed-mode Badger DB, an in-memory lock table, durable prepare records
// for two-phase commit, and the maxTS high-water mark for snapshot
// stability. All methods are safe for concurrent use. See the package
// documentation for the durability and ordering guarantees.
type Store struct {
	db       *badger.DB
	dir      string
	syncer   *GroupSyncer
	log      *slog.Logger
	lockWait time.Duration
	tsBatch  uint64
	maxRead  int

	closing    chan struct{} // closed when Close begins; wakes all waiters
	isClosing  atomic.Bool
	inflight   atomic.Int64  // operations between enterLocked and exit
	discarded  atomic.Uint64 // entries Badger's compactions dropped since Open
	drained    chan struct{} // capacity 1: inflight reached 0 while closing
	closedDone chan struct{} // closed when Close has finished
	closeErr   error

	quota        int64         // Options.QuotaBytes
	reclaimEvery time.Duration // Options.ReclaimEvery
	watchDone    chan struct{} // closed when watchSpace has returned
	checkMu      sync.Mutex    // serialises checkSpace
	gate         sync.RWMutex  // held to write (commitAt); a reclaim takes it to hold writers back

	// mu guards the lock table and the store's counters. A method whose name ends in
	// Locked is called with mu held and returns with it held; one that waits drops it
	// meanwhile, and its comment says so.
	mu struct {
		sync.Mutex
		locks  map[string]*lockOwner
		queues map[string][]*applyWaiter // Applies waiting for a key, oldest first
		// prepWaiting counts the Prepares waiting for an Apply to release a key.
		prepWaiting map[string]int
		// pending lists, per key, the Applies whose writes of it are in Badger but whose
		// sync round has not finished: reads at or above their commit timestamps wait.
		pending  map[string][]*lockOwner
		prepared map[uint64]*preparedTxn
		// heldValueBytes is the size of the values prepared transactions keep in memory, at
		// most maxHeldValueBytes (prepared.go).
		heldValueBytes int64
		finished       *recentSet
		// maxTS is the highest timestamp read at or committed at (or chosen
		// as a commit timestamp by a running Apply).
		maxTS uint64
		// mark is the durable high-water mark: no timestamp above it has
		// been served. Invariant for every served ts: ts <= mark.
		mark   uint64
		markCh chan struct{} // non-nil while a mark write is in flight
		closed bool
		// safePoint is the durable GC safe point: reads below it are refused, and Badger may
		// drop every version older than the newest at or below it (SetSafePoint).
		safePoint uint64
		// reading counts the reads in progress by timestamp, so that SetSafePoint waits for
		// those below the new safe point before Badger may drop what they read.
		reading map[uint64]int
		// sweeping is set while a sweep of stale chunks runs (chunks.go); sweptAt is when
		// the last one began.
		sweeping bool
		sweptAt  time.Time
		space    spaceState // the disk quota (quota.go)
		failed   error      // set after a failed sync; every operation returns it
	}
}

// Open opens the store in opts.Dir, creating it if needed, and recovers: maxTS
// starts at the persisted high-water mark, and every prepare record found
// re-takes its locks, so the transaction is prepared again (Recovered) and
// waits for Commit or Abort. Open fails if a prepare record cannot be decoded.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, invalidf("open: Options.Dir is empty")
	}
	s := &Store{
		dir:          opts.Dir,
		log:          opts.Logger,
		lockWait:     opts.LockWait,
		tsBatch:      opts.MaxTSBatch,
		maxRead:      opts.MaxReadBytes,
		closing:      make(chan struct{}),
		drained:      make(chan struct{}, 1),
		closedDone:   make(chan struct{}),
		quota:        opts.QuotaBytes,
		reclaimEvery: opts.ReclaimEvery,
		watchDone:    make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.lockWait <= 0 {
		s.lockWait = defaultLockWait
	}
	if s.tsBatch == 0 {
		s.tsBatch = defaultMaxTSBatch
	}
	if s.reclaimEvery <= 0 {
		s.reclaimEvery = defaultReclaimEvery
	}
	s.mu.locks = make(map[string]*lockOwner)
	s.mu.queues = make(map[string][]*applyWaiter)
	s.mu.prepWaiting = make(map[string]int)
	s.mu.pending = make(map[string][]*lockOwner)
	s.mu.prepared = make(map[uint64]*preparedTxn)
	s.mu.finished = newRecentSet(finishedMemory)
	s.mu.reading = map[uint64]int{}

	db, syncer, err := openSynced(opts.Dir, true, badgerSizes{memoryBytes: opts.MemoryBytes, memTableSize: opts.MemTableSize, valueLogFileSize: opts.ValueLogFileSize}, quietLogger{discarded: &s.discarded}, opts.OnSync)
	if err != nil {
		return nil, err
	}
	s.db, s.syncer = db, syncer
	if err := s.recover(); err != nil {
		_ = CloseSyncedBadger(db, syncer) // the recovery error is the one worth reporting
		return nil, err
	}
	s.measure() // a store reopened over its quota refuses writes from the start
	go s.watchSpace()
	return s, nil
}

// recover loads the high-water mark and the prepare records.
func (s *Store) recover() error {
	txn := s.db.NewTransactionAt(math.MaxUint64, false)
	defer txn.Discard()

	item, err := txn.Get(markKey)
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
	case err != nil:
		return fmt.Errorf("kv: open %s: read maxTS mark: %w", s.dir, err)
	default:
		s.mu.mark = item.Version()
		s.mu.maxTS = s.mu.mark
	}
	if err := s.loadSafePoint(txn); err != nil {
		return err
	}

	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagPrepare}, PrefetchValues: false})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		rec, err := readRecord(s.db, item)
		if err != nil {
			return fmt.Errorf("kv: open %s: %w", s.dir, err)
		}
		p := newPrepared(rec.TxnID, rec.StartTS, rec.Ops, rec.ReadKeys, rec.Participants, rec.PreparedAt)
		p.recovered = true
		p.parallel = rec.Parallel
		p.digest = rec.Digest
		p.phase = phasePrepared
		p.owner.readFrom, p.minCommitTS = rec.MinCommitTS, rec.MinCommitTS
		if rec.MinCommitTS == 0 { // a version 1 record: the vote's minimum is not known
			p.owner.readFrom = rec.StartTS + 1
			p.minCommitTS = max(s.mu.maxTS, rec.StartTS) + 1
		}
		if k, o := s.holderLocked(p.keys); o != nil {
			return fmt.Errorf("kv: open %s: prepared transactions %d and %d both lock key %s: %w",
				s.dir, o.txnID, rec.TxnID, quoteKey([]byte(k)), errCorrupt)
		}
		s.acquireLocked(p.keys, &p.owner)
		s.mu.prepared[rec.TxnID] = p
		s.holdOrSpillLocked(p)
	}
	if n := len(s.mu.prepared); n > 0 {
		s.log.Info("kv: recovered prepared transactions", "dir", s.dir, "count", n, "locks", len(s.mu.locks), "max_ts", s.mu.maxTS)
	}
	return nil
}

// Close waits for running operations to finish (operations waiting for a
// lock or for another operation give up with ErrClosed; a reclaim of disk
// space in progress, quota.go, runs to its end), closes Badger,
// which flushes memtables to disk, syncs the directory and stops the group
// syncer (CloseSyncedBadger). Prepared
// transactions stay prepared on disk and are recovered by the next Open.
// Close is idempotent: later calls wait for the first and return its result.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		<-s.closedDone
		return s.closeErr
	}
	s.mu.closed = true
	s.isClosing.Store(true)
	s.mu.Unlock()
	close(s.closing)
	<-s.watchDone
	for s.inflight.Load() != 0 {
		<-s.drained
	}
	if err := CloseSyncedBadger(s.db, s.syncer); err != nil {
		s.closeErr = fmt.Errorf("kv: close %s: %w", s.dir, err)
	}
	close(s.closedDone)
	return s.closeErr
}

// enterLocked registers a running operation, or refuses it if the store is
// closed or failed. Every successful call must be paired with exit.
func (s *Store) enterLocked() error {
	if s.mu.closed {
		return ErrClosed
	}
	if s.mu.failed != nil {
		return s.mu.failed
	}
	s.inflight.Add(1)
	return nil
}

// exit ends an operation registered by enterLocked.
func (s *Store) exit() {
	if s.inflight.Add(-1) == 0 && s.isClosing.Load() {
		select {
		case s.drained <- struct{}{}:
		default:
		}
	}
}

// fail puts the store in the failed state after a sync error: a write may
// have been lost, so every later operation returns err. The caller keeps its
// locks, so no reader can see the writes whose durability is unknown.
func (s *Store) fail(err error) error {
	s.mu.Lock()
	if s.mu.failed == nil {
		s.mu.failed = fmt.Errorf("kv: store failed, reopen to recover: %w", err)
		s.log.Error("kv: sync failed; refusing all further operations", "dir", s.dir, "err", err)
	}
	err = s.mu.failed
	s.mu.Unlock()
	return err
}

// waitSync waits for the group sync that makes the caller's write durable.
// The write has already been applied, so this does not honour the caller's
// context: releasing locks before the sync would expose data that might
// not survive a crash, and a sync round is bounded by the disk. A failed
// sync fails the store.
func (s *Store) waitSync() error {
	if err := s.syncer.Sync(context.Background()); err != nil {
		return s.fail(err)
	}
	return nil
}

// ensureMark makes the durable high-water mark at least ts. Concurrent
// callers share one write: one of them writes max(ts, maxTS)+tsBatch and
// waits for a group sync, the others wait for it.
func (s *Store) ensureMark(ts uint64) error {
	s.mu.Lock()
	for s.mu.mark < ts {
		if ch := s.mu.markCh; ch != nil {
			s.mu.Unlock()
			<-ch // bounded by one Badger write and one sync round
			s.mu.Lock()
			continue
		}
		target := max(ts, s.mu.maxTS)
		if target > math.MaxUint64-s.tsBatch {
			target = math.MaxUint64 - 1
		} else {
			target += s.tsBatch
		}
		ch := make(chan struct{})
		s.mu.markCh = ch
		s.mu.Unlock()

		err := s.writeMark(target)

		s.mu.Lock()
		s.mu.markCh = nil
		close(ch)
		if err != nil {
			s.mu.Unlock()
			return err
		}
		s.mu.mark = max(s.mu.mark, target)
	}
	s.mu.Unlock()
	return nil
}

// writeMark durably records mark as the high-water mark, at version mark.
func (s *Store) writeMark(mark uint64) error {
	txn := s.db.NewTransactionAt(math.MaxUint64, true)
	defer txn.Discard()
	if err := txn.Set(markKey, binary.BigEndian.AppendUint64(nil, mark)); err != nil {
		return fmt.Errorf("kv: persist maxTS mark %d: %w", mark, err)
	}
	if err := s.commitAt(txn, mark, nil); err != nil {
		return fmt.Errorf("kv: persist maxTS mark %d: %w", mark, err)
	}
	return s.waitSync()
}

// Get reads keys at timestamp ts and returns one Value per key, in order:
// for each key the latest version committed at or below ts.
//
// It first raises maxTS to ts, atomically with checking the lock table, so
// no write can later land at or below ts on this store. A key locked by a
// transaction that could still commit at or below ts makes the read wait
// for the release and check again: a one-phase Apply whose commit timestamp
// is <= ts, or a prepared transaction whose minimum commit timestamp is
// <= ts (fixed when its Prepare took the locks). Locks of transactions
// bound to commit above ts are ignored: every prepared transaction with
// StartTS >= ts, and one whose Prepare took its locks after this read
// raised maxTS to ts. If a lock is still held after Options.LockWait, Get returns
// *LockedError; ctx ends the wait early. When ts is above the durable
// high-water mark, Get first makes a higher mark durable (one small write
// and sync per Options.MaxTSBatch timestamps), so the guarantee survives a
// crash.
//
// A key listed more than once is read once. Past Options.MaxReadBytes, Get
// fails with ErrTooLarge.
//
// Cost: one mutex acquisition and one map lookup per key, then one Badger
// point read per distinct key; no goroutines. ts must be a real timestamp
// (math.MaxUint64 is reserved).
func (s *Store) Get(ctx context.Context, keys [][]byte, ts uint64) ([]Value, error) {
	if ts == math.MaxUint64 {
		return nil, invalidf("get at timestamp %d", ts)
	}
	s.mu.Lock()
	if err := s.enterLocked(); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	defer s.exit()
	if err := s.beginReadLocked(ts); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	defer s.endRead(ts)
	if ts > s.mu.maxTS {
		s.mu.maxTS = ts
	}
	var timer *time.Timer
	for {
		k, o := s.readBlockerLocked(keys, ts)
		if o == nil {
			break
		}
		var err error
		timer, err = s.waitLocked(ctx, o, timer)
		if err != nil {
			s.mu.Unlock()
			stopTimer(timer)
			if err == errLockWait {
				return nil, &LockedError{Key: bytes.Clone(k), TxnID: o.txnID}
			}
			return nil, err
		}
	}
	needMark := ts > s.mu.mark
	s.mu.Unlock()
	stopTimer(timer)
	if needMark {
		if err := s.ensureMark(ts); err != nil {
			return nil, err
		}
	}

	txn := s.db.NewTransactionAt(ts, false)
	defer txn.Discard()
	out := make([]Value, len(keys))
	var seen map[string]int // a key's first place, when a key may be listed twice
	if len(keys) > 1 {
		seen = make(map[string]int, len(keys))
	}
	var scratch [64]byte
	total := 0
	for i, k := range keys {
		if j, ok := seen[string(k)]; ok {
			out[i] = out[j] // read once; the reply shares the value
			out[i].Key = k
		} else {
			v, err := s.readLatest(txn, append(append(scratch[:0], tagData), k...))
			if err != nil {
				return nil, fmt.Errorf("kv: get %s at %d: %w", quoteKey(k), ts, err)
			}
			v.Key = k
			out[i] = v
			if seen != nil {
				seen[string(k)] = i
			}
		}
		if total += len(k) + len(out[i].Value); s.maxRead > 0 && total > s.maxRead {
			return nil, fmt.Errorf("%w: a get of %d keys at %d reaches %d bytes at key %d of %d, over the limit of %d",
				ErrTooLarge, len(keys), ts, total, i+1, len(keys), s.maxRead)
		}
	}
	return out, nil
}

// readLatest reads dkey (a data key) in txn, with a copy of its value.
func (s *Store) readLatest(txn *badger.Txn, dkey []byte) (Value, error) {
	item, err := txn.Get(dkey)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return Value{}, nil
	}
	if err != nil {
		return Value{}, err
	}
	v := Value{Version: item.Version(), Found: true}
	if v.Value, err = valueOf(s.db, item); err != nil {
		return Value{}, err
	}
	if v.Value == nil {
		v.Value = []byte{}
	}
	return v, nil
}

// checkCompares evaluates cmps in txn (which reads at math.MaxUint64, so
// against the latest committed versions). The first failing one is
// returned as a *CompareFailedError.
func (s *Store) checkCompares(txn *badger.Txn, cmps []Compare) error {
	if len(cmps) == 0 {
		return nil
	}
	var scratch [64]byte
	for i := range cmps {
		c := &cmps[i]
		actual, err := s.readLatest(txn, append(append(scratch[:0], tagData), c.Key...))
		if err != nil {
			return fmt.Errorf("kv: compare %d: read %s: %w", i, quoteKey(c.Key), err)
		}
		var ok bool
		switch c.Kind {
		case CmpValueEqual:
			ok = actual.Found && bytes.Equal(actual.Value, c.Value)
		case CmpVersionEqual:
			ok = actual.Version == c.Version
		case CmpVersionLess:
			ok = actual.Version < c.Version
		case CmpVersionGreater:
			ok = actual.Version > c.Version
		case CmpExists:
			ok = actual.Found
		case CmpMissing:
			ok = !actual.Found
		}
		if ok {
			continue
		}
		actual.Key = c.Key
		return &CompareFailedError{Index: i, Compare: *c, Actual: actual}
	}
	return nil
}

// validate checks op and compare kinds.
func validate(what string, txnID uint64, ops []Op, cmps []Compare) error {
	for i := range ops {
		if k := ops[i].Kind; k != OpPut && k != OpDelete {
			return invalidf("%s transaction %d: op %d has unknown kind %d", what, txnID, i, k)
		}
	}
	for i := range cmps {
		if k := cmps[i].Kind; k < CmpValueEqual || k > CmpMissing {
			return invalidf("%s transaction %d: compare %d has unknown kind %d", what, txnID, i, k)
		}
	}
	return nil
}

// writeOps adds ops to txn as data writes. Keys are copied into one buffer,
// which Badger references until the transaction ends.
func (s *Store) writeOps(txn *badger.Txn, ops []Op) error {
	total := 0
	for i := range ops {
		total += 1 + len(ops[i].Key)
	}
	buf := make([]byte, 0, total)
	for i := range ops {
		start := len(buf)
		buf = append(buf, tagData)
		buf = append(buf, ops[i].Key...)
		dkey := buf[start:len(buf):len(buf)]
		var err error
		if ops[i].Kind == OpDelete {
			err = txn.Delete(dkey)
		} else {
			err = setValue(txn, dkey, ops[i].Value)
		}
		if err != nil {
			return fmt.Errorf("op %d on %s: %w", i, quoteKey(ops[i].Key), err)
		}
	}
	return nil
}

// Stats is a point-in-time summary of a Store.
type Stats struct {
	LocksHeld int    // keys locked (by prepared transactions and running Applies)
	Prepared  int    // prepared transactions, including ones whose Commit or Abort is running
	MaxTS     uint64 // highest timestamp read at or committed at
	// DiskBytes is what the store's directory takes on disk as the quota counts it: measured
	// about once a second (DiskUsage), plus the keys and values of the writes admitted since.
	// LSMBytes and VlogBytes are the LSM tables and the value log, as last measured.
	DiskBytes, LSMBytes, VlogBytes int64
	QuotaBytes                     int64  // Options.QuotaBytes (0: none)
	SpaceAlarm                     bool   // at or over the quota: new writes are refused
	SafePoint                      uint64 // the GC safe point (SetSafePoint)
	// Discarded counts the entries Badger's compactions dropped since Open: versions no read
	// may see any more, below the safe point, and deletions below it.
	Discarded uint64
}

// Stats returns current counters. Cost: one mutex acquisition; sizes are
// those of the last measurement. After Close the sizes are zero.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	st := Stats{LocksHeld: len(s.mu.locks), MaxTS: s.mu.maxTS, SafePoint: s.mu.safePoint, Discarded: s.discarded.Load(),
		QuotaBytes: s.quota, SpaceAlarm: s.mu.space.alarm}
	for _, p := range s.mu.prepared {
		if p.phase != phasePreparing {
			st.Prepared++
		}
	}
	if !s.mu.closed {
		u := s.mu.space.used
		st.DiskBytes, st.LSMBytes, st.VlogBytes = s.usedLocked(), u.LSM, u.Vlog
	}
	s.mu.Unlock()
	return st
}
