package kv

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// testOpts returns options for a store in dir with a lock wait that no wait
// of a test reaches on a loaded machine (waits span several fsyncs under the
// race detector; a test of the bound sets its own), and a logger writing to
// the test's output.
func testOpts(t testing.TB, dir string) Options {
	return Options{
		Dir:      dir,
		LockWait: 10 * time.Second,
		Logger:   slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
}

// openTest opens a store and registers a cleanup that, unless the test has
// closed the store itself, asserts it is quiescent (no locks, no prepared
// transactions in memory, no live prepare record on disk) and closes it.
func openTest(t testing.TB, opts Options) *Store {
	t.Helper()
	s, err := Open(opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", opts.Dir, err)
	}
	t.Cleanup(func() {
		s.mu.Lock()
		closed := s.mu.closed
		s.mu.Unlock()
		if closed {
			return
		}
		assertQuiescent(t, s)
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// assertQuiescent checks that s holds no locks and no prepared transactions,
// in memory or on disk.
func assertQuiescent(t testing.TB, s *Store) {
	t.Helper()
	st := s.Stats()
	if st.LocksHeld != 0 || st.Prepared != 0 {
		t.Errorf("store not quiescent: %d locks held, %d prepared (%+v)", st.LocksHeld, st.Prepared, s.Prepared())
	}
	s.mu.Lock()
	n, queued, prepWaiting, pending := len(s.mu.prepared), len(s.mu.queues), len(s.mu.prepWaiting), len(s.mu.pending)
	s.mu.Unlock()
	if pending != 0 {
		t.Errorf("writes of %d keys still waiting for their sync round", pending)
	}
	if n != 0 {
		t.Errorf("%d transactions still in the prepared map", n)
	}
	if queued != 0 || prepWaiting != 0 {
		t.Errorf("lock queues not empty: Applies queued on %d keys, Prepares waiting on %d", queued, prepWaiting)
	}
	if recs := livePrepareRecords(t, s); len(recs) != 0 {
		t.Errorf("live prepare records left on disk for transactions %v", recs)
	}
}

// livePrepareRecords lists the transaction ids of prepare records visible
// at math.MaxUint64 (that is, not deleted).
func livePrepareRecords(t testing.TB, s *Store) []uint64 {
	t.Helper()
	txn := s.db.NewTransactionAt(math.MaxUint64, false)
	defer txn.Discard()
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagPrepare}})
	defer it.Close()
	var ids []uint64
	for it.Rewind(); it.Valid(); it.Next() {
		val, err := it.Item().ValueCopy(nil)
		if err != nil {
			t.Fatalf("read prepare record: %v", err)
		}
		rec, err := decodeRecord(val)
		if err != nil {
			t.Fatalf("decode prepare record: %v", err)
		}
		ids = append(ids, rec.TxnID)
	}
	return ids
}

// oracle hands out increasing timestamps, like the master's.
type oracle struct{ ts atomic.Uint64 }

func (o *oracle) next() uint64 { return o.ts.Add(1) }

// observe raises the oracle to at least ts.
func (o *oracle) observe(ts uint64) {
	for {
		cur := o.ts.Load()
		if cur >= ts || o.ts.CompareAndSwap(cur, ts) {
			return
		}
	}
}

func put(k, v string) Op { return Op{Kind: OpPut, Key: []byte(k), Value: []byte(v)} }
func del(k string) Op    { return Op{Kind: OpDelete, Key: []byte(k)} }

func mustApply(t testing.TB, s *Store, ts uint64, cmps []Compare, ops ...Op) uint64 {
	t.Helper()
	cts, err := s.Apply(context.Background(), 0, ts, cmps, ops)
	if err != nil {
		t.Fatalf("Apply(ts=%d): %v", ts, err)
	}
	return cts
}

func mustGet(t testing.TB, s *Store, ts uint64, key string) Value {
	t.Helper()
	vs, err := s.Get(context.Background(), [][]byte{[]byte(key)}, ts)
	if err != nil {
		t.Fatalf("Get(%q, ts=%d): %v", key, ts, err)
	}
	return vs[0]
}

// wantValue asserts v is found with the given value and version.
func wantValue(t testing.TB, v Value, value string, version uint64) {
	t.Helper()
	if !v.Found || string(v.Value) != value || v.Version != version {
		t.Fatalf("read %q: got found=%v value=%q version=%d, want %q at version %d",
			v.Key, v.Found, v.Value, v.Version, value, version)
	}
}

func wantMissing(t testing.TB, v Value) {
	t.Helper()
	if v.Found || v.Version != 0 || v.Value != nil {
		t.Fatalf("read %q: got found=%v value=%q version=%d, want missing", v.Key, v.Found, v.Value, v.Version)
	}
}

func mustPrepare(t testing.TB, s *Store, id, startTS uint64, cmps []Compare, ops ...Op) uint64 {
	t.Helper()
	min, err := s.Prepare(context.Background(), PrepareRecord{TxnID: id, StartTS: startTS, Ops: ops, Participants: []string{"n1", "n2"}}, cmps)
	if err != nil {
		t.Fatalf("Prepare(%d): %v", id, err)
	}
	return min
}

// result of a call run in the background.
type result struct {
	vals []Value
	ts   uint64
	err  error
}

// goGet runs Get in a goroutine.
func goGet(s *Store, ts uint64, keys ...string) <-chan result {
	ch := make(chan result, 1)
	bk := make([][]byte, len(keys))
	for i, k := range keys {
		bk[i] = []byte(k)
	}
	go func() {
		vs, err := s.Get(context.Background(), bk, ts)
		ch <- result{vals: vs, err: err}
	}()
	return ch
}

// goApply runs Apply in a goroutine.
func goApply(s *Store, txnID, ts uint64, cmps []Compare, ops ...Op) <-chan result {
	ch := make(chan result, 1)
	go func() {
		cts, err := s.Apply(context.Background(), txnID, ts, cmps, ops)
		ch <- result{ts: cts, err: err}
	}()
	return ch
}

// goPrepare runs Prepare of a transaction writing ops in a goroutine; the result's ts is the
// vote's minimum commit timestamp.
func goPrepare(s *Store, txnID, startTS uint64, ops ...Op) <-chan result {
	ch := make(chan result, 1)
	go func() {
		min, err := s.Prepare(context.Background(), PrepareRecord{TxnID: txnID, StartTS: startTS, Ops: ops}, nil)
		ch <- result{ts: min, err: err}
	}()
	return ch
}

// notYet asserts that nothing arrives on ch for a while: the call is blocked.
func notYet(t testing.TB, ch <-chan result, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s returned (%+v) while it should be waiting", what, r)
	case <-time.After(50 * time.Millisecond):
	}
}

// await waits for a background call's result.
func await(t testing.TB, ch <-chan result, what string) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return", what)
		return result{}
	}
}

// crashCopy copies the files of a live store's directory into a new
// directory, as the disk would look if the process died now without closing
// Badger: memtables are not flushed, so opening the copy exercises WAL
// replay and the recovery scan.
func crashCopy(t testing.TB, dir string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || e.Name() == "LOCK" {
			continue
		}
		if err := copyFile(filepath.Join(dir, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // removed by a compaction or flush meanwhile
			}
			t.Fatal(err)
		}
	}
	return dst
}

// Linux lseek whence values for sparse files.
const (
	seekData = 3
	seekHole = 4
)

// copyFile copies src to dst preserving holes: Badger preallocates its WAL
// and value-log files as sparse files of 128 MiB and 2 GiB.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if err := copySparse(in, out, fi.Size()); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func copySparse(in, out *os.File, size int64) error {
	if err := out.Truncate(size); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for pos := int64(0); pos < size; {
		start, err := in.Seek(pos, seekData)
		if err != nil {
			if errors.Is(err, syscall.ENXIO) {
				return nil // only a hole remains
			}
			// No SEEK_DATA support: copy everything.
			if _, err := in.Seek(0, io.SeekStart); err != nil {
				return err
			}
			_, err = io.Copy(out, in)
			return err
		}
		end, err := in.Seek(start, seekHole)
		if err != nil {
			return err
		}
		for off := start; off < end; {
			n := min(int64(len(buf)), end-off)
			if _, err := in.ReadAt(buf[:n], off); err != nil {
				return err
			}
			if _, err := out.WriteAt(buf[:n], off); err != nil {
				return err
			}
			off += n
		}
		pos = end
	}
	return nil
}

// release frees o's keys as the end of its call would.
func release(s *Store, keys []string, o *lockOwner) {
	s.mu.Lock()
	s.releaseLocked(keys, o)
	s.mu.Unlock()
}
