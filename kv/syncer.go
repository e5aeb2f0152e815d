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
	"time"

	"golang.org/x/sys/unix"
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
// began, by fsyncing every memtable WAL file (*.mem) in the directory (see
// syncOnce for why that is enough).
//
// Failure is sticky: after a round fails, that round's waiters and every
// later Sync get the error, since a failed fsync may have dropped dirty pages
// and a later successful one would not bring them back.
//
// Cost per round: one directory listing (a rewind and a read of a handle kept
// open) and one fsync per memtable WAL: the active one, and any older one still
// awaiting its flush (usually none; its file is opened once and kept). Each Sync
// call costs one channel handshake; a round allocates one small object shared by
// all its waiters. The syncer does not own the DB; it should start before the DB opens and
// stop after it closes, as OpenSyncedBadger and CloseSyncedBadger arrange, so that it also
// syncs the entries of the tables Badger writes then.
type GroupSyncer struct {
	dir     string
	observe func(time.Duration)

	kick    chan struct{} // capacity 1: "there may be waiters"
	created chan struct{} // capacity 1: "a file was created in dir" (from watchCreations)
	stop    chan struct{} // closed by Close
	done    chan struct{} // closed when the loop goroutine has exited
	watch   *os.File      // the inotify instance watching dir, or nil

	wals  map[string]*os.File // open memtable WAL files, owned by the loop goroutine
	dirf  *os.File            // the directory, kept open and re-read from its start each round
	names map[string]bool     // the directory's names at its last fsync, owned by the loop

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

// NewGroupSyncer starts a syncer for the Badger DB whose files live in dir
// (Badger's Dir and ValueDir must both be dir, as OpenBadger arranges), opened
// through this package so that nothing is kept in its value log. observe, if not
// nil, is called from the syncer goroutine with the duration of every round
// (for an fsync-latency histogram); it must not block.
func NewGroupSyncer(dir string, observe func(time.Duration)) *GroupSyncer {
	g := &GroupSyncer{
		dir:     dir,
		observe: observe,
		kick:    make(chan struct{}, 1),
		created: make(chan struct{}, 1),
		wals:    map[string]*os.File{},
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	g.watch = g.watchCreations()
	go g.loop()
	return g
}

// Badger creates memtable WALs and SSTs without syncing the directory (ristretto's mmap-file
// helper syncs it only for a file created empty), and records a flushed memtable's SST in its
// MANIFEST, which it does sync, and then deletes the WAL. On a file system that makes a new
// name durable only with its directory (POSIX's rule, which lossyfs tests), a power cut after
// that leaves a MANIFEST naming a table the directory does not hold, and Badger refuses to open
// (seen under lossyfs: "file does not exist for table N"). ext4 and XFS commit the name with
// the MANIFEST's fsync, but nothing promises it. So the syncer syncs the directory itself: as
// soon as inotify reports a file created in it, and in every round whose listing shows a name
// that was not there at the last directory sync, before it syncs the WALs, so that a WAL's
// truncation (Badger truncates one before deleting it) is never made durable before the SST
// that holds its data. What remains is the time between a file's creation and the directory
// sync it triggers, far shorter than Badger takes to write, sync and record a table.

// watchCreations starts an inotify watch of dir that signals g.created on every file created
// in it. It returns the inotify instance (closed by the loop), or nil if inotify is not to be
// had, in which case only the rounds sync the directory.
func (g *GroupSyncer) watchCreations() *os.File {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil
	}
	if _, err := unix.InotifyAddWatch(fd, g.dir, unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
		unix.Close(fd)
		return nil
	}
	f := os.NewFile(uintptr(fd), "inotify:"+g.dir)
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := f.Read(buf); err != nil {
				return // closed by the loop, at Close
			}
			select {
			case g.created <- struct{}{}:
			default: // a directory sync is already due
			}
		}
	}()
	return f
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
		for _, f := range g.wals {
			_ = f.Close()
		}
		if g.dirf != nil {
			_ = g.dirf.Close()
		}
		if g.watch != nil {
			_ = g.watch.Close()
		}
	}()
	for {
		select {
		case <-g.kick:
		case <-g.created:
			names, err := g.listDir()
			if err == nil {
				err = g.syncDirOf(names)
			}
			if err != nil {
				g.failWith(err)
			}
			continue
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
			err = g.failWith(err)
		}
	}
	r.err = err
	close(r.done)
}

// failWith makes err the syncer's sticky failure (unless it already has one) and returns the
// failure every waiter will see.
func (g *GroupSyncer) failWith(err error) error {
	err = fmt.Errorf("kv: group sync of %s: %w", g.dir, err)
	g.mu.Lock()
	if g.mu.err == nil {
		g.mu.err = err
	}
	err = g.mu.err
	g.mu.Unlock()
	return err
}

// syncDirOf fsyncs the directory if names, a fresh listing of it, holds a name it did not hold
// at its last fsync here, making those files' entries durable.
func (g *GroupSyncer) syncDirOf(names []string) error {
	fresh := false
	for _, name := range names {
		if !g.names[name] {
			fresh = true
			break
		}
	}
	if !fresh {
		return nil
	}
	if err := g.dirf.Sync(); err != nil { // listDir opened it
		return fmt.Errorf("fsync directory: %w", err)
	}
	g.names = make(map[string]bool, len(names))
	for _, name := range names {
		g.names[name] = true
	}
	return nil
}

// syncOnce makes durable everything Badger had applied before it was called.
//
// It fsyncs every memtable WAL file (*.mem) present when the round lists the directory: a
// memtable that held a write when the round began still has its WAL file then, unless Badger
// has already flushed it to an SST, which it syncs when it creates it. The active memtable's
// WAL is written through a shared mapping; fsync on the file writes those pages back as well.
// This replaces DB.Sync, which msyncs the active WAL and the value log: this package keeps
// nothing in the value log (see setValue). Badger syncs the directory when it creates a file.
func (g *GroupSyncer) syncOnce() error {
	names, err := g.listDir()
	if err != nil {
		return err
	}
	if err := g.syncDirOf(names); err != nil {
		return err
	}
	live := make(map[string]bool, 4)
	for _, name := range names {
		if !strings.HasSuffix(name, memFileExt) {
			continue
		}
		live[name] = true
		f := g.wals[name]
		if f == nil {
			f, err = os.OpenFile(filepath.Join(g.dir, name), os.O_RDWR, 0)
			if errors.Is(err, fs.ErrNotExist) {
				continue // flushed to a synced SST since the listing
			}
			if err != nil {
				return fmt.Errorf("open WAL %s: %w", name, err)
			}
			g.wals[name] = f
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("fsync WAL %s: %w", name, err)
		}
	}
	for name, f := range g.wals {
		if !live[name] {
			_ = f.Close() // flushed and deleted by Badger
			delete(g.wals, name)
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
