package kv

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
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

// The chunks of a large value that the key no longer holds at the safe point (overwritten by a
// small value, deleted, or a finished transaction's prepare record) are deleted and compacted
// away, and the chunks of the large values still held stay readable. Without the sweep every
// such chunk stays on disk for good.
func TestStaleChunksGoOnceNoReadCanNeedThem(t *testing.T) {
	opts := testOpts(t, t.TempDir())
	s := openTest(t, opts)
	ctx := context.Background()
	big := func(c byte) string { return strings.Repeat(string(c), valueThreshold+valueThreshold/5) }
	mustApply(t, s, 10, nil, put("a", big('a')), put("b", big('b')), put("c", big('c')))
	mustApply(t, s, 20, nil, put("a", "small"), del("b"))
	min := mustPrepare(t, s, 7, 25, nil, put("d", big('d')))
	if err := s.Commit(ctx, 7, max(min, 30)); err != nil {
		t.Fatal(err)
	}
	live := func() map[string]uint64 { // the chunk keys on disk that are not deletions
		txn := s.db.NewTransactionAt(math.MaxUint64, false)
		defer txn.Discard()
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagChunk}, AllVersions: true})
		defer it.Close()
		out := map[string]uint64{}
		for it.Rewind(); it.Valid(); it.Next() {
			if !it.Item().IsDeletedOrExpired() {
				out[fmt.Sprintf("%q#%d", it.Item().Key()[5:], binary.BigEndian.Uint32(it.Item().Key()[1:5]))] = it.Item().Version()
			}
		}
		return out
	}
	before := live()
	if len(before) != 10 { // two chunks each: a, b, c, d and the prepare record of d
		t.Fatalf("chunk keys before the safe point: %v, want 10", before)
	}

	if err := s.SetSafePoint(ctx, 40); err != nil {
		t.Fatal(err)
	}
	waitSweep(t, s)
	var discarded uint64 // counted by every store the loop opens
	for i := range 8 {   // tables for level 0 to compact, as in the test above
		old := s
		s = reopen(t, s, opts, "close")
		discarded += old.Stats().Discarded
		mustApply(t, s, 41+uint64(i), nil, put("other", "x"))
	}
	if err := s.db.Flatten(1); err != nil {
		t.Fatal(err)
	}
	// Dropped at least: the six stale chunks, and the older versions of a and b.
	if discarded += s.Stats().Discarded; discarded < 8 {
		t.Errorf("Stats().Discarded counted %d entries dropped by compactions, want at least 8", discarded)
	}
	after := live()
	want := map[string]uint64{`"dc"#1`: 10, `"dc"#2`: 10, `"dd"#1`: 30, `"dd"#2`: 30}
	if fmt.Sprint(after) != fmt.Sprint(want) {
		t.Fatalf("chunk keys after the sweep and compaction: %v, want %v", after, want)
	}
	wantValue(t, mustGet(t, s, 40, "c"), big('c'), 10)
	wantValue(t, mustGet(t, s, 40, "d"), big('d'), 30)
	wantValue(t, mustGet(t, s, 40, "a"), "small", 20)
	wantMissing(t, mustGet(t, s, 40, "b"))
}

// A sweep of many stale chunks with long keys fits the smallest memtable: it splits its
// deletions by bytes as well as by count. Without that, the 80 deletions below (1.3 MB by
// Badger's estimate) were one transaction, over the 1.1 MB a 7 MiB memtable takes, and the
// chunks stayed for good.
func TestASweepOfLongKeysFitsTheSmallestMemtable(t *testing.T) {
	opts := testOpts(t, t.TempDir())
	opts.MemTableSize = minMemTableSize
	s := openTest(t, opts)
	ctx := context.Background()
	key := func(i int) string { return fmt.Sprintf("%05d", i) + strings.Repeat("k", 16<<10) }
	const n = 40 // each value of valueThreshold+1 bytes leaves two chunk keys
	for i := range n {
		mustApply(t, s, uint64(10+i), nil, put(key(i), strings.Repeat("v", valueThreshold+1)))
	}
	for i := range n {
		mustApply(t, s, uint64(100+i), nil, put(key(i), "small"))
	}
	chunks := func() int { // chunk keys whose newest version is not a deletion
		txn := s.db.NewTransactionAt(math.MaxUint64, false)
		defer txn.Discard()
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagChunk}})
		defer it.Close()
		count := 0
		for it.Rewind(); it.Valid(); it.Next() {
			count++
		}
		return count
	}
	if got := chunks(); got != 2*n {
		t.Fatalf("%d chunk keys before the sweep, want %d", got, 2*n)
	}
	if err := s.SetSafePoint(ctx, 200); err != nil {
		t.Fatal(err)
	}
	waitSweep(t, s)
	if got := chunks(); got != 0 {
		t.Fatalf("%d chunk keys left after the sweep, want none", got)
	}
	wantValue(t, mustGet(t, s, 200, key(7)), "small", 107)
}

// waitSweep waits for the sweep of stale chunks that SetSafePoint started to finish.
func waitSweep(t *testing.T, s *Store) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		s.mu.Lock()
		done := !s.mu.sweeping
		s.mu.Unlock()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the sweep of stale chunks did not finish")
		}
	}
}
