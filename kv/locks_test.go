package kv

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestPrepareConflictsWithoutWaiting(t *testing.T) {
	opts := testOpts(t, t.TempDir())
	opts.LockWait = 10 * time.Second // a wait would be obvious
	s := openTest(t, opts)
	ctx := context.Background()
	mustPrepare(t, s, 1, 10, nil, put("a", "1"), put("b", "1"))

	start := time.Now()
	_, err := s.Prepare(ctx, PrepareRecord{TxnID: 2, StartTS: 11, Ops: []Op{put("c", "2"), put("b", "2")}}, nil)
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Fatalf("conflicting Prepare took %v; it must not wait", elapsed)
	}
	var ce *ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, ErrConflict) {
		t.Fatalf("got %v, want *ConflictError", err)
	}
	if string(ce.Key) != "b" || ce.TxnID != 1 {
		t.Fatalf("conflict on %q with %d, want \"b\" with 1", ce.Key, ce.TxnID)
	}
	if want := `kv: key "b" is locked by transaction 1`; err.Error() != want {
		t.Fatalf("message %q, want %q", err.Error(), want)
	}
	// Nothing of the loser was taken: "c" is free.
	if st := s.Stats(); st.LocksHeld != 2 || st.Prepared != 1 {
		t.Fatalf("after the conflict: %+v, want the 2 locks of txn 1", st)
	}
	mustApply(t, s, 0, nil, put("c", "free"))
	if s.IsPrepared(2) {
		t.Fatal("the loser is prepared")
	}
	// A compare-only key conflicts too.
	_, err = s.Prepare(ctx, PrepareRecord{TxnID: 3, StartTS: 12, Ops: []Op{put("d", "3")}}, []Compare{{Kind: CmpMissing, Key: []byte("a")}})
	if !errors.As(err, &ce) || string(ce.Key) != "a" {
		t.Fatalf("compare key: got %v, want a conflict on \"a\"", err)
	}
	// The loser may retry once the winner is done.
	if err := s.Abort(ctx, 1); err != nil {
		t.Fatal(err)
	}
	min := mustPrepare(t, s, 2, 11, nil, put("c", "2"), put("b", "2"))
	if err := s.Commit(ctx, 2, min); err != nil {
		t.Fatal(err)
	}
}

func TestApplyWaitsForPreparedThenProceeds(t *testing.T) {
	opts := testOpts(t, t.TempDir())
	opts.LockWait = 10 * time.Second // the Commit's sync must not outlast it on a loaded machine
	s := openTest(t, opts)
	ctx := context.Background()
	base := mustApply(t, s, 5, nil, put("k", "0"))
	min := mustPrepare(t, s, 1, 10, nil, put("k", "prepared"))

	// The one-phase write waits for the prepared lock, compares-and-writes
	// once it is released, and lands above the prepared commit.
	ch := goApply(s, 2, 11, []Compare{{Kind: CmpValueEqual, Key: []byte("k"), Value: []byte("prepared")}}, put("k", "after"))
	notYet(t, ch, "Apply on a prepared key")
	commitTS := min + 3
	if err := s.Commit(ctx, 1, commitTS); err != nil {
		t.Fatal(err)
	}
	r := await(t, ch, "Apply")
	if r.err != nil {
		t.Fatalf("Apply after the lock's release: %v", r.err)
	}
	if r.ts <= commitTS {
		t.Fatalf("Apply committed at %d, not above the prepared commit at %d", r.ts, commitTS)
	}
	wantValue(t, mustGet(t, s, r.ts, "k"), "after", r.ts)
	wantValue(t, mustGet(t, s, commitTS, "k"), "prepared", commitTS)
	wantValue(t, mustGet(t, s, commitTS-1, "k"), "0", base)
}

func TestApplyConflictAfterBound(t *testing.T) {
	opts := testOpts(t, t.TempDir())
	opts.LockWait = 100 * time.Millisecond
	s := openTest(t, opts)
	mustPrepare(t, s, 7, 10, nil, put("k", "v"))
	start := time.Now()
	_, err := s.Apply(context.Background(), 8, 20, nil, []Op{put("free", "x"), put("k", "y")})
	if elapsed := time.Since(start); elapsed < opts.LockWait {
		t.Fatalf("gave up after %v, before the %v bound", elapsed, opts.LockWait)
	}
	var ce *ConflictError
	if !errors.As(err, &ce) || string(ce.Key) != "k" || ce.TxnID != 7 {
		t.Fatalf("got %v, want a conflict on \"k\" with 7", err)
	}
	// All or nothing: "free" was not kept locked.
	mustApply(t, s, 0, nil, put("free", "ok"))
	if err := s.Abort(context.Background(), 7); err != nil {
		t.Fatal(err)
	}
}

func TestPrepareWaitsForOnePhaseApply(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	// Stand in for an Apply that is between taking its locks and releasing
	// them (which a real one does within one sync round).
	keys := joinKeys([][]byte{[]byte("k")})
	apply := &lockOwner{txnID: 99, readFrom: 50}
	s.mu.Lock()
	s.acquireLocked(keys, apply)
	s.mu.Unlock()

	ch := make(chan error, 1)
	go func() {
		_, err := s.Prepare(context.Background(), PrepareRecord{TxnID: 1, StartTS: 10, Ops: []Op{put("k", "v")}}, nil)
		ch <- err
	}()
	select {
	case err := <-ch:
		t.Fatalf("Prepare returned %v while a one-phase Apply held the key", err)
	case <-time.After(50 * time.Millisecond):
	}
	release(s, keys, apply)
	select {
	case err := <-ch:
		if err != nil {
			t.Fatalf("Prepare after the Apply finished: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Prepare did not proceed after the Apply released its lock")
	}
	if err := s.Abort(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
}

func TestReadsWaitForOlderLocks(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	ctx := context.Background()
	base := mustApply(t, s, 5, nil, put("k", "old"))
	min := mustPrepare(t, s, 1, 10, nil, put("k", "new"))

	// A read at or above the minimum commit timestamp could see the commit,
	// so it waits for the decision.
	readTS := min + 10
	ch := goGet(s, readTS, "k")
	notYet(t, ch, "Get above a prepared transaction")
	commitTS := min + 2
	if err := s.Commit(ctx, 1, commitTS); err != nil {
		t.Fatal(err)
	}
	r := await(t, ch, "Get")
	if r.err != nil {
		t.Fatal(r.err)
	}
	wantValue(t, r.vals[0], "new", commitTS)
	wantValue(t, mustGet(t, s, commitTS-1, "k"), "old", base)

	// Same for an abort: the read then sees the old value.
	min = mustPrepare(t, s, 2, readTS+1, nil, put("k", "aborted"))
	ch = goGet(s, min+5, "k")
	notYet(t, ch, "Get above a prepared transaction")
	if err := s.Abort(ctx, 2); err != nil {
		t.Fatal(err)
	}
	r = await(t, ch, "Get")
	if r.err != nil {
		t.Fatal(r.err)
	}
	wantValue(t, r.vals[0], "new", commitTS)
}

func TestReadsIgnoreNewerLocks(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	ctx := context.Background()
	base := mustApply(t, s, 5, nil, put("k", "old"))

	// Start timestamp at or above the read: the commit will be above it.
	min := mustPrepare(t, s, 1, 100, nil, put("k", "new"))
	if min != 101 {
		t.Fatalf("minCommitTS = %d, want 101", min)
	}
	for _, ts := range []uint64{50, 100} {
		wantValue(t, mustGet(t, s, ts, "k"), "old", base)
	}
	if err := s.Abort(ctx, 1); err != nil {
		t.Fatal(err)
	}

	// A read served before Prepare pushes the minimum commit timestamp above
	// it, so later reads below that minimum need not wait either, even with
	// a start timestamp below them.
	mustGet(t, s, 300, "elsewhere")
	min = mustPrepare(t, s, 2, 200, nil, put("k", "new"))
	if min != 301 {
		t.Fatalf("minCommitTS = %d, want 301 (above the read at 300)", min)
	}
	wantValue(t, mustGet(t, s, 250, "k"), "old", base)
	wantValue(t, mustGet(t, s, 300, "k"), "old", base)
	if err := s.Commit(ctx, 2, min); err != nil {
		t.Fatal(err)
	}
	wantValue(t, mustGet(t, s, 300, "k"), "old", base)
	wantValue(t, mustGet(t, s, min, "k"), "new", min)
}

func TestLockedErrorAfterBound(t *testing.T) {
	opts := testOpts(t, t.TempDir())
	opts.LockWait = 100 * time.Millisecond
	s := openTest(t, opts)
	min := mustPrepare(t, s, 123, 10, nil, put("k", "v"))
	start := time.Now()
	_, err := s.Get(context.Background(), [][]byte{[]byte("free"), []byte("k")}, min)
	if elapsed := time.Since(start); elapsed < opts.LockWait {
		t.Fatalf("gave up after %v, before the %v bound", elapsed, opts.LockWait)
	}
	var le *LockedError
	if !errors.As(err, &le) || !errors.Is(err, ErrLocked) {
		t.Fatalf("got %v, want *LockedError", err)
	}
	if string(le.Key) != "k" || le.TxnID != 123 {
		t.Fatalf("locked %q by %d, want \"k\" by 123", le.Key, le.TxnID)
	}
	if want := `kv: key "k" locked by transaction 123`; err.Error() != want {
		t.Fatalf("message %q, want %q", err.Error(), want)
	}
	if err := s.Abort(context.Background(), 123); err != nil {
		t.Fatal(err)
	}
}

func TestGetHonoursContext(t *testing.T) {
	opts := testOpts(t, t.TempDir())
	opts.LockWait = time.Minute
	s := openTest(t, opts)
	min := mustPrepare(t, s, 1, 10, nil, put("k", "v"))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := s.Get(ctx, [][]byte{[]byte("k")}, min)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the context's deadline", err)
	}
	_, err = s.Apply(ctx, 2, 0, nil, []Op{put("k", "x")})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Apply: got %v, want the context's deadline", err)
	}
	if err := s.Abort(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
}

func TestCloseWakesWaiters(t *testing.T) {
	opts := testOpts(t, t.TempDir())
	opts.LockWait = time.Minute
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	min := mustPrepare(t, s, 1, 10, nil, put("k", "v"))
	get := goGet(s, min, "k")
	apply := goApply(s, 2, 0, nil, put("k", "x"))
	notYet(t, get, "Get")
	notYet(t, apply, "Apply")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if r := await(t, get, "Get"); !errors.Is(r.err, ErrClosed) {
		t.Fatalf("Get: got %v, want ErrClosed", r.err)
	}
	if r := await(t, apply, "Apply"); !errors.Is(r.err, ErrClosed) {
		t.Fatalf("Apply: got %v, want ErrClosed", r.err)
	}
	// The prepared transaction is still on disk.
	s2 := openTest(t, opts)
	if !s2.IsPrepared(1) {
		t.Fatal("prepared transaction lost by Close")
	}
	if err := s2.Commit(context.Background(), 1, min); err != nil {
		t.Fatal(err)
	}
}

func TestSyncFailureStopsStore(t *testing.T) {
	s, err := Open(testOpts(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Simulate an fsync failure: the syncer's error is sticky.
	injected := errors.New("injected EIO")
	s.syncer.mu.Lock()
	s.syncer.mu.err = injected
	s.syncer.mu.Unlock()

	_, err = s.Apply(context.Background(), 1, 10, nil, []Op{put("k", "maybe lost")})
	if !errors.Is(err, injected) {
		t.Fatalf("Apply: got %v, want the sync error", err)
	}
	// The write's durability is unknown, so its lock stays held...
	if st := s.Stats(); st.LocksHeld != 1 {
		t.Fatalf("%d locks held after the failed sync, want 1", st.LocksHeld)
	}
	// ...and everything else refuses to run.
	if _, err := s.Get(context.Background(), [][]byte{[]byte("k")}, 20); !errors.Is(err, injected) {
		t.Fatalf("Get after failure: %v", err)
	}
	if err := s.Commit(context.Background(), 5, 20); !errors.Is(err, injected) {
		t.Fatalf("Commit after failure: %v", err)
	}
}
