package txn

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/kvtx/kvtx/kv"
)

// simStore is the simulator's shard: an in-memory Storage with the same contract as kv.Store,
// split into what a crash keeps (versions, prepare records, the maxTS mark: every call makes
// its writes durable before it returns, as kv.Store does) and what a crash loses (locks,
// maxTS, minimum commit timestamps). The simulator may crash the node before or after any
// write, by panicking with simCrash.
type simStore struct {
	sim  *sim
	name string

	// Durable.
	versions map[string][]simVersion // per key, ascending commit timestamp
	records  map[uint64]kv.PrepareRecord
	cmpKeys  map[uint64][]string // compare keys of each prepare record
	finished map[uint64]bool     // tombstones of prepare records
	mark     uint64              // persisted maxTS
	// undo reverts the commits applied by CommitNoSync since the last sync: a crash before the
	// next sync loses them, as a machine crash would lose writes not yet synced. Any call that
	// syncs makes them durable, since a sync round covers every earlier write.
	undo []func()

	// Volatile: rebuilt by restart.
	maxTS     uint64
	locks     map[string]uint64 // key → prepared transaction holding it
	minTS     map[uint64]uint64
	recovered map[uint64]bool
}

type simVersion struct {
	ts      uint64
	value   []byte
	deleted bool
}

var _ Storage = (*simStore)(nil)

func newSimStore(s *sim, name string) *simStore {
	st := &simStore{sim: s, name: name, versions: map[string][]simVersion{}, records: map[uint64]kv.PrepareRecord{},
		cmpKeys: map[uint64][]string{}, finished: map[uint64]bool{}}
	st.restart()
	return st
}

// restart drops everything volatile and rebuilds it from the durable state, as kv.Open does.
func (st *simStore) restart() {
	for i := len(st.undo) - 1; i >= 0; i-- {
		st.undo[i]()
	}
	st.undo = nil
	st.maxTS = st.mark
	st.locks = map[string]uint64{}
	st.minTS = map[uint64]uint64{}
	st.recovered = map[uint64]bool{}
	for id, rec := range st.records {
		for _, k := range st.recordKeys(id, rec) {
			st.locks[k] = id
		}
		st.minTS[id] = rec.StartTS + 1
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
func (st *simStore) synced() { st.undo = nil }

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

func (st *simStore) Get(_ context.Context, keys [][]byte, ts uint64) ([]kv.Value, error) {
	st.raise(ts)
	out := make([]kv.Value, len(keys))
	for i, k := range keys {
		if id, ok := st.locks[string(k)]; ok && st.minTS[id] <= ts {
			return nil, &kv.LockedError{Key: k, TxnID: id}
		}
		out[i] = st.value(string(k), ts)
	}
	return out, nil
}

func (st *simStore) check(cmps []kv.Compare) error {
	for i, c := range cmps {
		a := st.value(string(c.Key), ^uint64(0))
		var ok bool
		switch c.Kind {
		case kv.CmpValueEqual:
			ok = a.Found && bytes.Equal(a.Value, c.Value)
		case kv.CmpVersionEqual:
			ok = a.Version == c.Version
		case kv.CmpVersionLess:
			ok = a.Version < c.Version
		case kv.CmpVersionGreater:
			ok = a.Version > c.Version
		case kv.CmpExists:
			ok = a.Found
		case kv.CmpMissing:
			ok = !a.Found
		}
		if !ok {
			return &kv.CompareFailedError{Index: i, Compare: c, Actual: a}
		}
	}
	return nil
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

func (st *simStore) Apply(_ context.Context, txnID, ts uint64, cmps []kv.Compare, ops []kv.Op) (uint64, error) {
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
	if err := st.check(cmps); err != nil {
		return 0, err
	}
	st.crashPoint("apply.before-write")
	commitTS := max(ts, st.maxTS+1)
	st.write(ops, commitTS)
	st.raise(commitTS)
	st.synced()
	st.crashPoint("apply.after-write")
	return commitTS, nil
}

func (st *simStore) Prepare(_ context.Context, rec kv.PrepareRecord, cmps []kv.Compare) (uint64, error) {
	if _, ok := st.records[rec.TxnID]; ok {
		return st.minTS[rec.TxnID], nil
	}
	if st.finished[rec.TxnID] {
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
	if err := st.check(cmps); err != nil {
		return 0, err
	}
	st.crashPoint("prepare.before-record")
	st.records[rec.TxnID] = rec
	st.cmpKeys[rec.TxnID] = cmpKeys
	for _, k := range keys {
		st.locks[k] = rec.TxnID
	}
	min := max(st.maxTS, rec.StartTS) + 1
	st.minTS[rec.TxnID] = min
	st.synced()
	st.crashPoint("prepare.after-record")
	return min, nil
}

func (st *simStore) finish(id uint64) {
	for _, k := range st.recordKeys(id, st.records[id]) {
		if st.locks[k] == id {
			delete(st.locks, k)
		}
	}
	delete(st.records, id)
	delete(st.cmpKeys, id)
	delete(st.minTS, id)
	delete(st.recovered, id)
	st.finished[id] = true
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
		return nil
	}
	if commitTS < st.minTS[txnID] {
		st.sim.violation("%s: commit of %d at %d below its minimum commit timestamp %d", st.name, txnID, commitTS, st.minTS[txnID])
		return fmt.Errorf("%w: commit below minimum", kv.ErrInvalidArgument)
	}
	st.crashPoint(fmt.Sprintf("commit(sync=%v).before-apply", sync))
	cmpKeys := st.cmpKeys[txnID]
	st.write(rec.Ops, commitTS)
	st.finish(txnID)
	st.raise(commitTS)
	if sync {
		st.synced()
	} else {
		st.undo = append(st.undo, func() {
			for _, op := range rec.Ops {
				k := string(op.Key)
				vs := st.versions[k]
				for i := len(vs) - 1; i >= 0; i-- {
					if vs[i].ts == commitTS {
						st.versions[k] = append(vs[:i:i], vs[i+1:]...)
						break
					}
				}
			}
			st.records[txnID] = rec
			st.cmpKeys[txnID] = cmpKeys
			delete(st.finished, txnID)
		})
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
		st.finished[txnID] = true
		return nil
	}
	st.crashPoint("abort.before")
	st.finish(txnID)
	st.synced()
	st.crashPoint("abort.after")
	return nil
}

func (st *simStore) Prepared() []kv.PreparedTxn {
	var out []kv.PreparedTxn
	for id, rec := range st.records {
		var keys [][]byte
		for _, k := range st.recordKeys(id, rec) {
			keys = append(keys, []byte(k))
		}
		out = append(out, kv.PreparedTxn{TxnID: id, StartTS: rec.StartTS, Keys: keys, Participants: rec.Participants,
			PreparedAt: rec.PreparedAt, Recovered: st.recovered[id]})
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
