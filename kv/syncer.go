package kv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// memFileExt is the suffix of Badger's memtable write-ahead-log files.
const memFileExt = ".mem"

// vlogFileExt is the suffix of Badger's value-log files.
const vlogFileExt = ".vlog"

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
// value log), one directory listing (a rewind and a read of a handle kept
// open), and an open, fsync and close per older memtable WAL still awaiting
// its flush (usually none). Each Sync call costs one
// channel handshake; a round allocates one small object shared by all its
// waiters. The syncer does not own the DB: Close it before closing the DB.
type GroupSyncer struct {
	db      *badger.DB
	dir     string
	observe func(time.Duration)

	kick chan struct{} // capacity 1: "there may be waiters"
	stop chan struct{} // closed by Close
	done chan struct{} // closed when the loop goroutine has exited

	vlogDirty atomic.Bool         // a value-log write happened since the last round began
	files     map[string]*os.File // open WAL and value-log files, owned by the loop goroutine
	dirf      *os.File            // the directory, kept open and re-read from its start each round

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
		files:   map[string]*os.File{},
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
	defer func() {
		for _, f := range g.files {
			_ = f.Close()
		}
		if g.dirf != nil {
			_ = g.dirf.Close()
		}
	}()
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
//
// It fsyncs every memtable WAL file (*.mem) present when the round lists the directory: a
// memtable that held a write when the round began still has its WAL file then, unless Badger
// has already flushed it to an SST, which it syncs when it creates it. The active memtable's
// WAL is written through a shared mapping; fsync on the file writes those pages back as well.
// After a value big enough for the value log was written (NoteValue) it also fsyncs every
// value-log file (*.vlog), not only the active one that DB.Sync covers: a write may have
// landed in a file that Badger has since rotated out, and Badger never syncs a rotated file
// when SyncWrites is off. Badger syncs the directory itself when it creates a file.
func (g *GroupSyncer) syncOnce() error {
	vlog := g.vlogDirty.Swap(false)
	names, err := g.listDir()
	if err != nil {
		return err
	}
	live := make(map[string]bool, 4)
	for _, name := range names {
		if !strings.HasSuffix(name, memFileExt) && !(vlog && strings.HasSuffix(name, vlogFileExt)) {
			continue
		}
		live[name] = true
		f := g.files[name]
		if f == nil {
			f, err = os.OpenFile(filepath.Join(g.dir, name), os.O_RDWR, 0)
			if errors.Is(err, fs.ErrNotExist) {
				continue // a WAL flushed to a synced SST since the listing
			}
			if err != nil {
				return fmt.Errorf("open %s: %w", name, err)
			}
			g.files[name] = f
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("fsync %s: %w", name, err)
		}
	}
	for name, f := range g.files {
		if !live[name] {
			_ = f.Close() // a WAL flushed and deleted by Badger, or a value-log file this round skipped
			delete(g.files, name)
		}
	}
	return nil
}

// listDir lists the directory through a handle kept open across rounds (an
// open and a close per round cost a twentieth of a loaded node's CPU): each
// call seeks back to the start, so the listing is as fresh as a new open's.
func (g *GroupSyncer) listDir() ([]string, error) {
	if g.dirf == nil {
		d, err := os.Open(g.dir)
		if err != nil {
			return nil, fmt.Errorf("open directory: %w", err)
		}
		g.dirf = d
	} else if _, err := g.dirf.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("rewind directory: %w", err)
	}
	names, err := g.dirf.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list directory: %w", err)
	}
	return names, nil
}

// NoteValue tells the syncer that a value of n bytes was written: one large enough for
// Badger's value log makes the next round sync the value log too. Call it after the Badger
// write has returned and before Sync: a round that began before the write, and so cannot
// cover it, must not be the one that consumes the note.
func (g *GroupSyncer) NoteValue(n int) {
	if n >= valueThreshold {
		g.vlogDirty.Store(true)
	}
}
