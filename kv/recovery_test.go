package kv

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// reopenModes are the two ways a store comes back: after a clean Close, and
// from a copy of its files taken while it was running (as after a crash:
// memtables not flushed, recovery from the write-ahead logs).
var reopenModes = []string{"close", "crash"}

// reopen returns a store opened (with opts, except for the directory) from
// s's state in the given mode. In crash mode the original store is left
// running until the test's cleanup.
func reopen(t *testing.T, s *Store, opts Options, mode string) *Store {
	t.Helper()
	opts.Dir = s.dir
	if mode == "crash" {
		opts.Dir = crashCopy(t, s.dir)
		// The original may still hold prepared transactions; this cleanup
		// runs before openTest's, which then skips its checks.
		t.Cleanup(func() { s.Close() })
	} else if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return openTest(t, opts)
}

func TestRecoveryPreparedThenCommitted(t *testing.T) {
	for _, mode := range reopenModes {
		t.Run(mode, func(t *testing.T) {
			opts := testOpts(t, t.TempDir())
			opts.LockWait = 50 * time.Millisecond
			s := openTest(t, opts)
			ctx := context.Background()
			base := mustApply(t, s, 5, nil, put("a", "0"))
			at := time.Unix(1700000000, 0)
			min, err := s.Prepare(ctx, PrepareRecord{TxnID: 7, StartTS: 10, Ops: []Op{put("a", "1"), put("b", "2")},
				Participants: []string{"n1", "n2"}, PreparedAt: at}, []Compare{{Kind: CmpMissing, Key: []byte("guard")}})
			if err != nil {
				t.Fatal(err)
			}

			s = reopen(t, s, opts, mode)
			got := s.Prepared()
			if len(got) != 1 || got[0].TxnID != 7 || got[0].StartTS != 10 || !got[0].Recovered ||
				!slices.Equal(got[0].Participants, []string{"n1", "n2"}) || !got[0].PreparedAt.Equal(at) || len(got[0].Keys) != 3 {
				t.Fatalf("recovered Prepared() = %+v", got)
			}
			// Its locks are back, compare keys included.
			for _, k := range []string{"a", "b", "guard"} {
				if _, err := s.Apply(ctx, 8, 0, nil, []Op{put(k, "x")}); !errors.Is(err, ErrConflict) {
					t.Fatalf("write to %q of a recovered prepared txn: %v", k, err)
				}
			}
			if _, err := s.Get(ctx, [][]byte{[]byte("a")}, 11); !errors.Is(err, ErrLocked) {
				t.Fatalf("read above a recovered prepared txn: %v", err)
			}
			wantValue(t, mustGet(t, s, 10, "a"), "0", base)
			// A repeated Prepare still gets its yes.
			if m := mustPrepare(t, s, 7, 10, []Compare{{Kind: CmpMissing, Key: []byte("guard")}}, put("a", "1"), put("b", "2")); m <= 10 {
				t.Fatalf("repeated Prepare after recovery: min %d", m)
			}
			if err := s.Commit(ctx, 7, min); err != nil {
				t.Fatal(err)
			}
			wantValue(t, mustGet(t, s, min, "a"), "1", min)
			wantValue(t, mustGet(t, s, min, "b"), "2", min)

			// The commit itself survives another restart.
			s = reopen(t, s, opts, mode)
			if len(s.Prepared()) != 0 {
				t.Fatalf("committed txn is prepared again: %+v", s.Prepared())
			}
			wantValue(t, mustGet(t, s, min, "a"), "1", min)
			wantValue(t, mustGet(t, s, min-1, "a"), "0", base)
		})
	}
}

func TestRecoveryPreparedThenAborted(t *testing.T) {
	for _, mode := range reopenModes {
		t.Run(mode, func(t *testing.T) {
			opts := testOpts(t, t.TempDir())
			s := openTest(t, opts)
			ctx := context.Background()
			mustPrepare(t, s, 1, 10, nil, put("a", "1"))
			mustPrepare(t, s, 2, 11, nil, put("b", "2"))
			if err := s.Abort(ctx, 2); err != nil {
				t.Fatal(err)
			}

			s = reopen(t, s, opts, mode)
			if got := s.Prepared(); len(got) != 1 || got[0].TxnID != 1 {
				t.Fatalf("recovered Prepared() = %+v, want only txn 1", got)
			}
			if err := s.Abort(ctx, 1); err != nil {
				t.Fatal(err)
			}
			wantMissing(t, mustGet(t, s, 100, "a"))
			wantMissing(t, mustGet(t, s, 100, "b"))
			s = reopen(t, s, opts, mode)
			if got := s.Prepared(); len(got) != 0 {
				t.Fatalf("aborted txn is prepared again: %+v", got)
			}
		})
	}
}

func TestRecoveryCommittedDataSurvives(t *testing.T) {
	for _, mode := range reopenModes {
		t.Run(mode, func(t *testing.T) {
			opts := testOpts(t, t.TempDir())
			s := openTest(t, opts)
			rng := rand.New(rand.NewPCG(1, 2))
			type write struct {
				key, val string
				ts       uint64
				deleted  bool
			}
			var writes []write
			for i := range 200 {
				k := fmt.Sprintf("key-%03d", rng.IntN(50))
				if rng.IntN(5) == 0 {
					ts := mustApply(t, s, 0, nil, del(k))
					writes = append(writes, write{key: k, ts: ts, deleted: true})
				} else {
					v := fmt.Sprintf("val-%d", i)
					ts := mustApply(t, s, 0, nil, put(k, v))
					writes = append(writes, write{key: k, val: v, ts: ts})
				}
			}
			// Values of 1 MiB and more live in Badger's value log.
			big := strings.Repeat("x", 3<<19)
			bigTS := mustApply(t, s, 0, nil, put("big", big))
			writes = append(writes, write{key: "big", val: big, ts: bigTS})

			s = reopen(t, s, opts, mode)
			// Every write is readable at its own timestamp.
			for _, w := range writes {
				v := mustGet(t, s, w.ts, w.key)
				if w.deleted {
					wantMissing(t, v)
				} else {
					wantValue(t, v, w.val, w.ts)
				}
			}
		})
	}
}

func TestRecoveryMaxTSCoversServedReads(t *testing.T) {
	for _, mode := range reopenModes {
		t.Run(mode, func(t *testing.T) {
			opts := testOpts(t, t.TempDir())
			opts.MaxTSBatch = 10
			s := openTest(t, opts)
			var served uint64
			for i := range 50 {
				served = uint64(1 + i*7)
				mustGet(t, s, served, "k")
			}
			commit := mustApply(t, s, served+100, nil, put("k", "v"))
			served = 5_000_000
			mustGet(t, s, served, "other")

			s = reopen(t, s, opts, mode)
			if st := s.Stats(); st.MaxTS < served {
				t.Fatalf("MaxTS after reopen = %d, below the read served at %d", st.MaxTS, served)
			}
			// A write asking for an old timestamp lands above every read served.
			if cts := mustApply(t, s, 1, nil, put("k", "later")); cts <= served {
				t.Fatalf("commit at %d after reopen, not above the read at %d", cts, served)
			}
			wantValue(t, mustGet(t, s, served, "k"), "v", commit)
		})
	}
}

func TestRecoveryRejectsCorruptRecord(t *testing.T) {
	opts := testOpts(t, t.TempDir())
	s := openTest(t, opts)
	txn := s.db.NewTransactionAt(^uint64(0), true)
	if err := txn.Set(prepareKey(5), []byte{recordVersion, 1, 2}); err != nil {
		t.Fatal(err)
	}
	if err := txn.CommitAt(10, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(opts); err == nil || !errors.Is(err, errCorrupt) {
		t.Fatalf("Open with a corrupt prepare record: %v", err)
	}
}
