package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// openTestBadger opens a managed Badger DB in a temporary directory and
// closes it when the test ends (after the test's deferred syncer Close).
func openTestBadger(t *testing.T) (*badger.DB, string) {
	t.Helper()
	dir := t.TempDir()
	db, err := OpenBadger(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("close badger: %v", err)
		}
	})
	return db, dir
}

func TestGroupSyncerCoversOnlyCallsBeforeTheRound(t *testing.T) {
	_, dir := openTestBadger(t)
	var rounds atomic.Int32
	inFirst := make(chan struct{})
	release := make(chan struct{})
	g := NewGroupSyncer(dir, func(time.Duration) {
		if rounds.Add(1) == 1 {
			close(inFirst)
			<-release
		}
	})
	defer g.Close()

	a := make(chan error, 1)
	go func() { a <- g.Sync(context.Background()) }()
	<-inFirst // round 1 has begun (and synced) with a's registration

	b := make(chan error, 1)
	go func() { b <- g.Sync(context.Background()) }()
	// Wait until b has registered for the next round.
	for {
		g.mu.Lock()
		registered := g.mu.next != nil
		g.mu.Unlock()
		if registered {
			break
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-b:
		t.Fatalf("a Sync that arrived during round 1 returned (%v) before round 1 ended", err)
	default:
	}
	close(release)
	if err := <-a; err != nil {
		t.Fatal(err)
	}
	if err := <-b; err != nil {
		t.Fatal(err)
	}
	if n := rounds.Load(); n != 2 {
		t.Fatalf("the Sync that arrived during round 1 returned after %d rounds, want 2", n)
	}
}

func TestGroupSyncerBatchesConcurrentCallers(t *testing.T) {
	_, dir := openTestBadger(t)
	var rounds atomic.Int32
	// A slow disk: every round takes 5ms, so callers pile up behind it.
	g := NewGroupSyncer(dir, func(time.Duration) {
		rounds.Add(1)
		time.Sleep(5 * time.Millisecond)
	})
	defer g.Close()
	const callers = 64
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			if err := g.Sync(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	n := rounds.Load()
	t.Logf("%d callers shared %d sync rounds", callers, n)
	if n >= callers/2 {
		t.Fatalf("%d callers took %d rounds: not batched", callers, n)
	}
}

func TestGroupSyncerCloseAndContext(t *testing.T) {
	_, dir := openTestBadger(t)
	release := make(chan struct{})
	g := NewGroupSyncer(dir, func(time.Duration) { <-release })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := g.Sync(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sync with an expiring context: %v", err)
	}
	// Close completes the pending round before stopping.
	pending := make(chan error, 1)
	go func() { pending <- g.Sync(context.Background()) }()
	close(release)
	g.Close()
	g.Close()
	if err := <-pending; err != nil && !errors.Is(err, ErrClosed) {
		t.Fatalf("Sync racing Close: %v", err)
	}
	if err := g.Sync(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Sync after Close: %v, want ErrClosed", err)
	}
}

func TestGroupSyncerFsyncsEveryWALAndForgetsFlushedOnes(t *testing.T) {
	_, dir := openTestBadger(t)
	// A WAL older than the active one, as a rotated-out memtable awaiting its flush would be:
	// a round must fsync it as well as the active one.
	extra := filepath.Join(dir, "00000"+memFileExt)
	if err := os.WriteFile(extra, []byte("wal"), 0o644); err != nil {
		t.Fatal(err)
	}
	g := NewGroupSyncer(dir, nil)
	defer g.Close()
	if err := g.Sync(context.Background()); err != nil {
		t.Fatalf("sync round with a rotated WAL: %v", err)
	}
	mems, _ := filepath.Glob(filepath.Join(dir, "*"+memFileExt))
	if len(mems) < 2 {
		t.Fatalf("want the active WAL and the extra one, found %v", mems)
	}
	// A WAL that Badger flushed and deleted is forgotten, and rounds go on.
	if err := os.Remove(extra); err != nil {
		t.Fatal(err)
	}
	if err := g.Sync(context.Background()); err != nil {
		t.Fatalf("sync round after a WAL vanished: %v", err)
	}
	if g.wals[filepath.Base(extra)] != nil {
		t.Fatalf("the vanished WAL is still open")
	}
	// A WAL created after earlier rounds (a memtable rotation) is found by the next one.
	later := filepath.Join(dir, "99999"+memFileExt)
	if err := os.WriteFile(later, []byte("wal"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := g.Sync(context.Background()); err != nil {
		t.Fatalf("sync round after a new WAL: %v", err)
	}
	if g.wals[filepath.Base(later)] == nil {
		t.Fatalf("a round after %s appeared did not fsync it (open WALs: %v)", later, g.wals)
	}
}

// Nothing goes to Badger's value log, whose writes are not ordered before the WAL entries that
// point at them: a value at the value-log threshold and a prepare record over it are split into
// chunks in the LSM tree, and read back whole, across a restart too.
func TestValuesAndRecordsNeverReachTheValueLog(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, testOpts(t, dir))
	big := bytes.Repeat([]byte("0123456789"), valueThreshold/10+1)[:valueThreshold]
	huge := bytes.Repeat([]byte("abcdefgh"), 3*valueThreshold/8+5) // three and a bit chunks' worth
	ts := mustApply(t, s, 10, nil, Op{Kind: OpPut, Key: []byte("big"), Value: big})
	min := mustPrepare(t, s, 2, ts, []Compare{{Kind: CmpValueEqual, Key: []byte("big"), Value: big}},
		Op{Kind: OpPut, Key: []byte("huge"), Value: huge}, Op{Kind: OpPut, Key: []byte("big2"), Value: big})
	if err := s.Close(); err != nil { // Close truncates each value-log file to what it holds
		t.Fatal(err)
	}
	vlogs, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
	for _, f := range vlogs {
		if fi, err := os.Stat(f); err != nil || fi.Size() > 20 { // a value-log file's header is 20 bytes
			t.Fatalf("value-log file %s holds data (%v, %v): values reached the value log", f, fi.Size(), err)
		}
	}
	s = openTest(t, testOpts(t, dir))
	if p := s.Prepared(); len(p) != 1 || p[0].TxnID != 2 {
		t.Fatalf("the split prepare record was not recovered: %+v", p)
	}
	if err := s.Commit(context.Background(), 2, min); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string][]byte{"big": big, "huge": huge, "big2": big} {
		if v := mustGet(t, s, min, k); !bytes.Equal(v.Value, want) {
			t.Fatalf("%s read back as %d bytes, want %d", k, len(v.Value), len(want))
		}
	}
	_, err := s.Apply(context.Background(), 3, min+1, []Compare{{Kind: CmpValueEqual, Key: []byte("huge"), Value: big}}, nil)
	var cf *CompareFailedError
	if !errors.As(err, &cf) || !bytes.Equal(cf.Actual.Value, huge) {
		t.Fatalf("a failed compare on a split value: %v, want it to report the whole value", err)
	}
}

func TestStoreApplySharesSyncRounds(t *testing.T) {
	var rounds atomic.Int64
	opts := testOpts(t, t.TempDir())
	opts.OnSync = func(d time.Duration) {
		rounds.Add(1)
		time.Sleep(2 * time.Millisecond) // a disk slower than this VM's
	}
	s := openTest(t, opts)
	const writers, each = 32, 10
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				k := fmt.Sprintf("w%02d-%02d", w, i)
				if _, err := s.Apply(context.Background(), uint64(w), 0, nil, []Op{put(k, "v")}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	txns := int64(writers * each)
	n := rounds.Load()
	t.Logf("%d concurrent one-phase transactions shared %d sync rounds", txns, n)
	if n >= txns/2 {
		t.Fatalf("%d transactions took %d sync rounds: group commit is not batching", txns, n)
	}
	// Every acknowledged write is there.
	for w := range writers {
		for i := range each {
			if v := mustGet(t, s, s.Stats().MaxTS, fmt.Sprintf("w%02d-%02d", w, i)); !v.Found {
				t.Fatalf("write w%02d-%02d missing", w, i)
			}
		}
	}
}
