package kv

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Writers of a locked key get it in the order they asked for it, including one that also
// writes another key, and each commits above the one before: no writer is overtaken.
func TestApplyWaitersGetTheKeyInArrivalOrder(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	ctx := context.Background()
	min := mustPrepare(t, s, 1, 10, nil, put("k", "prepared"))
	var waiters []<-chan result
	for i := range 6 {
		ops := []Op{put("k", fmt.Sprint("w", i))}
		if i == 3 {
			ops = append(ops, put("other", "x"))
		}
		waiters = append(waiters, goApply(s, uint64(100+i), 11, nil, ops...))
		waitQueued(t, s, "k", i+1)
	}
	if err := s.Commit(ctx, 1, min+1); err != nil {
		t.Fatal(err)
	}
	prev := min + 1
	for i, ch := range waiters {
		r := await(t, ch, fmt.Sprint("Apply ", i))
		if r.err != nil {
			t.Fatalf("Apply %d: %v", i, r.err)
		}
		if r.ts <= prev {
			t.Fatalf("Apply %d committed at %d, not above the one before it (%d): overtaken", i, r.ts, prev)
		}
		prev = r.ts
	}
	wantValue(t, mustGet(t, s, prev, "k"), "w5", prev)
	assertQuiescent(t, s)
}

// A new writer queues behind one already waiting for its key even when the key itself is
// free (the waiting one is held up by another one-phase writer's key), so a stream of writers
// cannot starve it.
func TestApplyQueuesBehindAWaiterForAFreeKey(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	busy := joinKeys([][]byte{[]byte("busy")})
	holder := &lockOwner{txnID: 99, readFrom: 50} // an Apply between its write and its sync
	s.mu.Lock()
	s.acquireLocked(busy, holder)
	s.mu.Unlock()
	first := goApply(s, 2, 11, nil, put("busy", "a"), put("free", "a"))
	waitQueued(t, s, "free", 1)
	second := goApply(s, 3, 11, nil, put("free", "b"))
	waitQueued(t, s, "free", 2)
	notYet(t, second, "Apply of a free key with an older Apply queued for it")
	release(s, busy, holder)
	r1, r2 := await(t, first, "first Apply"), await(t, second, "second Apply")
	if r1.err != nil || r2.err != nil {
		t.Fatalf("Applies: %v, %v", r1.err, r2.err)
	}
	if r2.ts <= r1.ts {
		t.Fatalf("second Apply committed at %d, not after the first at %d", r2.ts, r1.ts)
	}
	wantValue(t, mustGet(t, s, r2.ts, "free"), "b", r2.ts)
	assertQuiescent(t, s)
}

// A queued writer that gives up (LockWait) leaves the queue with a conflict naming the key
// and its holder, and the writers behind it still get the key.
func TestQueuedApplyThatGivesUpLeavesTheQueue(t *testing.T) {
	opts := testOpts(t, t.TempDir())
	opts.LockWait = 300 * time.Millisecond
	s := openTest(t, opts)
	min := mustPrepare(t, s, 7, 10, nil, put("k", "p"))
	first := goApply(s, 8, 11, nil, put("k", "a"))
	waitQueued(t, s, "k", 1)
	time.Sleep(150 * time.Millisecond)
	second := goApply(s, 9, 11, nil, put("k", "b"))
	r1 := await(t, first, "first Apply")
	var ce *ConflictError
	if !errors.As(r1.err, &ce) || string(ce.Key) != "k" || ce.TxnID != 7 {
		t.Fatalf("first Apply: %v, want a conflict on \"k\" with 7", r1.err)
	}
	waitQueued(t, s, "k", 1) // only the second is left
	if err := s.Commit(context.Background(), 7, min+1); err != nil {
		t.Fatal(err)
	}
	if r2 := await(t, second, "second Apply"); r2.err != nil {
		t.Fatalf("second Apply after the first gave up: %v", r2.err)
	}
	assertQuiescent(t, s)
}

// A Prepare waiting for a one-phase Apply's lock gets the key when that Apply finishes, before
// the Applies queued for it (a Prepare then holds its locks without waiting for anyone, and a
// stream of one-phase writers cannot starve a cross-shard transaction); they follow it.
func TestPrepareWaitingForAnApplyGoesBeforeQueuedApplies(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	ctx := context.Background()
	keys := joinKeys([][]byte{[]byte("k")})
	apply := &lockOwner{txnID: 99, readFrom: 50} // an Apply between its write and its sync
	s.mu.Lock()
	s.acquireLocked(keys, apply)
	s.mu.Unlock()
	prep := make(chan error, 1)
	go func() {
		_, err := s.Prepare(ctx, PrepareRecord{TxnID: 1, StartTS: 10, Ops: []Op{put("k", "p")}}, nil)
		prep <- err
	}()
	waitPrepWaiting(t, s, "k")
	queued := goApply(s, 2, 11, nil, put("k", "a"))
	waitQueued(t, s, "k", 1)
	release(s, keys, apply)
	select {
	case err := <-prep:
		if err != nil {
			t.Fatalf("Prepare: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the Prepare did not get the key")
	}
	notYet(t, queued, "Apply queued behind a prepared transaction")
	if err := s.Commit(ctx, 1, 60); err != nil {
		t.Fatal(err)
	}
	r := await(t, queued, "queued Apply")
	if r.err != nil || r.ts <= 60 {
		t.Fatalf("queued Apply: committed at %d, %v; want above 60", r.ts, r.err)
	}
	assertQuiescent(t, s)
}

// A Prepare that the release of one key left waiting for another hands the first key on to
// the Apply queued for it, instead of keeping it idle while it waits.
func TestPrepareWaitingForASecondKeyDoesNotHoldTheFirstBack(t *testing.T) {
	opts := testOpts(t, t.TempDir())
	opts.LockWait = 5 * time.Second
	s := openTest(t, opts)
	ctx := context.Background()
	k, k2 := joinKeys([][]byte{[]byte("k")}), joinKeys([][]byte{[]byte("k2")})
	a, b := &lockOwner{txnID: 98, readFrom: 50}, &lockOwner{txnID: 99, readFrom: 50}
	s.mu.Lock()
	s.acquireLocked(k, a)
	s.acquireLocked(k2, b)
	s.mu.Unlock()
	prep := make(chan error, 1)
	go func() {
		_, err := s.Prepare(ctx, PrepareRecord{TxnID: 1, StartTS: 10, Ops: []Op{put("k", "p"), put("k2", "p")}}, nil)
		prep <- err
	}()
	waitPrepWaiting(t, s, "k")
	queued := goApply(s, 2, 11, nil, put("k", "a"))
	waitQueued(t, s, "k", 1)
	release(s, k, a) // the Prepare wakes, finds k2 held and waits for it
	r := await(t, queued, "Apply queued for k")
	if r.err != nil {
		t.Fatalf("Apply queued for k while the Prepare waits for k2: %v", r.err)
	}
	release(s, k2, b)
	if err := <-prep; err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	if err := s.Abort(ctx, 1); err != nil {
		t.Fatal(err)
	}
	assertQuiescent(t, s)
}

// A new Apply does not take a free key that a release left to a waiting Prepare: it queues,
// and gets the key once the Prepare has had its turn.
func TestNewApplyDoesNotTakeAKeyLeftToAPrepare(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	s.mu.Lock()
	s.mu.prepWaiting["k"] = 1 // as between an Apply's release of k and the waiting Prepare's wake-up
	s.mu.Unlock()
	ch := goApply(s, 2, 11, nil, put("k", "a"))
	waitQueued(t, s, "k", 1)
	notYet(t, ch, "Apply of a key left to a waiting Prepare")
	s.mu.Lock()
	delete(s.mu.prepWaiting, "k") // the Prepare went on without k
	s.grantLocked([]string{"k"})
	s.mu.Unlock()
	if r := await(t, ch, "Apply"); r.err != nil {
		t.Fatalf("Apply after the Prepare's turn: %v", r.err)
	}
	assertQuiescent(t, s)
}

// The writers of one key share sync rounds: the next one applies while the previous one waits
// for its round. A read at or above a write not yet durable waits for it, and sees both writes
// once their rounds are done; a read below them does not wait.
func TestWritersOfAKeyShareARoundAndReadersWaitForDurability(t *testing.T) {
	s, hold, unhold := openHeldRounds(t)
	base := mustApply(t, s, 5, nil, put("k", "0"))
	hold()
	first := goApply(s, 2, 10, nil, put("k", "1"))
	waitPending(t, s, "k", 1)
	second := goApply(s, 3, 11, []Compare{{Kind: CmpValueEqual, Key: []byte("k"), Value: []byte("1")}}, put("k", "2"))
	waitPending(t, s, "k", 2) // applied, and compared against the first's write, while its round is held
	read := goGet(s, 1000, "k")
	notYet(t, read, "read of writes not yet durable")
	if v := mustGet(t, s, base, "k"); string(v.Value) != "0" {
		t.Fatalf("read below the pending writes: %q, want the durable \"0\"", v.Value)
	}
	unhold()
	r1, r2 := await(t, first, "first Apply"), await(t, second, "second Apply")
	if r1.err != nil || r2.err != nil || r2.ts <= r1.ts {
		t.Fatalf("Applies: %d %v, %d %v", r1.ts, r1.err, r2.ts, r2.err)
	}
	r := await(t, read, "read")
	if r.err != nil || string(r.vals[0].Value) != "2" || r.vals[0].Version != r2.ts {
		t.Fatalf("read after the rounds: %+v, %v; want \"2\" at %d", r.vals, r.err, r2.ts)
	}
	assertQuiescent(t, s)
}

// waitState polls, with s.mu held, until count returns n.
func waitState(t *testing.T, s *Store, what string, n int, count func() int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		got := count()
		s.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d, want %d", what, got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitQueued waits until n Applies are queued for key k.
func waitQueued(t *testing.T, s *Store, k string, n int) {
	t.Helper()
	waitState(t, s, "Applies queued for "+k, n, func() int { return len(s.mu.queues[k]) })
}

// waitPrepWaiting waits until a Prepare waits for key k.
func waitPrepWaiting(t *testing.T, s *Store, k string) {
	t.Helper()
	waitState(t, s, "Prepares waiting for "+k, 1, func() int { return s.mu.prepWaiting[k] })
}

// waitPending waits until n Applies' writes of key k wait for their sync round.
func waitPending(t *testing.T, s *Store, k string, n int) {
	t.Helper()
	waitState(t, s, "writes of "+k+" waiting for their round", n, func() int { return len(s.mu.pending[k]) })
}

// A reply that depends on what compares read must not reach the client before that state is
// durable: a failed compare (its verdict and the value it reports), a compare-only success and
// a Prepare's no vote all wait for the sync round of the write they read, which a crash before
// that round would take back.
func TestRepliesThatReadUndurableWritesWaitForTheirRound(t *testing.T) {
	s, hold, unhold := openHeldRounds(t)
	mustApply(t, s, 5, nil, put("k", "0"))
	hold()
	first := goApply(s, 2, 10, nil, put("k", "1"))
	waitPending(t, s, "k", 1)

	equals := func(v string) []Compare {
		return []Compare{{Kind: CmpValueEqual, Key: []byte("k"), Value: []byte(v)}}
	}
	compareOnly := goApply(s, 3, 11, equals("1"))
	failed := goApply(s, 4, 12, equals("0"), put("other", "x"))
	noVote := make(chan result, 1)
	go func() {
		_, err := s.Prepare(context.Background(), PrepareRecord{TxnID: 5, StartTS: 13, Ops: []Op{put("k", "p")}}, equals("0"))
		noVote <- result{err: err}
	}()
	notYet(t, compareOnly, "compare-only success that read a write not yet durable")
	notYet(t, failed, "failed compare that read a write not yet durable")
	notYet(t, noVote, "no vote from a compare that read a write not yet durable")

	unhold()
	if r := await(t, first, "first Apply"); r.err != nil {
		t.Fatal(r.err)
	}
	if r := await(t, compareOnly, "compare-only Apply"); r.err != nil {
		t.Fatalf("compare-only Apply: %v", r.err)
	}
	for what, ch := range map[string]<-chan result{"Apply": failed, "Prepare": noVote} {
		r := await(t, ch, what)
		var cf *CompareFailedError
		if !errors.As(r.err, &cf) || string(cf.Actual.Value) != "1" {
			t.Fatalf("%s with a failing compare: %v, want a compare failure reporting \"1\"", what, r.err)
		}
	}
	assertQuiescent(t, s)
}

// openHeldRounds opens a store whose sync rounds, once hold is called, finish their fsync but
// do not release their waiters until unhold (which the test's cleanup also calls, before the
// store closes).
func openHeldRounds(t *testing.T) (s *Store, hold, unhold func()) {
	opts := testOpts(t, t.TempDir())
	opts.LockWait = 10 * time.Second
	var held atomic.Bool
	release := make(chan struct{})
	opts.OnSync = func(time.Duration) {
		if held.Load() {
			<-release
		}
	}
	s = openTest(t, opts)
	var once sync.Once
	unhold = func() { once.Do(func() { held.Store(false); close(release) }) }
	t.Cleanup(unhold)
	return s, func() { held.Store(true) }, unhold
}
