package kv

import (
	"context"
	"errors"
	"math"
	"testing"
)

// Past the GC safe point, reads below it are refused (also after a restart), a read at or above
// it still sees the newest version at or below its timestamp, and compaction really drops the
// versions no read may see any more.
func TestSafePointDiscardsOldVersionsAndRefusesReadsBelowIt(t *testing.T) {
	opts := testOpts(t, t.TempDir())
	s := openTest(t, opts)
	ctx := context.Background()
	for _, v := range []struct {
		ts  uint64
		val string
	}{{10, "v1"}, {20, "v2"}, {30, "v3"}} {
		mustApply(t, s, v.ts, nil, put("k", v.val))
	}
	wantValue(t, mustGet(t, s, 15, "k"), "v1", 10)
	if err := s.SetSafePoint(ctx, 25); err != nil {
		t.Fatal(err)
	}
	var ce *CompactedError
	if _, err := s.Get(ctx, [][]byte{[]byte("k")}, 15); !errors.As(err, &ce) || ce.SafePoint != 25 || !errors.Is(err, ErrCompacted) {
		t.Fatalf("read below the safe point: %v, want compacted at 25", err)
	}
	if _, _, err := s.Scan(ctx, nil, nil, 24, ScanOptions{}); !errors.Is(err, ErrCompacted) {
		t.Fatalf("scan below the safe point: %v, want compacted", err)
	}
	wantValue(t, mustGet(t, s, 25, "k"), "v2", 20)
	wantValue(t, mustGet(t, s, 31, "k"), "v3", 30)
	if err := s.SetSafePoint(ctx, 5); err != nil || s.SafePoint() != 25 {
		t.Fatalf("a lower safe point: %v, safe point %d; want it unchanged", err, s.SafePoint())
	}

	// Enough tables on disk (each Close flushes the memtable) for Badger to compact level 0
	// into level 1, then Flatten: the compactions that may drop what lies below the safe point.
	for i := range 8 {
		s = reopen(t, s, opts, "close")
		mustApply(t, s, 40+uint64(i), nil, put("other", "x"))
	}
	s = reopen(t, s, opts, "close")
	if _, err := s.Get(ctx, [][]byte{[]byte("k")}, 15); !errors.Is(err, ErrCompacted) {
		t.Fatalf("read below the safe point after a restart: %v, want compacted", err)
	}
	if err := s.db.Flatten(1); err != nil {
		t.Fatal(err)
	}
	raw := s.db.NewTransactionAt(15, false) // below the safe point, past the store's check
	defer raw.Discard()
	if item, err := raw.Get(append([]byte{tagData}, "k"...)); err == nil {
		t.Fatalf("version %d of k is still there after compaction below the safe point", item.Version())
	}
	wantValue(t, mustGet(t, s, 25, "k"), "v2", 20)
	wantValue(t, mustGet(t, s, math.MaxUint64-1, "k"), "v3", 30)
}
