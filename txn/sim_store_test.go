package txn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/kvtx/kvtx/kv"
)

// simStore is the simulator's shard: an in-memory Storage with the same contract as kv.Store,
// split into what a crash keeps (versions, prepare records with their minimum commit
// timestamps, outcome markers, the maxTS mark) and what a crash loses (locks, maxTS, the
// memory of ids aborted before they were prepared, and every write not yet synced). As in
// kv.Store, Prepare, Commit and Abort sync before they return, while an Apply writes, releases
// its locks and only then waits for its sync round: its writes are pending meanwhile, visible
// to later writers and compares but taken back by a crash, and other calls may run before
// the round (syncPoint). A reply that depends on a pending write (a read at or above it, a
// failed compare that read it, a compare-only success) waits for a round too. The simulator
// may crash the node before or after any write and at any sync point, by panicking with
// simCrash.
//
// The model has no page cache, so every crash is a power loss: a restart drops everything not
// yet synced. (A process crash, kill -9, would keep Badger's unsynced writes in the kernel's
// page cache; power loss is the harsher case, and covers it.)
type simStore struct {
	sim  *sim
	name string

	// Durable.
	versions map[string][]simVersion // per key, ascending commit timestamp
	records  map[uint64]kv.PrepareRecord
	minTS    map[uint64]uint64        // each record's minimum commit timestamp, fixed with its locks
	cmpKeys  map[uint64][]string      // compare keys of each prepare record
	outcomes map[uint64]kv.Resolution // outcome markers: committed at T, or aborted
	abortAt  map[uint64]time.Time     // when each aborted marker was written
	finished map[uint64]bool          // prepare records deleted by a commit or an abort
	mark     uint64                   // persisted maxTS (kv.Store syncs a new mark before serving above it)
	// pending lists the writes applied since the last sync, oldest first: the Applies waiting
	// for their sync round and the commits of CommitNoSync. A crash before the next sync takes
	// them back; any sync makes them durable, since a sync round covers every earlier write.
	pending []simPending

	// Volatile: rebuilt by restart.
	maxTS     uint64
	locks     map[string]uint64 // key → prepared transaction holding it
	recovered map[uint64]bool
	forgotten map[uint64]bool // Aborts of transactions never prepared here (kv keeps them in memory)
}

type simVersion struct {
	ts      uint64
	value   []byte
	deleted bool
}

// simPending is one call's writes that are applied and visible but not yet durable.
type simPending struct {
	// apply marks a one-phase Apply's writes: until they are durable, reads at or above ts
	// wait, and a reply that depends on a compare that read them waits for a sync. A
	// CommitNoSync's writes need neither: its decision is durable, and a crash only makes the
	// transaction prepared again, to be committed again at the same timestamp.
	apply bool
	keys  []string
	ts    uint64
	undo  func()
}

// simObservation is a key's state that a shard replied on: what a Get returned at at, or the
// latest state a compare was checked against while the shard's maxTS was at (no later write
// of the key can land at or below at). The final durable history must hold exactly that
// state at at.
type simObservation struct {
	node   string
	what   string // "get", "apply" or "prepare"
	txnID  uint64
	key    string
	at     uint64
	got    kv.Value
	failed *kv.CompareFailedError // the reply of a failed compare, else nil
}

var _ Storage = (*simStore)(nil)

func newSimStore(s *sim, name string) *simStore {
	st := &simStore{sim: s, name: name, versions: map[string][]simVersion{}, records: map[uint64]kv.PrepareRecord{},
		cmpKeys: map[uint64][]string{}, outcomes: map[uint64]kv.Resolution{}, minTS: map[uint64]uint64{},
		abortAt: map[uint64]time.Time{}, finished: map[uint64]bool{}}
	st.restart()
	return st
}

// restart drops everything volatile and rebuilds it from the durable state, as kv.Open does
// after a power loss: the pending writes are taken back, newest first, each call's all at once.
func (st *simStore) restart() {
	for i := len(st.pending) - 1; i >= 0; i-- {
		p := st.pending[i]
		if p.apply {
			st.sim.stats.applyLost++
			st.sim.logf("%s: power loss takes back the pending apply at %d of %v", st.name, p.ts, p.keys)
		}
		p.undo()
	}
	st.pending = nil
	st.maxTS = st.mark
	st.locks = map[string]uint64{}
	st.recovered = map[uint64]bool{}
	st.forgotten = map[uint64]bool{}
	for id, rec := range st.records {
		for _, k := range st.recordKeys(id, rec) {
			st.locks[k] = id
		}
		st.recovered[id] = true
	}
}

func (st *simStore) recordKeys(id uint64, rec kv.PrepareRecord) []string {
	var keys []string
	for _, op := range rec.Ops {
		keys = append(keys, string(op.Key))
	}
	return append(keys, st.cmpKeys[id]...)
}

func (st *simStore) crashPoint(what string) {
	st.sim.maybeCrash(st.name, what)
}

// synced marks the point where a call's write becomes durable, with every earlier one.
func (st *simStore) synced() { st.pending = nil }

// gen is the incarnation of the node that is running the current call.
func (st *simStore) gen() int { return st.sim.nodes[st.name].gen }

// syncPoint is where a call waits for a sync round that covers its writes and every earlier
// one. The round takes a while and holds no locks, so other calls may run meanwhile (virtual
// time passes, with every event that falls due), and the power may fail during it; a crash
// before the round completes loses every pending write, and the call never replies.
func (st *simStore) syncPoint(what string, gen int) {
	s := st.sim
	if s.chance(30) {
		d := time.Duration(1+s.rng.Intn(500)) * time.Millisecond
		s.logf("%s: %s waits %v for its sync round", st.name, what, d)
		s.stats.syncWaits++
		if s.chance(15) {
			s.schedule(time.Duration(s.rng.Int63n(int64(d))), "power loss "+st.name, func() {
				if n := s.nodes[st.name]; s.faults && n.up && n.gen == gen {
					s.logf("power loss of %s during a sync round", st.name)
					s.crash(st.name)
				}
			})
		}
		s.advance(d)
		s.checkAlive(st.name, gen) // crashed meanwhile: the call ends without a reply
	}
	st.crashPoint(what + ".before-sync")
	st.synced()
}

// pendingApply reports whether one of keys has a pending Apply's write at or below ts.
func (st *simStore) pendingApply(keys []string, ts uint64) bool {
	for _, p := range st.pending {
		if !p.apply || p.ts > ts {
			continue
		}
		for _, k := range p.keys {
			for _, want := range keys {
				if k == want {
					return true
				}
			}
		}
	}
	return false
}

// observe records states the store is about to reply on, for the final check.
func (st *simStore) observe(what string, txnID, at uint64, vals []kv.Value, failed error) {
	var cf *kv.CompareFailedError
	errors.As(failed, &cf)
	for i, v := range vals {
		o := simObservation{node: st.name, what: what, txnID: txnID, key: string(v.Key), at: at, got: v}
		if cf != nil && i == len(vals)-1 {
			o.failed = cf
		}
		st.sim.observations = append(st.sim.observations, o)
	}
}

func (st *simStore) raise(ts uint64) {
	st.maxTS = max(st.maxTS, ts)
	st.mark = max(st.mark, st.maxTS)
}

// latest returns the newest version of key at or below ts.
func (st *simStore) latest(key string, ts uint64) (simVersion, bool) {
	vs := st.versions[key]
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].ts <= ts {
			return vs[i], !vs[i].deleted
		}
	}
	return simVersion{}, false
}

func (st *simStore) value(key string, ts uint64) kv.Value {
	v, ok := st.latest(key, ts)
	if !ok {
		return kv.Value{Key: []byte(key)}
	}
	return kv.Value{Key: []byte(key), Value: v.value, Version: v.ts, Found: true}
}

// Scan is Get over the keys of [start, end) that have any version, in order, in one page (the
// simulation's workload does not scan; the real store's paging is tested in kv).
func (st *simStore) Scan(ctx context.Context, start, end []byte, ts uint64, _ kv.ScanOptions) ([]kv.Value, bool, error) {
	var keys [][]byte
	for k := range st.versions {
		if k >= string(start) && (len(end) == 0 || k < string(end)) {
			keys = append(keys, []byte(k))
		}
	}
	for k := range st.locks {
		if k >= string(start) && (len(end) == 0 || k < string(end)) && st.versions[k] == nil {
			keys = append(keys, []byte(k))
		}
	}
	slices.SortFunc(keys, bytes.Compare)
	if len(keys) == 0 {
		return nil, false, nil
	}
	vals, err := st.Get(ctx, keys, ts)
	if err != nil {
		return nil, false, err
	}
	return slices.DeleteFunc(vals, func(v kv.Value) bool { return !v.Found }), false, nil
}

func (st *simStore) Get(_ context.Context, keys [][]byte, ts uint64) ([]kv.Value, error) {
	gen := st.gen()
	st.raise(ts)
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = string(k)
	}
	for {
		for _, k := range keys {
			if id, ok := st.locks[string(k)]; ok && st.minTS[id] <= ts {
				return nil, &kv.LockedError{Key: k, TxnID: id}
			}
		}
		// A pending Apply's write that this read would see: wait for its sync round. (Writes
		// applied meanwhile land above ts, since maxTS is already at ts.)
		if !st.pendingApply(names, ts) {
			break
		}
		st.sim.stats.readWaits++
		st.syncPoint("get", gen)
	}
	out := make([]kv.Value, len(keys))
	for i, k := range keys {
		out[i] = st.value(string(k), ts)
	}
	st.observe("get", 0, ts, out, nil)
	return out, nil
}

// simCompareHolds evaluates c against a, the latest state of its key, as kv.Store does.
func simCompareHolds(c kv.Compare, a kv.Value) bool {
	switch c.Kind {
	case kv.CmpValueEqual:
		return a.Found && bytes.Equal(a.Value, c.Value)
	case kv.CmpVersionEqual:
		return a.Version == c.Version
	case kv.CmpVersionLess:
		return a.Version < c.Version
	case kv.CmpVersionGreater:
		return a.Version > c.Version
	case kv.CmpExists:
		return a.Found
	case kv.CmpMissing:
		return !a.Found
	}
	return false
}

// check evaluates cmps against the latest versions and returns the states it read (up to the
// first failing compare) and whether any of them is a pending Apply's write.
func (st *simStore) check(cmps []kv.Compare) (read []kv.Value, readPending bool, err error) {
	for i, c := range cmps {
		a := st.value(string(c.Key), ^uint64(0))
		read = append(read, a)
		readPending = readPending || st.pendingApply([]string{string(c.Key)}, ^uint64(0))
		if !simCompareHolds(c, a) {
			err = &kv.CompareFailedError{Index: i, Compare: c, Actual: a}
			break
		}
	}
	if readPending {
		st.sim.stats.comparesReadPending++
	}
	return read, readPending, err
}

func (st *simStore) lockedByOther(id uint64, keys []string) error {
	for _, k := range keys {
		if h, ok := st.locks[k]; ok && h != id {
			return &kv.ConflictError{Key: []byte(k), TxnID: h}
		}
	}
	return nil
}

func (st *simStore) write(ops []kv.Op, ts uint64) {
	for _, op := range ops {
		k := string(op.Key)
		st.versions[k] = append(st.versions[k], simVersion{ts: ts, value: append([]byte(nil), op.Value...), deleted: op.Kind == kv.OpDelete})
		sort.Slice(st.versions[k], func(i, j int) bool { return st.versions[k][i].ts < st.versions[k][j].ts })
	}
}

// Apply models kv.Store.Apply: under the locks it checks the compares and writes at a fresh
// commit timestamp, then releases the locks and waits for its sync round, during which the
// writes are pending. A crash before the round takes them back, and the caller gets no reply.
// A reply that depends on a pending write the compares read (a failed compare, a
// compare-only success) waits for a sync round first.
func (st *simStore) Apply(_ context.Context, txnID, ts uint64, cmps []kv.Compare, ops []kv.Op) (uint64, error) {
	gen := st.gen()
	var keys []string
	for _, op := range ops {
		keys = append(keys, string(op.Key))
	}
	for _, c := range cmps {
		keys = append(keys, string(c.Key))
	}
	if err := st.lockedByOther(0, keys); err != nil {
		return 0, err
	}
	at := st.maxTS
	read, readPending, err := st.check(cmps)
	if err != nil {
		if readPending {
			st.syncPoint("apply.compare-failed", gen)
		}
		st.observe("apply", txnID, at, read, err)
		return 0, err
	}
	st.crashPoint("apply.before-write")
	commitTS := max(ts, st.maxTS+1)
	st.raise(commitTS)
	if len(ops) == 0 {
		if readPending {
			st.syncPoint("apply.compares-only", gen)
		}
		st.observe("apply", txnID, at, read, nil)
		return commitTS, nil
	}
	st.write(ops, commitTS)
	written := make([]string, len(ops))
	for i, op := range ops {
		written[i] = string(op.Key)
	}
	st.pending = append(st.pending, simPending{apply: true, keys: written, ts: commitTS, undo: func() { st.unwrite(written, commitTS) }})
	// The locks are released here: later calls may write these keys, compare them and read
	// below commitTS before this Apply's round is done.
	st.syncPoint("apply", gen)
	st.crashPoint("apply.after-sync")
	st.observe("apply", txnID, at, read, nil)
	return commitTS, nil
}

// unwrite removes the versions at ts of keys.
func (st *simStore) unwrite(keys []string, ts uint64) {
	for _, k := range keys {
		vs := st.versions[k]
		for i := len(vs) - 1; i >= 0; i-- {
			if vs[i].ts == ts {
				st.versions[k] = append(vs[:i:i], vs[i+1:]...)
				break
			}
		}
		if len(st.versions[k]) == 0 {
			delete(st.versions, k)
		}
	}
}

func (st *simStore) Prepare(_ context.Context, rec kv.PrepareRecord, cmps []kv.Compare) (uint64, error) {
	gen := st.gen()
	if _, ok := st.records[rec.TxnID]; ok {
		return st.minTS[rec.TxnID], nil
	}
	if _, done := st.outcomes[rec.TxnID]; done || st.finished[rec.TxnID] || st.forgotten[rec.TxnID] {
		return 0, &kv.AbortedError{TxnID: rec.TxnID, Reason: "already finished here (late duplicate prepare)"}
	}
	var cmpKeys []string
	for _, c := range cmps {
		cmpKeys = append(cmpKeys, string(c.Key))
	}
	keys := st.recordKeys(rec.TxnID, rec)
	keys = append(keys, cmpKeys...)
	if err := st.lockedByOther(rec.TxnID, keys); err != nil {
		return 0, err
	}
	at := st.maxTS
	read, readPending, err := st.check(cmps)
	if err != nil {
		// A no vote on a pending write: wait for a round (a yes vote's record sync covers it).
		if readPending {
			st.syncPoint("prepare.compare-failed", gen)
		}
		st.observe("prepare", rec.TxnID, at, read, err)
		return 0, err
	}
	st.crashPoint("prepare.before-record")
	min := max(st.maxTS, rec.StartTS) + 1
	st.minTS[rec.TxnID] = min
	st.records[rec.TxnID] = rec
	st.cmpKeys[rec.TxnID] = cmpKeys
	for _, k := range keys {
		st.locks[k] = rec.TxnID
	}
	st.synced()
	st.crashPoint("prepare.after-record")
	st.observe("prepare", rec.TxnID, at, read, nil)
	return min, nil
}

// finish releases a prepared transaction and leaves its outcome marker.
func (st *simStore) finish(id uint64, out kv.Resolution) {
	for _, k := range st.recordKeys(id, st.records[id]) {
		if st.locks[k] == id {
			delete(st.locks, k)
		}
	}
	delete(st.records, id)
	delete(st.cmpKeys, id)
	delete(st.minTS, id)
	delete(st.recovered, id)
	st.outcomes[id] = out
	st.finished[id] = true
	if out.State == kv.ResolvedAborted {
		st.abortAt[id] = st.sim.now
	}
}

func (st *simStore) Commit(_ context.Context, txnID, commitTS uint64) error {
	return st.commit(txnID, commitTS, true)
}

func (st *simStore) CommitNoSync(_ context.Context, txnID, commitTS uint64) error {
	return st.commit(txnID, commitTS, false)
}

// commit applies a prepared transaction. Without sync, the commit stays undoable: a crash
// before the next sync takes it back, and the transaction is prepared again.
func (st *simStore) commit(txnID, commitTS uint64, sync bool) error {
	rec, ok := st.records[txnID]
	if !ok {
		out, done := st.outcomes[txnID]
		switch {
		case !done && st.finished[txnID]:
			return nil // finished here, its marker since forgotten: a repeat, as kv answers
		case !done:
			// Commits go only where a yes vote came from, after its record was durable.
			st.sim.violation("%s: commit of %d, which this node never prepared", st.name, txnID)
			return fmt.Errorf("sim: commit of %d: %w", txnID, kv.ErrNotPrepared)
		case out.State == kv.ResolvedAborted:
			st.sim.violation("%s: commit of %d at %d, which this node aborted", st.name, txnID, commitTS)
			return fmt.Errorf("sim: commit of %d: %w", txnID, kv.ErrNotPrepared)
		case out.CommitTS != commitTS:
			st.sim.violation("%s: commit of %d at %d, which this node committed at %d", st.name, txnID, commitTS, out.CommitTS)
		}
		return nil
	}
	if commitTS < st.minTS[txnID] {
		st.sim.violation("%s: commit of %d at %d below its minimum commit timestamp %d", st.name, txnID, commitTS, st.minTS[txnID])
		return fmt.Errorf("%w: commit below minimum", kv.ErrInvalidArgument)
	}
	st.crashPoint(fmt.Sprintf("commit(sync=%v).before-apply", sync))
	cmpKeys, min := st.cmpKeys[txnID], st.minTS[txnID]
	st.write(rec.Ops, commitTS)
	st.finish(txnID, kv.Resolution{State: kv.ResolvedCommitted, CommitTS: commitTS})
	st.raise(commitTS)
	if sync {
		st.synced()
	} else {
		var written []string
		for _, op := range rec.Ops {
			written = append(written, string(op.Key))
		}
		st.pending = append(st.pending, simPending{keys: written, ts: commitTS, undo: func() {
			st.unwrite(written, commitTS)
			st.records[txnID] = rec
			st.cmpKeys[txnID] = cmpKeys
			st.minTS[txnID] = min
			delete(st.outcomes, txnID)
			delete(st.finished, txnID)
		}})
	}
	st.crashPoint(fmt.Sprintf("commit(sync=%v).after-apply", sync))
	return nil
}

func (st *simStore) Sync(context.Context) error {
	st.crashPoint("sync.before")
	st.synced()
	return nil
}

func (st *simStore) Abort(_ context.Context, txnID uint64) error {
	if _, ok := st.records[txnID]; !ok {
		if out, done := st.outcomes[txnID]; done && out.State == kv.ResolvedCommitted && st.sim.parallel {
			// Under the parallel protocol an Abort goes only where the transaction cannot
			// commit. (The classic master's Abort of a transaction it may have forgotten
			// after committing it is a no-op.)
			st.sim.violation("%s: abort of %d, which this node committed at %d", st.name, txnID, out.CommitTS)
		}
		st.forgotten[txnID] = true
		return nil
	}
	st.crashPoint("abort.before")
	st.finish(txnID, kv.Resolution{State: kv.ResolvedAborted})
	st.synced()
	st.crashPoint("abort.after")
	return nil
}

// Resolve models kv.Store.Resolve: a prepared transaction answers its minimum; a finished one
// its marker, once a sync makes it durable (a CommitNoSync's marker may be pending); one never
// prepared here is recorded aborted (pending until the sync), and a Prepare of it is refused
// from then on.
func (st *simStore) Resolve(_ context.Context, txnID uint64) (kv.Resolution, error) {
	gen := st.gen()
	if _, ok := st.records[txnID]; ok {
		return kv.Resolution{State: kv.ResolvedPrepared, MinCommitTS: st.minTS[txnID]}, nil
	}
	out, done := st.outcomes[txnID]
	if !done && st.finished[txnID] {
		// Its marker went (forgotten or swept), as kv.Store.Resolve answers.
		return kv.Resolution{State: kv.ResolvedAborted}, nil
	}
	if !done {
		st.crashPoint("resolve.before-refusal")
		out = kv.Resolution{State: kv.ResolvedAborted}
		st.outcomes[txnID] = out
		st.abortAt[txnID] = st.sim.now
		st.pending = append(st.pending, simPending{ts: 0, undo: func() { delete(st.outcomes, txnID); delete(st.abortAt, txnID) }})
		out.Refused = true
	}
	st.syncPoint("resolve", gen)
	return out, nil
}

// ForgetOutcomes models kv.Store.ForgetOutcomes; a deletion is durable at once here (the harsher
// case: kv's may come back after a crash).
func (st *simStore) ForgetOutcomes(commits map[uint64]uint64) (int, error) {
	n := 0
	for id, ts := range commits {
		if out, ok := st.outcomes[id]; ok && out.State == kv.ResolvedCommitted && out.CommitTS == ts {
			delete(st.outcomes, id)
			st.sim.stats.markersForgotten++
			n++
		}
	}
	return n, nil
}

// SweepOutcomes models kv.Store.SweepOutcomes on the virtual clock.
func (st *simStore) SweepOutcomes(before time.Time) (int, error) {
	n := 0
	for id, at := range st.abortAt {
		if out, ok := st.outcomes[id]; ok && out.State == kv.ResolvedAborted && at.Before(before) {
			delete(st.outcomes, id)
			delete(st.abortAt, id)
			st.sim.stats.markersSwept++
			n++
		}
	}
	return n, nil
}

// SetSafePoint: the simulation runs no garbage collection.
func (st *simStore) SetSafePoint(context.Context, uint64) error { return nil }

func (st *simStore) Prepared() []kv.PreparedTxn {
	var out []kv.PreparedTxn
	for id, rec := range st.records {
		var keys [][]byte
		for _, k := range st.recordKeys(id, rec) {
			keys = append(keys, []byte(k))
		}
		out = append(out, kv.PreparedTxn{TxnID: id, StartTS: rec.StartTS, Keys: keys, Participants: rec.Participants,
			PreparedAt: rec.PreparedAt, MinCommitTS: st.minTS[id], Parallel: rec.Parallel, Recovered: st.recovered[id]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TxnID < out[j].TxnID })
	return out
}

func (st *simStore) Stats() kv.Stats {
	return kv.Stats{LocksHeld: len(st.locks), Prepared: len(st.records), MaxTS: st.maxTS}
}

// simRuntime runs everything inline on the simulator's virtual clock. It belongs to one
// incarnation of one process: once that process has crashed, any further step of its code
// (a sleep, a send) unwinds its stack, so a crashed process never acts again.
type simRuntime struct {
	sim  *sim
	proc string
	gen  int
}

func (r simRuntime) Go(f func()) { f() }

func (r simRuntime) Now() time.Time { return r.sim.now }

func (r simRuntime) Sleep(ctx context.Context, d time.Duration) error {
	r.sim.checkAlive(r.proc, r.gen)
	r.sim.advance(d)
	r.sim.checkAlive(r.proc, r.gen)
	return ctx.Err()
}

// WithTimeout returns a context that the simulator cancels when its virtual clock reaches d
// from now, or when ctx is done: its Deadline is virtual, and its Err after the deadline is
// context.DeadlineExceeded, as a wall-clock context's would be.
func (r simRuntime) WithTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	inner, cancel := context.WithCancel(ctx)
	t := &simTimeoutCtx{Context: inner, parent: ctx, deadline: r.sim.now.Add(d)}
	r.sim.schedule(d, "deadline", func() {
		if inner.Err() == nil {
			t.expired = true
			cancel()
		}
	})
	return t, cancel
}

// simTimeoutCtx is a context with a deadline on the simulator's virtual clock. The simulator
// runs on one goroutine, so expired needs no lock.
type simTimeoutCtx struct {
	context.Context // done when the deadline passes or parent is done
	parent          context.Context
	deadline        time.Time
	expired         bool
}

func (c *simTimeoutCtx) Deadline() (time.Time, bool) {
	if d, ok := c.parent.Deadline(); ok && d.Before(c.deadline) {
		return d, true
	}
	return c.deadline, true
}

func (c *simTimeoutCtx) Err() error {
	if err := c.parent.Err(); err != nil {
		return err
	}
	if c.expired {
		return context.DeadlineExceeded
	}
	return c.Context.Err()
}

// Wait lets virtual time pass in small steps until done is closed or d has passed. Protocol
// code running further out on the same stack cannot make progress meanwhile, so this usually
// waits the whole d, as a stuck phase 2 would.
func (r simRuntime) Wait(ctx context.Context, done <-chan struct{}, d time.Duration) bool {
	end := r.sim.now.Add(d)
	for {
		select {
		case <-done:
			return true
		default:
		}
		if !r.sim.now.Before(end) || ctx.Err() != nil {
			return false
		}
		r.Sleep(ctx, min(10*time.Millisecond, end.Sub(r.sim.now)))
	}
}
