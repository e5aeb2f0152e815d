package kv

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// valueThreshold is the largest value Badger keeps inline in the LSM tree
// (and so in the memtable WAL) instead of the value log. Badger caps it at
// 1 MiB and stores values of exactly this size or more in the value log.
const valueThreshold = 1 << 20

// OpenBadger opens (creating if needed) the Badger database in dir with the
// options shared by every kvtx store: SyncWrites=false (durability comes from
// a GroupSyncer, see the package documentation), conflict detection off
// (callers serialise writers with their own locks), values below 1 MiB kept
// in the LSM tree, memory bounded by DefaultMemoryBytes (memory.go), and a
// quiet logger that drops Badger's debug and info chatter and forwards its
// warnings and errors to slog.Default(). managed selects badger.OpenManaged,
// where every transaction's read and commit timestamps are supplied by the
// caller.
//
// Cost: opening replays the memtable WALs and allocates a 40 MiB memtable
// arena; it takes tens of milliseconds on an empty directory.
func OpenBadger(dir string, managed bool) (*badger.DB, error) {
	return openBadger(dir, managed, badgerSizes{}, quietLogger{})
}

// OpenSyncedBadger is OpenBadger with a GroupSyncer for the DB (observe as for
// NewGroupSyncer), started before Badger opens: Badger flushes the memtables it replays to new
// tables while and just after it opens, and the syncer syncs the directory as each file
// appears. Close both with CloseSyncedBadger.
func OpenSyncedBadger(dir string, managed bool, observe func(time.Duration)) (*badger.DB, *GroupSyncer, error) {
	return openSynced(dir, managed, badgerSizes{}, quietLogger{}, observe)
}

// CloseSyncedBadger closes db, then syncs its directory (Badger flushes its memtables to new
// tables as it closes), then stops g. Call it once every write is done.
func CloseSyncedBadger(db *badger.DB, g *GroupSyncer) error {
	err := db.Close()
	if serr := syncDir(g.dir); err == nil {
		err = serr
	}
	g.Close()
	return err
}

func openSynced(dir string, managed bool, sizes badgerSizes, log quietLogger, observe func(time.Duration)) (*badger.DB, *GroupSyncer, error) {
	if dir == "" {
		return nil, nil, invalidf("open badger: empty directory")
	}
	if err := MakeDurableDir(dir); err != nil {
		return nil, nil, fmt.Errorf("kv: open badger in %s: %w", dir, err)
	}
	g := NewGroupSyncer(dir, observe)
	db, err := openBadger(dir, managed, sizes, log)
	if err != nil {
		g.Close()
		return nil, nil, err
	}
	return db, g, nil
}

// openBadger is OpenBadger with the memory budget, memtable and value-log file sizes of sizes,
// and Badger's logger.
func openBadger(dir string, managed bool, sizes badgerSizes, log quietLogger) (*badger.DB, error) {
	if dir == "" {
		return nil, invalidf("open badger: empty directory")
	}
	plan, err := sizes.plan()
	if err != nil {
		return nil, invalidf("open badger in %s: %v", dir, err)
	}
	if err := MakeDurableDir(dir); err != nil {
		return nil, fmt.Errorf("kv: open badger in %s: %w", dir, err)
	}
	if err := removeEmptyLogs(dir); err != nil {
		return nil, fmt.Errorf("kv: open badger in %s: %w", dir, err)
	}
	open := func(mt int64, queued int) (*badger.DB, error) {
		opts := badgerOptions(dir, mt, queued, sizes.valueLogFileSize, log)
		if managed {
			return badger.OpenManaged(opts)
		}
		return badger.Open(opts)
	}
	replay := func(mt int64) (*badger.DB, error) { return open(mt, 0) }
	if err := fitMemtableLogs(dir, plan.memTableSize, replay); err != nil {
		return nil, fmt.Errorf("kv: open badger in %s: %w", dir, err)
	}
	db, err := open(plan.memTableSize, plan.queued)
	if err != nil {
		return nil, fmt.Errorf("kv: open badger in %s: %w", dir, err)
	}
	if err := syncFiles(dir); err != nil {
		_ = db.Close() // the sync error is the one worth reporting
		return nil, fmt.Errorf("kv: open badger in %s: %w", dir, err)
	}
	go drainBuilderPool(db)
	return db, nil
}

// badgerOptions are the options of the Badger database in dir, with memtables of mt bytes,
// queued of them waiting for their flush, and Badger's logger (memory.go says why the rest is
// as it is).
func badgerOptions(dir string, mt int64, queued int, valueLogFileSize int64, log quietLogger) badger.Options {
	opts := badger.DefaultOptions(dir).
		WithSyncWrites(false).
		WithDetectConflicts(false).
		WithValueThreshold(valueThreshold).
		WithLogger(log).
		WithMemTableSize(mt).
		WithNumMemtables(queued).
		WithCompression(options.None).
		WithBlockCacheSize(0).
		WithIndexCacheSize(0).
		WithBlockSize(blockSize).
		WithNumCompactors(numCompactors)
	opts.TableSizeMultiplier = tableSizeMultiplier // no With method
	if valueLogFileSize > 0 {
		opts = opts.WithValueLogFileSize(valueLogFileSize)
	}
	return opts
}

// Badger creates a memtable WAL (*.mem) or value-log file (*.vlog) by creating the file,
// setting its size and syncing the directory, and with SyncWrites off it syncs the file only
// when it is written and synced (the value log: never, in this package). A power cut before
// that leaves the name durable and the file empty, and Badger then refuses to open the
// directory ("Create a new file"). It makes such files at every open (a new value-log file)
// and at every memtable rotation. So openBadger removes empty ones before opening (an empty
// file holds no durable entry) and syncs every file after opening.

// removeEmptyLogs removes the empty memtable WAL and value-log files of dir.
func removeEmptyLogs(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	removed := false
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, memFileExt) && !strings.HasSuffix(name, ".vlog") {
			continue
		}
		if fi, err := e.Info(); err != nil || fi.Size() != 0 {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			return err
		}
		slog.Default().Warn("kv: removed an empty Badger log file that a power cut left", "dir", dir, "file", name)
		removed = true
	}
	if removed {
		return syncDir(dir)
	}
	return nil
}

// syncFiles fsyncs every regular file in dir, then dir itself.
func syncFiles(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		f, err := os.OpenFile(filepath.Join(dir, e.Name()), os.O_RDONLY, 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed by Badger meanwhile
		}
		if err != nil {
			return err
		}
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("fsync %s: %w", e.Name(), err)
		}
	}
	return syncDir(dir)
}

// quietLogger implements badger.Logger: it discards debug and info messages
// and sends warnings and errors to slog.Default() at the matching level. It
// resolves slog.Default() at each call so it follows later SetDefault calls.
// If discarded is set, it counts there the entries Badger's compactions drop.
type quietLogger struct {
	discarded *atomic.Uint64
}

func (quietLogger) Errorf(format string, args ...any) {
	slog.Default().Log(context.Background(), slog.LevelError, badgerMsg(format, args), "component", "badger")
}

func (quietLogger) Warningf(format string, args ...any) {
	slog.Default().Log(context.Background(), slog.LevelWarn, badgerMsg(format, args), "component", "badger")
}

func (quietLogger) Infof(string, ...any) {}

// compactionDone is the format of the debug line Badger logs at the end of each compaction's
// pass over its keys (levels.go, subcompact); its third argument counts the entries the pass
// dropped: versions older than the newest at or below the discard timestamp, and deletions
// below it. Badger reports this count nowhere else; TestStaleChunksGoOnceNoReadCanNeedThem
// fails if a Badger upgrade changes the line.
const compactionDone = "[%d] LOG Compact. Added %d keys. Skipped %d keys. Iteration took: %v"

func (l quietLogger) Debugf(format string, args ...any) {
	if l.discarded == nil || format != compactionDone || len(args) != 4 {
		return
	}
	if n, ok := args[2].(uint64); ok {
		l.discarded.Add(n)
	}
}

func badgerMsg(format string, args []any) string {
	return strings.TrimRight(fmt.Sprintf(format, args...), "\n")
}

// MakeDurableDir creates dir and any missing parents, and fsyncs the parent of each directory
// it creates: a new directory's entry is durable only once its parent is synced, and without
// that a power cut soon after the first start could take the whole data directory, and every
// write acknowledged in it, away. An existing dir is left as it is.
func MakeDurableDir(dir string) error {
	dir = filepath.Clean(dir)
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := MakeDurableDir(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return syncDir(parent)
}

// syncDir fsyncs a directory, making the entries created or removed in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// WriteFileDurably writes data to path so that after a crash path holds either its old
// contents or all of data: it writes a temporary file beside it, fsyncs it, renames it over
// path and fsyncs the directory.
func WriteFileDurably(path string, data []byte, perm fs.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}
