package kv

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// memFileExt is the suffix of Badger's memtable write-ahead-log files.
const memFileExt = ".mem"

// GroupSyncer batches fsyncs of one Badger DB across concurrent writers.
//
// Writers commit their Badger transactions with SyncWrites=false and then
// call Sync. One background goroutine performs sync rounds while there are
// waiters; a round releases every waiter that registered before it began, and
// callers that arrive during a round wait for the next one. Under load, N
// concurrent writers therefore share about one fsync per disk-flush latency
// instead of paying one each.
//
// A round makes durable every write that Badger had applied when the round
// began: it calls DB.Sync (the active memtable's WAL and the value log) and
// then fsyncs every memtable WAL file (*.mem) present in the directory but
// the newest, because DB.Sync does not cover memtables that were rotated out
// but not yet flushed. A WAL file that disappears meanwhile was flushed to an
// SST, which Badger syncs when it creates it, so it is skipped.
//
// Failure is sticky: after a round fails, that round's waiters and every
// later Sync get the error, since a failed fsync may have dropped dirty pages
// and a later successful one would not bring them back.
//
// Cost per round: one DB.Sync (an msync of the active WAL and one of the
// value log), one directory listing, and an open, fsync and close per older
// memtable WAL still awaiting its flush (usually none). Each Sync call costs one
// channel handshake; a round allocates one small object shared by all its
// waiters. The syncer does not own the DB: Close it before closing the DB.
type GroupSyncer struct {
	db      *badger.DB
	dir     string
	observe func(time.Duration)

	kick chan struct{} // capacity 1: "there may be waiters"
	stop chan struct{} // closed by Close
	done chan struct{} // closed when the loop goroutine has exited

	mu struct {
		sync.Mutex
		next   *syncRound // round that new waiters join; nil if none is pending
		closed bool
		err    error // first failure; sticky
	}
}

// syncRound is one fsync round; done is closed when it has completed, after
// err is set.
type syncRound struct {
	done chan struct{}
	err  error
}

// NewGroupSyncer starts a syncer for db, whose files live in dir (Badger's
// Dir and ValueDir must both be dir, as OpenBadger arranges). observe, if not
// nil, is called from the syncer goroutine with the duration of every round
// (for an fsync-latency histogram); it must not block.
func NewGroupSyncer(db *badger.DB, dir string, observe func(time.Duration)) *GroupSyncer {
	g := &GroupSyncer{
		db:      db,
		dir:     dir,
		observe: observe,
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go g.loop()
	return g
}

// Sync returns nil once a sync round that began after this call has
// completed, so every Badger write that returned before Sync was called is
// on stable storage. It returns the round's error if the round failed (and
// the first failure on every later call), ErrClosed after Close, or the
// context's error (wrapped) if ctx ends first; in that last case the
// durability of earlier writes is unknown to the caller, though the round
// still runs.
func (g *GroupSyncer) Sync(ctx context.Context) error {
	g.mu.Lock()
	if err := g.mu.err; err != nil {
		g.mu.Unlock()
		return err
	}
	if g.mu.closed {
		g.mu.Unlock()
		return ErrClosed
	}
	r := g.mu.next
	if r == nil {
		r = &syncRound{done: make(chan struct{})}
		g.mu.next = r
	}
	g.mu.Unlock()
	select {
	case g.kick <- struct{}{}:
	default: // a kick is already pending; the loop will see r
	}
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return fmt.Errorf("kv: waiting for group sync: %w", ctx.Err())
	}
}

// Close stops the syncer after completing a round for every waiter already
// registered; later Sync calls return ErrClosed. It is idempotent and does
// not close the DB.
func (g *GroupSyncer) Close() {
	g.mu.Lock()
	already := g.mu.closed
	g.mu.closed = true
	g.mu.Unlock()
	if !already {
		close(g.stop)
	}
	<-g.done
}

func (g *GroupSyncer) loop() {
	defer close(g.done)
	for {
		select {
		case <-g.kick:
		case <-g.stop:
		}
		for {
			g.mu.Lock()
			r, closed := g.mu.next, g.mu.closed
			g.mu.next = nil
			g.mu.Unlock()
			if r == nil {
				if closed {
					return
				}
				break
			}
			g.round(r)
		}
	}
}

// round runs one sync round for the waiters of r and releases them.
func (g *GroupSyncer) round(r *syncRound) {
	g.mu.Lock()
	err := g.mu.err
	g.mu.Unlock()
	if err == nil {
		start := time.Now()
		err = g.syncOnce()
		if g.observe != nil {
			g.observe(time.Since(start))
		}
		if err != nil {
			err = fmt.Errorf("kv: group sync of %s: %w", g.dir, err)
			g.mu.Lock()
			if g.mu.err == nil {
				g.mu.err = err
			}
			g.mu.Unlock()
		}
	}
	r.err = err
	close(r.done)
}

// syncOnce makes durable everything Badger had applied before it was called.
func (g *GroupSyncer) syncOnce() error {
	// DB.Sync first, listing second: a memtable that was active when the
	// round began is either still active now (covered by DB.Sync), or was
	// rotated before the listing below (so it is listed, or already flushed
	// to a synced SST).
	if err := g.db.Sync(); err != nil {
		return fmt.Errorf("badger sync: %w", err)
	}
	d, err := os.Open(g.dir)
	if err != nil {
		return fmt.Errorf("open directory: %w", err)
	}
	names, err := d.Readdirnames(-1)
	_ = d.Close() // read-only directory handle; nothing to flush
	if err != nil {
		return fmt.Errorf("list directory: %w", err)
	}
	for _, name := range walsToSync(names) {
		if err := fsyncFile(filepath.Join(g.dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// walsToSync returns the memtable WAL files among names that a round must
// fsync after DB.Sync: all but the newest. Badger numbers memtables in
// creation order, so the newest is either the memtable DB.Sync just synced
// or one created after DB.Sync began, which holds no write that completed
// before the round. Skipping it saves one fsync per round. A name ending in
// .mem that is not a number is synced, to be safe.
func walsToSync(names []string) []string {
	newest := -1
	var newestFid uint64
	for i, name := range names {
		if fid, ok := memFid(name); ok && (newest < 0 || fid > newestFid) {
			newest, newestFid = i, fid
		}
	}
	var out []string
	for i, name := range names {
		if i != newest && strings.HasSuffix(name, memFileExt) {
			out = append(out, name)
		}
	}
	return out
}

// memFid parses the number of a memtable WAL file name such as "00012.mem".
func memFid(name string) (uint64, bool) {
	base, ok := strings.CutSuffix(name, memFileExt)
	if !ok {
		return 0, false
	}
	fid, err := strconv.ParseUint(base, 10, 64)
	return fid, err == nil
}

// fsyncFile fsyncs the file at path. A file that no longer exists is not an
// error: Badger deletes a memtable WAL only after flushing it to a synced SST.
// fsync through a read-only descriptor flushes the whole inode, including
// pages Badger dirtied through its shared mapping.
func fsyncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("open %s: %w", path, err)
	}
	serr := f.Sync()
	cerr := f.Close()
	if serr != nil {
		return fmt.Errorf("fsync %s: %w", path, serr)
	}
	if cerr != nil {
		return fmt.Errorf("close %s: %w", path, cerr)
	}
	return nil
}
