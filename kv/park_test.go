package kv

import (
	"context"
	"testing"
)

// An Apply waiting for a key that a prepared transaction holds (in doubt for as long as it
// takes) keeps its place for that key but does not hold back its free keys: a writer of a free
// key goes ahead of it, while a writer of the prepared key still queues behind it, and once the
// transaction commits the parked Apply is first to get the key.
func TestAnApplyWaitingForAPreparedKeyDoesNotHoldUpItsFreeKeys(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	ctx := context.Background()
	min := mustPrepare(t, s, 1, 10, nil, put("busy", "p"))
	parked := goApply(s, 2, 11, nil, put("busy", "a"), put("free", "a"))
	waitQueued(t, s, "free", 1)
	free := goApply(s, 3, 11, nil, put("free", "b"))
	if r := await(t, free, "Apply of the free key"); r.err != nil {
		t.Fatalf("Apply of a free key while an Apply waits for it and a prepared key: %v", r.err)
	}
	behind := goApply(s, 4, 11, nil, put("busy", "c"))
	waitQueued(t, s, "busy", 2)
	notYet(t, parked, "Apply of a key held by a prepared transaction")
	if err := s.Commit(ctx, 1, min+1); err != nil {
		t.Fatal(err)
	}
	r1, r2 := await(t, parked, "parked Apply"), await(t, behind, "Apply behind it")
	if r1.err != nil || r2.err != nil {
		t.Fatalf("Applies after the commit: %v, %v", r1.err, r2.err)
	}
	if r2.ts <= r1.ts {
		t.Fatalf("the Apply behind the parked one committed at %d, before it (%d): overtaken", r2.ts, r1.ts)
	}
	wantValue(t, mustGet(t, s, r2.ts, "busy"), "c", r2.ts)
	wantValue(t, mustGet(t, s, r2.ts, "free"), "a", r1.ts)
	assertQuiescent(t, s)
}

// An Apply queued for a one-phase writer's key, with a writer of its other key queued behind
// it, becomes parked when a Prepare takes that key first: the writer behind it gets its key at
// once instead of waiting for the prepared transaction.
func TestAPrepareThatParksAQueuedApplyLetsTheApplyBehindItGo(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	ctx := context.Background()
	b := joinKeys([][]byte{[]byte("b")})
	holder := &lockOwner{txnID: 99, readFrom: 50} // an Apply between its write and its sync
	s.mu.Lock()
	s.acquireLocked(b, holder)
	s.mu.Unlock()
	first := goApply(s, 2, 11, nil, put("a", "1"), put("b", "1"))
	waitQueued(t, s, "a", 1)
	second := goApply(s, 3, 11, nil, put("a", "2"))
	waitQueued(t, s, "a", 2)
	prep := goPrepare(s, 4, 10, put("b", "p"))
	waitPrepWaiting(t, s, "b")
	release(s, b, holder) // the Prepare takes b: first now waits for a prepared transaction
	if r := await(t, prep, "Prepare"); r.err != nil {
		t.Fatalf("Prepare: %v", r.err)
	}
	if r := await(t, second, "Apply of a behind the parked one"); r.err != nil {
		t.Fatalf("Apply of a: %v", r.err)
	}
	notYet(t, first, "Apply of a key held by a prepared transaction")
	if err := s.Abort(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if r := await(t, first, "parked Apply"); r.err != nil {
		t.Fatalf("parked Apply after the abort: %v", r.err)
	}
	assertQuiescent(t, s)
}
