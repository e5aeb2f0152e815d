package kv

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestPrepareCommit(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	ctx := context.Background()
	base := mustApply(t, s, 5, nil, put("a", "0"))
	at := time.Unix(1700000000, 42)
	rec := PrepareRecord{TxnID: 9, StartTS: 20, Ops: []Op{put("a", "1"), del("b")}, Participants: []string{"n1", "n2"}, PreparedAt: at}
	min, err := s.Prepare(ctx, rec, []Compare{{Kind: CmpMissing, Key: []byte("c")}})
	if err != nil {
		t.Fatal(err)
	}
	if min != 21 {
		t.Fatalf("minCommitTS = %d, want 21", min)
	}
	if !s.IsPrepared(9) || s.IsPrepared(10) {
		t.Fatal("IsPrepared is wrong")
	}
	got := s.Prepared()
	if len(got) != 1 {
		t.Fatalf("Prepared() = %+v", got)
	}
	p := got[0]
	keys := make([]string, len(p.Keys))
	for i, k := range p.Keys {
		keys[i] = string(k)
	}
	if p.TxnID != 9 || p.StartTS != 20 || !slices.Equal(keys, []string{"a", "b", "c"}) ||
		!slices.Equal(p.Participants, []string{"n1", "n2"}) || !p.PreparedAt.Equal(at) || p.Recovered {
		t.Fatalf("Prepared() = %+v", p)
	}
	if st := s.Stats(); st.LocksHeld != 3 || st.Prepared != 1 {
		t.Fatalf("Stats() = %+v, want 3 locks, 1 prepared", st)
	}
	// Prepared writes are invisible until Commit.
	wantValue(t, mustGet(t, s, 20, "a"), "0", base)

	if err := s.Commit(ctx, 9, 30); err != nil {
		t.Fatal(err)
	}
	wantValue(t, mustGet(t, s, 30, "a"), "1", 30)
	wantValue(t, mustGet(t, s, 29, "a"), "0", base)
	wantMissing(t, mustGet(t, s, 30, "b"))
	if s.IsPrepared(9) || len(s.Prepared()) != 0 {
		t.Fatal("still prepared after Commit")
	}
	if st := s.Stats(); st.MaxTS < 30 {
		t.Fatalf("MaxTS = %d after a commit at 30", st.MaxTS)
	}
	// The caller's buffers were copied: reusing them changes nothing.
	rec.Ops[0].Value[0] = 'X'
	wantValue(t, mustGet(t, s, 30, "a"), "1", 30)
}

func TestPrepareIdempotent(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	ctx := context.Background()
	min1 := mustPrepare(t, s, 1, 10, nil, put("k", "v"))
	mustGet(t, s, 500, "elsewhere") // maxTS moves on; the answer must not
	min2 := mustPrepare(t, s, 1, 10, nil, put("k", "v"))
	if min1 != min2 {
		t.Fatalf("repeated Prepare returned %d, first %d", min2, min1)
	}
	if st := s.Stats(); st.Prepared != 1 || st.LocksHeld != 1 {
		t.Fatalf("after a repeated Prepare: %+v", st)
	}
	if _, err := s.Prepare(ctx, PrepareRecord{TxnID: 1, StartTS: 11, Ops: []Op{put("k", "v")}}, nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Prepare with another start: %v", err)
	}
	if err := s.Commit(ctx, 1, min1); err != nil {
		t.Fatal(err)
	}
}

// A repeated Prepare is a retry of the same request; one that carries other writes under a
// prepared transaction's id (a peer that learnt the next id and prepared it first, so that the
// real transaction would be told "prepared" while this shard holds the other writes) is
// refused, and the first writes are what commits.
func TestARepeatedPrepareWithOtherWritesIsRefused(t *testing.T) {
	for _, reopened := range []bool{false, true} {
		t.Run(fmt.Sprintf("recovered=%v", reopened), func(t *testing.T) {
			opts := testOpts(t, t.TempDir())
			s := openTest(t, opts)
			ctx := context.Background()
			min := mustPrepare(t, s, 1, 10, []Compare{{Kind: CmpMissing, Key: []byte("guard")}}, put("k", "mine"), put("j", "mine"))
			if reopened {
				s = reopen(t, s, opts, "crash")
			}
			for name, rec := range map[string]PrepareRecord{
				"another value":        {Ops: []Op{put("k", "theirs"), put("j", "mine")}},
				"an op fewer":          {Ops: []Op{put("k", "mine")}},
				"an op more":           {Ops: []Op{put("k", "mine"), put("j", "mine"), put("x", "theirs")}},
				"a delete":             {Ops: []Op{del("k"), put("j", "mine")}},
				"other participants":   {Ops: []Op{put("k", "mine"), put("j", "mine")}, Participants: []string{"n1", "n3"}},
				"another compared key": {Ops: []Op{put("k", "mine"), put("j", "mine")}},
				"another compare":      {Ops: []Op{put("k", "mine"), put("j", "mine")}},
				"the parallel flag":    {Ops: []Op{put("k", "mine"), put("j", "mine")}, Parallel: true},
			} {
				rec.TxnID, rec.StartTS = 1, 10
				if rec.Participants == nil {
					rec.Participants = []string{"n1", "n2"}
				}
				cmps := []Compare{{Kind: CmpMissing, Key: []byte("guard")}}
				switch name {
				case "another compared key":
					cmps[0].Key = []byte("other")
				case "another compare": // the same key: a compare never checked must not pass
					cmps[0] = Compare{Kind: CmpVersionLess, Key: []byte("guard"), Version: 5}
				}
				if _, err := s.Prepare(ctx, rec, cmps); !errors.Is(err, ErrInvalidArgument) {
					t.Fatalf("a repeated Prepare with %s: %v, want refused", name, err)
				}
			}
			if again := mustPrepare(t, s, 1, 10, []Compare{{Kind: CmpMissing, Key: []byte("guard")}}, put("k", "mine"), put("j", "mine")); again != min {
				t.Fatalf("the same Prepare again: min %d, first %d", again, min)
			}
			if err := s.Commit(ctx, 1, min); err != nil {
				t.Fatal(err)
			}
			wantValue(t, mustGet(t, s, min, "k"), "mine", min)
			wantValue(t, mustGet(t, s, min, "j"), "mine", min)
		})
	}
}

func TestLateDuplicatePrepareRefused(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, testOpts(t, dir))
	ctx := context.Background()

	min := mustPrepare(t, s, 1, 10, nil, put("a", "1"))
	if err := s.Commit(ctx, 1, min); err != nil {
		t.Fatal(err)
	}
	mustPrepare(t, s, 2, 10, nil, put("b", "1"))
	if err := s.Abort(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Abort(ctx, 3); err != nil { // never prepared here
		t.Fatal(err)
	}
	refused := func(s *Store, id uint64) {
		t.Helper()
		_, err := s.Prepare(ctx, PrepareRecord{TxnID: id, StartTS: 10, Ops: []Op{put(fmt.Sprint("k", id), "late")}}, nil)
		var ae *AbortedError
		if !errors.As(err, &ae) || !errors.Is(err, ErrAborted) || ae.TxnID != id {
			t.Fatalf("late Prepare of %d: got %v, want *AbortedError", id, err)
		}
		if st := s.Stats(); st.LocksHeld != 0 {
			t.Fatalf("late Prepare of %d left %d locks", id, st.LocksHeld)
		}
	}
	for _, id := range []uint64{1, 2, 3} {
		refused(s, id)
	}

	// After a restart the in-memory set is gone; the tombstones of the
	// prepare records still identify 1 and 2.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openTest(t, testOpts(t, dir))
	refused(s2, 1)
	refused(s2, 2)
	wantValue(t, mustGet(t, s2, min, "a"), "1", min)
	wantMissing(t, mustGet(t, s2, min, "k1"))
}

func TestCommitAbortIdempotent(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	ctx := context.Background()
	// (A Commit of an unknown transaction fails: TestCommitOfATransactionNeverPreparedHereFails.)
	if err := s.Abort(ctx, 405); err != nil {
		t.Fatalf("Abort of an unknown transaction: %v", err)
	}
	min := mustPrepare(t, s, 1, 10, nil, put("k", "v"))
	for i := range 3 {
		if err := s.Commit(ctx, 1, min); err != nil {
			t.Fatalf("Commit #%d: %v", i, err)
		}
	}
	// An Abort after the Commit changes nothing.
	if err := s.Abort(ctx, 1); err != nil {
		t.Fatal(err)
	}
	wantValue(t, mustGet(t, s, min, "k"), "v", min)

	mustPrepare(t, s, 2, min, nil, put("k", "w"))
	for i := range 3 {
		if err := s.Abort(ctx, 2); err != nil {
			t.Fatalf("Abort #%d: %v", i, err)
		}
	}
	// A Commit after the Abort is refused, not taken as a repeat: the caller must not count
	// it as applied.
	if err := s.Commit(ctx, 2, min+10); !errors.Is(err, ErrNotPrepared) {
		t.Fatalf("Commit of an aborted transaction: %v, want ErrNotPrepared", err)
	}
	wantValue(t, mustGet(t, s, min+10, "k"), "v", min)
}

func TestConcurrentDuplicateCalls(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	ctx := context.Background()
	const n = 8
	mins := make(chan uint64, n)
	errs := make(chan error, 2*n)
	for range n {
		go func() {
			min, err := s.Prepare(ctx, PrepareRecord{TxnID: 1, StartTS: 10, Ops: []Op{put("k", "v")}}, nil)
			errs <- err
			mins <- min
		}()
	}
	var min uint64
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("duplicate Prepare: %v", err)
		}
		m := <-mins
		if min != 0 && m != min {
			t.Fatalf("duplicate Prepares answered %d and %d", min, m)
		}
		min = m
	}
	for range n {
		go func() { errs <- s.Commit(ctx, 1, min) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("duplicate Commit: %v", err)
		}
	}
	wantValue(t, mustGet(t, s, min, "k"), "v", min)
}

func TestCommitBelowMinimumRefused(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	ctx := context.Background()
	mustGet(t, s, 100, "k")
	min := mustPrepare(t, s, 1, 10, nil, put("k", "v"))
	if min != 101 {
		t.Fatalf("minCommitTS = %d, want 101", min)
	}
	err := s.Commit(ctx, 1, 50)
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Commit below the minimum: %v", err)
	}
	if !s.IsPrepared(1) {
		t.Fatal("a refused Commit released the transaction")
	}
	// The read at 100 stays repeatable: the commit lands above it.
	if err := s.Commit(ctx, 1, min); err != nil {
		t.Fatal(err)
	}
	wantMissing(t, mustGet(t, s, 100, "k"))
}

func TestPrepareCompareFailureLeavesNothing(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	mustApply(t, s, 5, nil, put("c", "exists"))
	_, err := s.Prepare(context.Background(), PrepareRecord{TxnID: 1, StartTS: 10, Ops: []Op{put("a", "1")}},
		[]Compare{{Kind: CmpMissing, Key: []byte("c")}})
	var cf *CompareFailedError
	if !errors.As(err, &cf) || cf.Index != 0 {
		t.Fatalf("got %v, want compare 0 failed", err)
	}
	if s.IsPrepared(1) || s.Stats().LocksHeld != 0 || len(livePrepareRecords(t, s)) != 0 {
		t.Fatal("a failed Prepare left state behind")
	}
	// A no vote is not a decision: the same transaction may prepare again.
	mustApply(t, s, 0, nil, del("c"))
	min, err := s.Prepare(context.Background(), PrepareRecord{TxnID: 1, StartTS: 10, Ops: []Op{put("a", "1")}},
		[]Compare{{Kind: CmpMissing, Key: []byte("c")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(context.Background(), 1, min); err != nil {
		t.Fatal(err)
	}
}

func TestPrepareLocksCompareKeys(t *testing.T) {
	opts := testOpts(t, t.TempDir())
	opts.LockWait = 50 * time.Millisecond
	s := openTest(t, opts)
	mustPrepare(t, s, 1, 10, []Compare{{Kind: CmpMissing, Key: []byte("guard")}}, put("a", "1"))
	// The compare must stay true until the decision: nobody may write "guard".
	_, err := s.Apply(context.Background(), 2, 0, nil, []Op{put("guard", "x")})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("write to a compare key of a prepared txn: %v", err)
	}
	if err := s.Abort(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	mustApply(t, s, 0, nil, put("guard", "x"))
}

func TestPrepareRejectsOversizedCommit(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	// Badger caps one transaction at 15% of the memtable (about 9.6 MiB);
	// these values stay inline, so the commit would exceed it.
	val := make([]byte, 900<<10)
	var ops []Op
	for i := range 12 {
		ops = append(ops, Op{Kind: OpPut, Key: []byte(fmt.Sprint("big", i)), Value: val})
	}
	_, err := s.Prepare(context.Background(), PrepareRecord{TxnID: 1, StartTS: 10, Ops: ops}, nil)
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("oversized Prepare: got %v, want ErrInvalidArgument", err)
	}
	if s.IsPrepared(1) || s.Stats().LocksHeld != 0 {
		t.Fatal("oversized Prepare left state behind")
	}
}

func TestCommitNoSyncIsVisibleAtOnceAndSyncMakesItDurable(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, testOpts(t, dir))
	ctx := context.Background()
	rec := PrepareRecord{TxnID: 9, StartTS: 20, Ops: []Op{put("a", "1")}}
	if _, err := s.Prepare(ctx, rec, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitNoSync(ctx, 9, 30); err != nil {
		t.Fatal(err)
	}
	if s.IsPrepared(9) || s.Stats().LocksHeld != 0 {
		t.Fatalf("after CommitNoSync the transaction is still prepared or locked: %+v", s.Stats())
	}
	vals, err := s.Get(ctx, [][]byte{[]byte("a")}, 31)
	if err != nil {
		t.Fatal(err)
	}
	if !vals[0].Found || string(vals[0].Value) != "1" || vals[0].Version != 30 {
		t.Fatalf("CommitNoSync's write is not visible: %+v", vals[0])
	}
	if err := s.CommitNoSync(ctx, 9, 30); err != nil {
		t.Fatalf("a repeated commit is a no-op: %v", err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

// A Commit for a transaction this store never prepared is an error, not a silent success: the
// store has lost a prepare record (a wiped data directory) or the coordinator has a bug. A
// repeated Commit, or one after an Abort, finds the record's tombstone and succeeds.
func TestCommitOfATransactionNeverPreparedHereFails(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, testOpts(t, dir))
	ctx := context.Background()
	if err := s.Commit(ctx, 7, 20); !errors.Is(err, ErrNotPrepared) {
		t.Fatalf("Commit of a transaction never prepared: %v, want ErrNotPrepared", err)
	}
	if err := s.CommitNoSync(ctx, 7, 20); !errors.Is(err, ErrNotPrepared) {
		t.Fatalf("CommitNoSync of a transaction never prepared: %v, want ErrNotPrepared", err)
	}
	min := mustPrepare(t, s, 8, 10, nil, put("a", "1"))
	for range 2 {
		if err := s.Commit(ctx, 8, min); err != nil {
			t.Fatalf("Commit of a prepared transaction, and its repeat: %v", err)
		}
	}
	mustPrepare(t, s, 9, 10, nil, put("b", "1"))
	if err := s.Abort(ctx, 9); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, testOpts(t, dir))
	if err := s.Commit(ctx, 8, min+1); err != nil {
		t.Fatalf("Commit of a transaction committed here before a restart: %v", err)
	}
	if err := s.Commit(ctx, 9, min+1); !errors.Is(err, ErrNotPrepared) {
		t.Fatalf("Commit of a transaction aborted here before a restart: %v, want ErrNotPrepared", err)
	}
	if err := s.Commit(ctx, 7, min+1); !errors.Is(err, ErrNotPrepared) {
		t.Fatalf("Commit of a transaction never prepared, after a restart: %v", err)
	}
	assertQuiescent(t, s)
}
