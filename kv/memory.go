package kv

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/skl"
)

// A store's Badger options are derived from a memory budget (Options.MemoryBytes). What Badger
// allocates, all of it on the Go heap:
//
//   - Memtables. Each is a skiplist arena allocated whole when the memtable is created:
//     MemTableSize plus room for one more write batch and its nodes, about 1.3×MemTableSize
//     (arenaBytes). One memtable takes writes, NumMemtables wait to be flushed and one is being
//     flushed: 2+NumMemtables arenas.
//   - Table builders. A flush builds the whole level-0 table, one memtable's data, in memory
//     before writing it. A compaction builds its tables the same way, up to a dozen or so at
//     a time, each reserving twice its table size (rounded up to a power of two) and doubling
//     that when its blocks outgrow it. Every table is BaseTableSize, 2 MiB
//     (tableSizeMultiplier): with Badger's default the tables grow twice larger at each level
//     below the top one, and so did the compactions' reservations as the store grew, 16 MiB per
//     builder two levels down, over 200 MiB at once in the profiles. When level 0 cannot be
//     compacted into the base level (a compaction there holds the key range), Badger
//     compacts four or more level-0 tables, each a memtable's data, into one table built in
//     memory (its builder reserves 256 MiB); no option turns that off.
//     Tables are written uncompressed, so a builder holds each block once (a compressed block
//     is held twice, before and after compression), and a block holds any one entry this
//     package writes (blockSize), so the builder never copies a large value to grow its block
//     (with Badger's 4 KiB blocks, it held every value over 4 KiB three times).
//   - Block and index caches: none. Uncompressed, unencrypted tables are read straight from
//     their mapped files, through the kernel's page cache, which is not the process's memory
//     and which the kernel sizes itself; Badger uses the caches only for compressed or
//     encrypted tables.
//
// The budget pays for 2+NumMemtables arenas, one flush's table (a memtable) and
// compactionBytes for the compactions' builders (memoryUse). That last share is what they
// hold under small values; under a stream of values near 1 MiB they hold 100 MiB and more
// at times (a dozen or two builders of 2 MiB tables of a few large values each, each grown to
// 12 MiB since four blocks of 1 MiB outgrow its first 4 MiB; and a flush's builder, grown
// 4+8+16+32 MiB), which no Badger option bounds (txn/README.md, Memory, has the
// measurements). planMemory grows the memtables to Badger's
// default size, 64 MiB, then lets up to maxQueuedMemtables more of them wait for their flush,
// then grows them again, up to 1 GiB. Badger's table builders keep their buffers in a pool
// that the store empties (builderpool.go), since otherwise the pool holds the largest tables
// ever built, several times over.
//
// A memtable must hold the largest Badger transaction the store writes: Badger refuses a
// transaction over 15% of MemTableSize (batchPercent). MinMemoryBytes is the budget whose
// memtables hold the largest one a transaction within given limits makes.

// DefaultMemoryBytes is the memory budget of a store whose Options.MemoryBytes is zero,
// 128 MiB: 31 MiB memtables, which hold a transaction of the default 4 MiB limit
// (MinMemoryBytes).
const DefaultMemoryBytes = 128 << 20

const (
	// batchPercent is the largest Badger write batch, in percent of MemTableSize (Badger's
	// maxBatchSize).
	batchPercent = 15
	// minMemTableSize is the smallest memtable Badger accepts with values of up to 1 MiB kept
	// in the LSM tree: its largest batch must exceed valueThreshold.
	minMemTableSize = 7 << 20
	// badgerMemTableSize is Badger's default memtable size, which a budget gives before it
	// queues memtables, and what every earlier version of kvtx used (memtableRecord relies on
	// that).
	badgerMemTableSize = 64 << 20
	// maxMemTableSize is the largest memtable a budget gives (Badger maps a memtable's log at
	// twice its size, with 32-bit offsets).
	maxMemTableSize = 1 << 30
	// maxQueuedMemtables is the most memtables a budget lets wait for their flush (Badger's
	// NumMemtables). With none, writes pause while a full memtable waits for the previous one's
	// flush to finish.
	maxQueuedMemtables = 4
	// compactionBytes is the share of the budget kept for the compactions' table builders:
	// what they hold under small values.
	compactionBytes = 16 << 20
	// numCompactors is Badger's NumCompactors: the fewest that compact (one is refused).
	numCompactors = 2
	// tableSizeMultiplier is Badger's TableSizeMultiplier: every level's tables have the top
	// level's size, so that a compaction's builders do not grow with the store.
	tableSizeMultiplier = 1
	// blockSize is the table block size: one block holds the largest entry this package writes
	// (a value below valueThreshold, its key and its header) without growing.
	blockSize = valueThreshold + 64<<10
	// recordAllowance bounds, in a prepare record, what the limits do not: its header and its
	// list of participants (node names).
	recordAllowance = 64 << 10
)

// entryOverhead is what Badger's size estimate of a transaction adds to each entry's key and
// value: 2 bytes of meta and 10 of version.
const entryOverhead = 2 + 10

// memoryPlan is how a budget is spent on Badger's memtables.
type memoryPlan struct {
	memTableSize int64 // Badger's MemTableSize
	queued       int   // Badger's NumMemtables
}

// arenaBytes is the size of the skiplist arena Badger allocates for a memtable of mt bytes: mt,
// plus one batch, plus the nodes of a batch of the smallest entries.
func arenaBytes(mt int64) int64 {
	batch := mt * batchPercent / 100
	return mt + batch + batch/int64(skl.MaxNodeSize)*int64(skl.MaxNodeSize)
}

// memoryUse is what Badger holds at most with memtables of mt bytes, queued of them waiting for
// their flush: the memtable written, the queued ones and the one being flushed, that flush's
// table, and the compactions' builders.
func memoryUse(mt int64, queued int) int64 {
	return int64(queued+2)*arenaBytes(mt) + mt + compactionBytes
}

// planMemory returns the memtables of budget: memtables of the largest whole number of MiB
// up to badgerMemTableSize whose memoryUse fits; with those, as many queued memtables as fit,
// up to maxQueuedMemtables; with those, memtables of the largest size that fits, up to
// maxMemTableSize. A bigger budget never gets smaller or fewer memtables.
func planMemory(budget int64) (memoryPlan, error) {
	if min := memoryUse(minMemTableSize, 0); budget < min {
		return memoryPlan{}, fmt.Errorf("memory budget of %d bytes: Badger needs at least %d", budget, min)
	}
	largest := func(queued int, limit int64) int64 {
		mt := int64(minMemTableSize)
		for mt < limit && memoryUse(mt+1<<20, queued) <= budget {
			mt += 1 << 20
		}
		return mt
	}
	p := memoryPlan{memTableSize: largest(0, badgerMemTableSize)}
	for p.memTableSize == badgerMemTableSize && p.queued < maxQueuedMemtables && memoryUse(p.memTableSize, p.queued+1) <= budget {
		p.queued++
	}
	if p.queued == maxQueuedMemtables {
		p.memTableSize = largest(maxQueuedMemtables, maxMemTableSize)
	}
	return p, nil
}

// MinMemoryBytes returns the smallest memory budget (Options.MemoryBytes) with which every
// transaction within the given limits fits in one Badger transaction: its one-phase write, its
// prepare record and its commit; math.MaxInt64 if none does (Badger refuses a transaction over
// 15% of a memtable, and memtables are at most 1 GiB). A smaller budget still works, but such
// a transaction is refused (a no vote, or an error naming Badger's limit) instead of written.
func MinMemoryBytes(maxTxnBytes, maxTxnOps, maxKeyBytes int) int64 {
	mt := memTableFor(int64(max(maxTxnBytes, 0)), int64(max(maxTxnOps, 0)), int64(max(maxKeyBytes, 0)))
	switch {
	case mt > maxMemTableSize:
		return math.MaxInt64
	case mt <= badgerMemTableSize:
		return memoryUse(mt, 0)
	default:
		return memoryUse(mt, maxQueuedMemtables)
	}
}

// memTableFor returns the smallest whole number of MiB of memtable (at least minMemTableSize)
// whose largest batch holds the largest Badger transaction of a transaction within the limits.
func memTableFor(txnBytes, txnOps, keyBytes int64) int64 {
	size, count := largestBatch(txnBytes, txnOps, keyBytes)
	mt := int64(minMemTableSize)
	for {
		batch := mt * batchPercent / 100
		if size < batch && count < batch/int64(skl.MaxNodeSize) || mt > maxMemTableSize {
			return mt
		}
		mt += 1 << 20
	}
}

// largestBatch bounds Badger's size estimate (key, value and entryOverhead per entry) and the
// entry count of the largest Badger transaction the store writes for a transaction of at most
// txnBytes of keys and values, txnOps operations and compares, and keys of keyBytes: the writes of Apply and Commit, values of valueThreshold or more split into
// chunks (chunks.go), a prepare record (record.go), itself split the same way, or a sweep of
// stale chunks. (The store's other Badger transactions are small, or split themselves.)
func largestBatch(txnBytes, txnOps, keyBytes int64) (size, count int64) {
	chunks := txnBytes/chunkSize + 1 // entries beyond one per op that chunking adds, at most
	// Apply and Commit: each op's data key ('d' + key) and value; a split value's first chunk
	// carries 4 bytes of length, and each further chunk its own key (5 bytes + data key). Commit
	// also deletes the prepare record and writes the outcome marker.
	writes := txnBytes + txnOps*(1+entryOverhead+4) + chunks*(5+1+keyBytes+entryOverhead) + 2*(9+16+entryOverhead)
	// A prepare record: a header, per op a kind byte and two lengths, per compare key a length,
	// the participants; then split into chunks under 'c' + number + prepare key.
	rec := recordAllowance + txnBytes + txnOps*(1+2*10)
	prepare := rec + 4 + (rec/chunkSize+1)*(5+9+entryOverhead)
	// A sweep of stale chunks deletes up to sweepChunkBatch chunk keys at a time, ending the
	// batch once it holds sweepChunkBytes (chunks.go), so at most one key past that.
	one := 5 + 1 + keyBytes + entryOverhead
	sweep := min(sweepChunkBatch*one, sweepChunkBytes+one)
	return max(writes, prepare, sweep), max(txnOps+chunks+3, sweepChunkBatch)
}

// badgerSizes are the sizes openBadger gives Badger.
type badgerSizes struct {
	memoryBytes      int64 // the budget (0: DefaultMemoryBytes)
	memTableSize     int64 // if set, overrides the budget's memtable size
	valueLogFileSize int64 // 0: Badger's 1 GiB
}

// plan returns the memtables of s.
func (s badgerSizes) plan() (memoryPlan, error) {
	budget := s.memoryBytes
	if budget == 0 {
		budget = DefaultMemoryBytes
	}
	p, err := planMemory(budget)
	if err != nil {
		return p, err
	}
	if s.memTableSize > 0 {
		if s.memTableSize < minMemTableSize {
			return p, fmt.Errorf("memtable size of %d bytes: Badger needs at least %d", s.memTableSize, minMemTableSize)
		}
		p.memTableSize = s.memTableSize
	}
	return p, nil
}

// Badger replays a memtable's write-ahead log (*.mem) at open into a memtable of the current
// MemTableSize, and exits the process if the log holds more than that memtable's arena: a
// budget lowered after a crash (or an upgrade from a version with bigger memtables) would stop
// the node from starting. So the store records, in memtableRecord, the memtable size its logs
// may have been written with, and before opening with a smaller one it opens Badger with the
// recorded size and closes it, which flushes the logs to tables and removes them.

// memtableRecord names the file, in the Badger directory, that holds the largest memtable size
// any memtable log there may have been written with. Without it, badgerMemTableSize.
const memtableRecord = "KVTX-MEMTABLE"

// fitMemtableLogs makes sure that every memtable log in dir fits a memtable of mt bytes, and
// records mt. open opens Badger in dir with memtables of the given size.
func fitMemtableLogs(dir string, mt int64, open func(mt int64) (*badger.DB, error)) error {
	path := filepath.Join(dir, memtableRecord)
	recorded, found, err := readMemtableRecord(path)
	if err != nil {
		return err
	}
	if found && recorded == mt {
		return nil
	}
	if recorded > mt {
		logs, err := hasMemtableLogs(dir)
		if err != nil {
			return err
		}
		if logs {
			db, err := open(recorded)
			if err != nil {
				return fmt.Errorf("replay memtable logs of %d-byte memtables: %w", recorded, err)
			}
			if err := db.Close(); err != nil {
				return fmt.Errorf("flush memtable logs of %d-byte memtables: %w", recorded, err)
			}
			// The logs' removal is durable before the record says they are gone.
			if err := syncDir(dir); err != nil {
				return err
			}
		}
	}
	return WriteFileDurably(path, []byte(strconv.FormatInt(mt, 10)+"\n"), 0o644)
}

// readMemtableRecord returns the size recorded at path, or badgerMemTableSize if there is none.
func readMemtableRecord(path string) (mt int64, found bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return badgerMemTableSize, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	mt, err = strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil || mt <= 0 {
		return 0, false, fmt.Errorf("%s holds %q, not a memtable size", path, data)
	}
	return mt, true, nil
}

// hasMemtableLogs reports whether dir holds a memtable log.
func hasMemtableLogs(dir string) (bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), memFileExt) {
			return true, nil
		}
	}
	return false, nil
}
