package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/ristretto/v2/z"
)

// Every budget from Badger's minimum up is spent within itself, and a bigger budget never gets
// smaller or fewer memtables.
func TestMemoryPlanFitsEveryBudget(t *testing.T) {
	floor := memoryUse(minMemTableSize, 0)
	var last memoryPlan
	for budget := floor; budget <= 2<<30; budget += 3 << 20 {
		p, err := planMemory(budget)
		if err != nil {
			t.Fatalf("budget %d: %v", budget, err)
		}
		if use := memoryUse(p.memTableSize, p.queued); use > budget {
			t.Fatalf("budget %d: plan %+v uses %d", budget, p, use)
		}
		if p.memTableSize < minMemTableSize || p.memTableSize > maxMemTableSize || p.queued > maxQueuedMemtables {
			t.Fatalf("budget %d: plan %+v out of Badger's range", budget, p)
		}
		if p.memTableSize < last.memTableSize || p.queued < last.queued {
			t.Fatalf("budget %d: plan %+v is smaller than %+v of a smaller budget", budget, p, last)
		}
		last = p
	}
	if last.queued != maxQueuedMemtables || last.memTableSize <= badgerMemTableSize {
		t.Fatalf("a 2 GiB budget gets %+v, want %d queued memtables over 64 MiB", last, maxQueuedMemtables)
	}
	if _, err := planMemory(floor - 1); err == nil {
		t.Fatalf("budget %d below Badger's minimum %d accepted", floor-1, floor)
	}
}

// MinMemoryBytes is the smallest budget whose memtables hold the largest transaction of the
// limits, from the smallest limits to ones that need memtables over 64 MiB.
func TestMinMemoryBytesIsTheSmallestBudgetThatHoldsTheLimits(t *testing.T) {
	for txnBytes := 1; txnBytes <= 64<<20; txnBytes = txnBytes*2 + 12345 {
		need := memTableFor(int64(txnBytes), 1024, 4<<10)
		min := MinMemoryBytes(txnBytes, 1024, 4<<10)
		p, err := planMemory(min)
		if err != nil {
			t.Fatalf("%d-byte transactions: MinMemoryBytes %d: %v", txnBytes, min, err)
		}
		if p.memTableSize < need {
			t.Fatalf("%d-byte transactions need %d-byte memtables; MinMemoryBytes %d gives %+v", txnBytes, need, min, p)
		}
		if less, err := planMemory(min - 1); err == nil && less.memTableSize >= need {
			t.Fatalf("%d-byte transactions: a budget of %d, below MinMemoryBytes %d, also holds them (%+v)", txnBytes, min-1, min, less)
		}
	}
	if min := MinMemoryBytes(200<<20, 1024, 4<<10); min != math.MaxInt64 {
		t.Fatalf("200 MiB transactions, over 15%% of the largest memtable: MinMemoryBytes %d, want math.MaxInt64", min)
	}
}

// Opening a store with a budget gives Badger memtables within it, and none of the caches or
// compression that would hold more.
func TestOpenSizesBadgerFromTheBudget(t *testing.T) {
	for _, budget := range []int64{0, memoryUse(minMemTableSize, 0), DefaultMemoryBytes, 512 << 20} {
		t.Run(fmt.Sprint(budget>>20, "MiB"), func(t *testing.T) {
			opts := testOpts(t, t.TempDir())
			opts.MemoryBytes = budget
			s := openTest(t, opts)
			o := s.db.Opts()
			if budget == 0 {
				budget = DefaultMemoryBytes
			}
			if use := memoryUse(o.MemTableSize, o.NumMemtables); use > budget {
				t.Errorf("memtables of %d bytes, %d queued: %d bytes, over the budget of %d", o.MemTableSize, o.NumMemtables, use, budget)
			}
			if o.Compression != options.None || o.BlockCacheSize != 0 || o.IndexCacheSize != 0 || o.BlockSize != blockSize || o.NumCompactors != numCompactors {
				t.Errorf("compression %v, block cache %d, index cache %d, blocks of %d, %d compactors",
					o.Compression, o.BlockCacheSize, o.IndexCacheSize, o.BlockSize, o.NumCompactors)
			}
			if o.ValueThreshold != valueThreshold {
				t.Errorf("value threshold %d, want %d", o.ValueThreshold, valueThreshold)
			}
		})
	}
	opts := testOpts(t, t.TempDir())
	opts.MemoryBytes = memoryUse(minMemTableSize, 0) - 1
	if _, err := Open(opts); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "memory budget") {
		t.Fatalf("Open with a budget below the minimum: %v, want an invalid argument naming the budget", err)
	}
}

// At MinMemoryBytes of the default limits (4 MiB of keys and values, 1,024 operations, 4 KiB
// keys), the largest transactions are written whole: one-phase, and prepared then committed,
// with the longest keys and with values that are split into chunks.
func TestMinMemoryBytesHoldsTheLargestTransactions(t *testing.T) {
	const txnBytes, txnOps, keyBytes = 4 << 20, 1024, 4 << 10
	opts := testOpts(t, t.TempDir())
	opts.MemoryBytes = MinMemoryBytes(txnBytes, txnOps, keyBytes)
	s := openTest(t, opts)
	if batch := s.db.MaxBatchSize(); batch < txnBytes {
		t.Fatalf("budget %d gives batches of %d bytes, below a transaction's %d", opts.MemoryBytes, batch, txnBytes)
	}
	key := func(prefix string, i, n int) []byte {
		k := fmt.Appendf(nil, "%s/%d/", prefix, i)
		return append(k, bytes.Repeat([]byte{'k'}, n-len(k))...)
	}
	// 1,024 operations and compares with 4 KiB keys and no values.
	longKeys := func(prefix string) ([]Compare, []Op) {
		var cmps []Compare
		var ops []Op
		for i := range txnOps {
			if i%2 == 0 {
				cmps = append(cmps, Compare{Kind: CmpMissing, Key: key(prefix+"c", i, keyBytes)})
			} else {
				ops = append(ops, Op{Kind: OpPut, Key: key(prefix, i, keyBytes)})
			}
		}
		return cmps, ops
	}
	// Three values of 1 MiB (split into chunks) and one that makes up the rest.
	bigValues := func(prefix string) ([]Compare, []Op) {
		var ops []Op
		left := txnBytes
		for i := 0; left > 0; i++ {
			k := key(prefix, i, keyBytes)
			v := min(1<<20, left-len(k))
			ops = append(ops, Op{Kind: OpPut, Key: k, Value: bytes.Repeat([]byte{byte('a' + i)}, v)})
			left -= len(k) + v
		}
		return nil, ops
	}
	for i, txn := range []func(string) ([]Compare, []Op){longKeys, bigValues} {
		cmps, ops := txn(fmt.Sprint("apply", i))
		if _, err := s.Apply(context.Background(), uint64(10+i), 0, cmps, ops); err != nil {
			t.Fatalf("Apply of transaction %d: %v", i, err)
		}
		cmps, ops = txn(fmt.Sprint("prepare", i))
		min, err := s.Prepare(context.Background(), PrepareRecord{TxnID: uint64(20 + i), StartTS: uint64(100 + 10*i), Ops: ops, Participants: []string{"node1", "node2"}}, cmps)
		if err != nil {
			t.Fatalf("Prepare of transaction %d: %v", i, err)
		}
		if err := s.Commit(context.Background(), uint64(20+i), min); err != nil {
			t.Fatalf("Commit of transaction %d: %v", i, err)
		}
		last := ops[len(ops)-1]
		wantValue(t, mustGet(t, s, min, string(last.Key)), string(last.Value), min)
	}
}

// A store opened with smaller memtables than its memtable logs were written with (a lowered
// budget, or an upgrade from bigger memtables, after a crash) replays them and serves their
// writes, instead of Badger exiting the process ("Arena too small").
func TestSmallerMemtablesReplayTheLogsOfBiggerOnes(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprint("legacy=", legacy), func(t *testing.T) {
			opts := testOpts(t, t.TempDir())
			opts.MemTableSize = 32 << 20
			s := openTest(t, opts)
			value := bytes.Repeat([]byte{'v'}, 512<<10)
			var ts []uint64
			for i := range 40 { // 20 MiB: one memtable of 32 MiB, twice what one of 8 MiB holds
				ts = append(ts, mustApply(t, s, 0, nil, Op{Kind: OpPut, Key: fmt.Appendf(nil, "k%d", i), Value: value}))
			}
			crashed := crashCopy(t, opts.Dir)
			if legacy { // written before the record existed, with Badger's 64 MiB memtables
				if err := os.Remove(filepath.Join(crashed, memtableRecord)); err != nil {
					t.Fatal(err)
				}
			}
			opts.Dir, opts.MemTableSize = crashed, 8<<20
			r := openTest(t, opts)
			for i, at := range ts {
				wantValue(t, mustGet(t, r, at, fmt.Sprintf("k%d", i)), string(value), at)
			}
			if o := r.db.Opts(); o.MemTableSize != 8<<20 {
				t.Fatalf("reopened with memtables of %d bytes, want 8 MiB", o.MemTableSize)
			}
			if data, err := os.ReadFile(filepath.Join(crashed, memtableRecord)); err != nil || strings.TrimSpace(string(data)) != fmt.Sprint(8<<20) {
				t.Fatalf("memtable record %q, %v: want 8 MiB", data, err)
			}
		})
	}
}

// The store reaches Badger's table-builder pool (a Badger upgrade that moves it fails here),
// and draining it releases what it holds.
func TestBuilderPoolIsReachableAndDrained(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	pool := builderPool(s.db)
	if pool == nil {
		t.Fatal("Badger's table-builder pool is out of reach")
	}
	const tag = "kv-test-pooled"
	for range 3 {
		pool.Return(z.NewAllocator(4<<20, tag))
	}
	if !strings.Contains(z.Allocators(), "Tag: "+tag) {
		t.Fatalf("the pooled allocators are not live: %s", z.Allocators())
	}
	drainPool(pool)
	if strings.Contains(z.Allocators(), "Tag: "+tag) {
		t.Fatalf("the pool still holds its allocators after a drain: %s", z.Allocators())
	}
}
