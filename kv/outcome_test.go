package kv

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Resolve answers a termination query from what the store durably knows, across restarts: a
// transaction it never heard of is refused (and a Prepare of it later fails), a prepared one
// answers its minimum commit timestamp as voted, and finished ones their outcome.
func TestResolveAnswersFromTheDurableState(t *testing.T) {
	for _, mode := range reopenModes {
		t.Run(mode, func(t *testing.T) {
			opts := testOpts(t, t.TempDir())
			s := openTest(t, opts)
			ctx := context.Background()
			want := func(id uint64, st ResolutionState, ts uint64, refused bool) {
				t.Helper()
				r, err := s.Resolve(ctx, id)
				if err != nil {
					t.Fatalf("Resolve(%d): %v", id, err)
				}
				got := r.MinCommitTS
				if st == ResolvedCommitted {
					got = r.CommitTS
				}
				if r.State != st || got != ts || r.Refused != refused {
					t.Fatalf("Resolve(%d) = %+v, want %s at %d (refused %v)", id, r, st, ts, refused)
				}
			}
			want(5, ResolvedAborted, 0, true)
			want(5, ResolvedAborted, 0, false)
			if _, err := s.Prepare(ctx, PrepareRecord{TxnID: 5, StartTS: 5, Ops: []Op{put("a", "1")}}, nil); !errors.Is(err, ErrAborted) {
				t.Fatalf("Prepare after a refusal: %v, want ErrAborted", err)
			}
			mustGet(t, s, 40, "x") // maxTS 40: the next minimum is 41
			min := mustPrepare(t, s, 6, 10, nil, put("b", "1"))
			if min != 41 {
				t.Fatalf("minimum commit timestamp %d, want 41", min)
			}
			want(6, ResolvedPrepared, 41, false)
			mustPrepare(t, s, 7, 10, nil, put("c", "1"))
			if err := s.Abort(ctx, 7); err != nil {
				t.Fatal(err)
			}
			mustPrepare(t, s, 8, 10, nil, put("d", "1"))
			if err := s.Commit(ctx, 8, 60); err != nil {
				t.Fatal(err)
			}
			mustGet(t, s, 900, "x") // the minimum of 6 must not follow maxTS across the restart

			s = reopen(t, s, opts, mode)
			want(6, ResolvedPrepared, 41, false)
			if p := s.Prepared(); len(p) != 1 || p[0].MinCommitTS != 41 {
				t.Fatalf("recovered %+v, want transaction 6 with minimum 41", p)
			}
			if got, err := s.Prepare(ctx, PrepareRecord{TxnID: 6, StartTS: 10, Ops: []Op{put("b", "1")}, Participants: []string{"n1", "n2"}}, nil); err != nil || got != 41 {
				t.Fatalf("repeated Prepare after the restart: %d, %v; want the vote's 41", got, err)
			}
			want(5, ResolvedAborted, 0, false)
			want(7, ResolvedAborted, 0, false)
			want(8, ResolvedCommitted, 60, false)
			for _, id := range []uint64{5, 7, 8} {
				if _, err := s.Prepare(ctx, PrepareRecord{TxnID: id, StartTS: 10, Ops: []Op{put("z", "1")}}, nil); !errors.Is(err, ErrAborted) {
					t.Fatalf("late Prepare of %d after the restart: %v, want ErrAborted", id, err)
				}
			}
			if err := s.Commit(ctx, 6, 41); err != nil {
				t.Fatal(err)
			}
			want(6, ResolvedCommitted, 41, false)
			assertQuiescent(t, s)
		})
	}
}

// A Resolve that meets a Prepare still writing waits for it and answers prepared; one that
// meets a transaction an Abort has claimed answers aborted.
func TestResolveWaitsForAPrepareInProgress(t *testing.T) {
	s, hold, unhold := openHeldRounds(t)
	ctx := context.Background()
	hold()
	prep := goPrepare(s, 3, 10, put("k", "v"))
	waitState(t, s, "Prepares writing", 1, func() int { return len(s.mu.prepared) })
	res := make(chan Resolution, 1)
	go func() {
		r, err := s.Resolve(ctx, 3)
		if err != nil {
			t.Error(err)
		}
		res <- r
	}()
	notYet(t, prep, "Prepare whose round is held")
	unhold()
	p := await(t, prep, "Prepare")
	if r := <-res; p.err != nil || r.State != ResolvedPrepared || r.MinCommitTS != p.ts {
		t.Fatalf("Resolve during Prepare = %+v; Prepare %d, %v", r, p.ts, p.err)
	}
	if err := s.Abort(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if r, err := s.Resolve(ctx, 3); err != nil || r.State != ResolvedAborted {
		t.Fatalf("Resolve after Abort = %+v, %v", r, err)
	}
}

// The minimum commit timestamp is fixed when Prepare takes its locks, before its record is
// durable: a read at or above it waits for the transaction from then on, a read below it does
// not, and the vote is that minimum even if later reads raise maxTS meanwhile.
func TestMinCommitTSIsFixedWhenTheLocksAreTaken(t *testing.T) {
	s, hold, unhold := openHeldRounds(t)
	ctx := context.Background()
	base := mustApply(t, s, 5, nil, put("k", "0"))
	mustGet(t, s, 50, "k")
	hold()
	prep := goPrepare(s, 3, 10, put("k", "1"))
	waitState(t, s, "Prepares writing", 1, func() int { return len(s.mu.prepared) })
	if v := mustGet(t, s, 50, "k"); string(v.Value) != "0" || v.Version != base {
		t.Fatalf("read below the minimum: %+v", v)
	}
	above := goGet(s, 51, "k")
	notYet(t, above, "read at the minimum while the Prepare writes")
	mustGet(t, s, 70, "elsewhere")
	unhold()
	if p := await(t, prep, "Prepare"); p.err != nil || p.ts != 51 {
		t.Fatalf("Prepare = %d, %v; want the minimum fixed at 51", p.ts, p.err)
	}
	notYet(t, above, "read at the minimum of a prepared transaction")
	if err := s.Commit(ctx, 3, 51); err != nil {
		t.Fatal(err)
	}
	if r := await(t, above, "read at the minimum"); r.err != nil || string(r.vals[0].Value) != "1" {
		t.Fatalf("read at the commit timestamp: %+v, %v", r.vals, r.err)
	}
}

// Markers go when they are no longer needed, and only then: a committed one when told its
// commit is synced everywhere (at the right timestamp), an aborted one once older than the
// bound. A Prepare of a forgotten committed transaction is still refused, from the prepare
// record's deletion; a Resolve of a swept aborted one records "aborted" again.
func TestOutcomeMarkersGoWhenNoLongerNeeded(t *testing.T) {
	for _, mode := range reopenModes {
		t.Run(mode, func(t *testing.T) {
			opts := testOpts(t, t.TempDir())
			s := openTest(t, opts)
			ctx := context.Background()
			min := mustPrepare(t, s, 1, 10, nil, put("a", "1"))
			if err := s.Commit(ctx, 1, min); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Resolve(ctx, 2); err != nil { // refused: an aborted marker
				t.Fatal(err)
			}
			if n, err := s.ForgetOutcomes(map[uint64]uint64{1: min + 1, 2: 5}); err != nil || n != 0 {
				t.Fatalf("forget with the wrong timestamp, or of an abort: %d, %v; want nothing dropped", n, err)
			}
			if n, err := s.SweepOutcomes(time.Now().Add(-time.Hour)); err != nil || n != 0 {
				t.Fatalf("sweep of markers younger than the bound: %d, %v", n, err)
			}
			if n, err := s.ForgetOutcomes(map[uint64]uint64{1: min}); err != nil || n != 1 {
				t.Fatalf("forget: %d, %v; want 1", n, err)
			}
			if n, err := s.SweepOutcomes(time.Now().Add(time.Second)); err != nil || n != 1 {
				t.Fatalf("sweep: %d, %v; want 1", n, err)
			}
			s = reopen(t, s, opts, mode)
			if _, err := s.Prepare(ctx, PrepareRecord{TxnID: 1, StartTS: 10, Ops: []Op{put("a", "2")}}, nil); !errors.Is(err, ErrAborted) {
				t.Fatalf("late Prepare of a committed transaction whose marker went: %v, want refused", err)
			}
			mustPrepare(t, s, 3, 10, nil, put("c", "1"))
			if err := s.Abort(ctx, 3); err != nil {
				t.Fatal(err)
			}
			if n, err := s.SweepOutcomes(time.Now().Add(time.Second)); err != nil || n != 1 {
				t.Fatalf("sweep of an abort prepared here: %d, %v; want 1", n, err)
			}
			if r, err := s.Resolve(ctx, 3); err != nil || r.State != ResolvedAborted || r.Refused {
				t.Fatalf("Resolve of an abort prepared here, its marker swept = %+v, %v; want aborted", r, err)
			}
			r, err := s.Resolve(ctx, 2)
			if err != nil || r.State != ResolvedAborted || !r.Refused {
				t.Fatalf("Resolve of a swept abort = %+v, %v; want aborted, recorded again", r, err)
			}
			if r, err := s.Resolve(ctx, 2); err != nil || r.State != ResolvedAborted || r.Refused {
				t.Fatalf("second Resolve = %+v, %v; want the new marker", r, err)
			}
			wantValue(t, mustGet(t, s, min, "a"), "1", min)
		})
	}
}
