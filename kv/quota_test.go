package kv

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// Past its quota a store refuses new writes (deletes too) with a typed error, also after a
// restart, while reads, compare-only transactions and the commit of a transaction prepared
// before go on; once the GC safe point passes the overwritten versions, the store reclaims
// their space by itself, the alarm clears and writes are accepted again.
func TestOverQuotaWritesAreRefusedUntilGCFreesSpace(t *testing.T) {
	const quota = 4 << 20
	opts := testOpts(t, t.TempDir())
	opts.QuotaBytes = quota
	s := openTest(t, opts)
	ctx := context.Background()
	var ts oracle
	ts.observe(10)
	startTS := ts.next()
	min := mustPrepare(t, s, 1, startTS, nil, put("prepared", "before the alarm"))

	// Overwrite four keys with 256 KiB values until the store refuses: every version but the
	// newest of each is garbage once the safe point passes it.
	rng := rand.New(rand.NewChaCha8([32]byte{1}))
	val := make([]byte, 256<<10)
	keys := []string{"k0", "k1", "k2", "k3"}
	latest := map[string]string{}
	var refused error
	for i := 0; refused == nil; i++ {
		if i == 200 { // 50 MiB, twelve times the quota
			t.Fatalf("200 writes of 256 KiB accepted under a quota of %d bytes (store at %d bytes)", quota, s.Stats().DiskBytes)
		}
		for j := range val {
			val[j] = byte(rng.Uint32())
		}
		k := keys[i%len(keys)]
		if _, err := s.Apply(ctx, 0, ts.next(), nil, []Op{{Kind: OpPut, Key: []byte(k), Value: val}}); err != nil {
			refused = err
		} else {
			latest[k] = string(val)
		}
		if i%8 == 7 {
			s.checkSpace() // what the background check does each second
		}
	}
	var se *SpaceExceededError
	if !errors.As(refused, &se) || !errors.Is(refused, ErrSpaceExceeded) || se.Quota != quota || se.Used < quota ||
		!strings.Contains(refused.Error(), "space exceeded") {
		t.Fatalf("write over the quota: %v, want *SpaceExceededError at or over %d bytes", refused, quota)
	}
	if st := s.Stats(); !st.SpaceAlarm || st.QuotaBytes != quota {
		t.Fatalf("stats over the quota: %+v, want the alarm raised", st)
	}
	checkRefused := func(s *Store) {
		t.Helper()
		if _, err := s.Apply(ctx, 0, ts.next(), nil, []Op{put("new", "x")}); !errors.Is(err, ErrSpaceExceeded) {
			t.Fatalf("put over the quota: %v, want ErrSpaceExceeded", err)
		}
		if _, err := s.Apply(ctx, 0, ts.next(), nil, []Op{del("k0")}); !errors.Is(err, ErrSpaceExceeded) {
			t.Fatalf("delete over the quota: %v, want ErrSpaceExceeded", err)
		}
		if _, err := s.Prepare(ctx, PrepareRecord{TxnID: 2, StartTS: ts.next(), Ops: []Op{put("new", "x")}}, nil); !errors.Is(err, ErrSpaceExceeded) {
			t.Fatalf("prepare over the quota: %v, want ErrSpaceExceeded", err)
		}
		if err := s.Restore(ctx, []Value{{Key: []byte("restored"), Value: []byte("x"), Version: 5}}); !errors.Is(err, ErrSpaceExceeded) {
			t.Fatalf("restore over the quota: %v, want ErrSpaceExceeded", err)
		}
		for k, v := range latest {
			if got := mustGet(t, s, ts.next(), k); string(got.Value) != v {
				t.Fatalf("read of %s over the quota: %d bytes, not the last value written", k, len(got.Value))
			}
		}
		if _, err := s.Apply(ctx, 0, ts.next(), []Compare{{Kind: CmpExists, Key: []byte("k0")}}, nil); err != nil {
			t.Fatalf("compare-only transaction over the quota: %v", err)
		}
	}
	checkRefused(s)
	// The prepared transaction's vote stands (a repeated prepare is not a new write), and its
	// commit goes through: refusing it would hold its locks and split it across shards.
	if again := mustPrepare(t, s, 1, startTS, nil, put("prepared", "before the alarm")); again != min {
		t.Fatalf("repeated prepare over the quota: min commit ts %d, want %d", again, min)
	}
	commitTS := max(ts.next(), min)
	if err := s.Commit(ctx, 1, commitTS); err != nil {
		t.Fatalf("commit of a transaction prepared before the alarm: %v", err)
	}
	ts.observe(commitTS)
	wantValue(t, mustGet(t, s, ts.next(), "prepared"), "before the alarm", commitTS)

	// The alarm is not kept on disk, but a reopened store measures itself before it serves.
	s = reopen(t, s, opts, "close")
	if !s.Stats().SpaceAlarm {
		t.Fatalf("reopened over the quota without the alarm: %+v", s.Stats())
	}
	checkRefused(s)
	s.checkSpace() // no safe point yet: nothing to reclaim
	if st := s.Stats(); !st.SpaceAlarm {
		t.Fatalf("alarm cleared with no safe point: %+v", st)
	}

	// The safe point passes every overwritten version: a check reclaims their space.
	if err := s.SetSafePoint(ctx, ts.next()); err != nil {
		t.Fatal(err)
	}
	s.checkSpace()
	st := s.Stats()
	if st.SpaceAlarm || st.DiskBytes >= quota*spaceClearPercent/100 {
		t.Fatalf("after the safe point passed the overwritten versions: %+v, want the alarm cleared below %d bytes", st, quota*spaceClearPercent/100)
	}
	for k, v := range latest {
		if got := mustGet(t, s, ts.next(), k); string(got.Value) != v {
			t.Fatalf("read of %s after the reclaim: %d bytes, not the last value written", k, len(got.Value))
		}
	}
	wantValue(t, mustGet(t, s, ts.next(), "prepared"), "before the alarm", commitTS)
	mustApply(t, s, ts.next(), nil, put("new", "accepted again"))
}

// A reclaim drops the overwritten versions wherever they lie, also in a bottom level that an
// earlier reclaim (or compaction) filled while the safe point was still below them.
func TestReclaimDropsVersionsAlreadyInTheBottomLevel(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	ctx := context.Background()
	for v := uint64(10); v <= 50; v += 10 {
		mustApply(t, s, v, nil, put("a", "old"), put("m", "old"), put("z", "old"))
	}
	if err := s.reclaim(); err != nil { // no safe point: every version goes to the bottom level
		t.Fatal(err)
	}
	if n := tablesAbove(s); n != 0 {
		t.Fatalf("%d tables above the bottom level after a reclaim", n)
	}
	if err := s.SetSafePoint(ctx, 55); err != nil {
		t.Fatal(err)
	}
	if err := s.reclaim(); err != nil {
		t.Fatal(err)
	}
	raw := s.db.NewTransactionAt(35, false) // below the safe point, past the store's check
	defer raw.Discard()
	for _, k := range []string{"a", "m", "z"} {
		if item, err := raw.Get(append([]byte{tagData}, k...)); err == nil {
			t.Fatalf("version %d of %s is still there after a reclaim above it", item.Version(), k)
		}
		wantValue(t, mustGet(t, s, math.MaxUint64-1, k), "old", 50)
	}
}

// tablesAbove counts the tables of s outside the bottom level of its LSM tree.
func tablesAbove(s *Store) int {
	levels := s.db.Levels()
	n := 0
	for _, l := range levels[:len(levels)-1] {
		n += l.NumTables
	}
	return n
}

// Writes that run while a reclaim holds Badger's writes blocked wait for it, rather than
// failing: commits of prepared transactions must get through whenever they come.
func TestWritesDuringAReclaimWaitForIt(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	ctx := context.Background()
	var ts oracle
	ts.observe(10)
	stop := make(chan struct{})
	errs := make(chan error, 2)
	for w := range 2 {
		go func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				id := uint64(w*1_000_000 + i + 1)
				k := fmt.Sprintf("w%d/%d", w, i%50)
				if w == 0 {
					if _, err := s.Apply(ctx, id, ts.next(), nil, []Op{put(k, "v")}); err != nil {
						errs <- fmt.Errorf("apply during a reclaim: %w", err)
						return
					}
					continue
				}
				min, err := s.Prepare(ctx, PrepareRecord{TxnID: id, StartTS: ts.next(), Ops: []Op{put(k, "v")}}, nil)
				if err == nil {
					err = s.Commit(ctx, id, max(min, ts.next()))
				}
				if err != nil {
					errs <- fmt.Errorf("prepare and commit during a reclaim: %w", err)
					return
				}
			}
		}()
	}
	for range 5 {
		if err := s.reclaim(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
