package kv

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
)

// valueThreshold is the largest value Badger keeps inline in the LSM tree
// (and so in the memtable WAL) instead of the value log. Badger caps it at
// 1 MiB and stores values of exactly this size or more in the value log.
const valueThreshold = 1 << 20

// OpenBadger opens (creating if needed) the Badger database in dir with the
// options shared by every kvtx store: SyncWrites=false (durability comes from
// a GroupSyncer, see the package documentation), conflict detection off
// (callers serialise writers with their own locks), values below 1 MiB kept
// in the LSM tree, and a quiet logger that drops Badger's debug and info
// chatter and forwards its warnings and errors to slog.Default(). managed
// selects badger.OpenManaged, where every transaction's read and commit
// timestamps are supplied by the caller.
//
// Cost: opening replays the memtable WALs and maps roughly 100 MiB of
// memtable arena; it takes tens of milliseconds on an empty directory.
func OpenBadger(dir string, managed bool) (*badger.DB, error) {
	return openBadger(dir, managed, 0, 0)
}

// openBadger is OpenBadger with the memtable and value-log file sizes set (0 keeps
// Badger's defaults, 64 MiB and 1 GiB).
func openBadger(dir string, managed bool, memTableSize, valueLogFileSize int64) (*badger.DB, error) {
	if dir == "" {
		return nil, invalidf("open badger: empty directory")
	}
	opts := badger.DefaultOptions(dir).
		WithSyncWrites(false).
		WithDetectConflicts(false).
		WithValueThreshold(valueThreshold).
		WithLogger(quietLogger{})
	if memTableSize > 0 {
		opts = opts.WithMemTableSize(memTableSize)
	}
	if valueLogFileSize > 0 {
		opts = opts.WithValueLogFileSize(valueLogFileSize)
	}
	var (
		db  *badger.DB
		err error
	)
	if managed {
		db, err = badger.OpenManaged(opts)
	} else {
		db, err = badger.Open(opts)
	}
	if err != nil {
		return nil, fmt.Errorf("kv: open badger in %s: %w", dir, err)
	}
	return db, nil
}

// quietLogger implements badger.Logger: it discards debug and info messages
// and sends warnings and errors to slog.Default() at the matching level. It
// resolves slog.Default() at each call so it follows later SetDefault calls.
type quietLogger struct{}

func (quietLogger) Errorf(format string, args ...any) {
	slog.Default().Log(context.Background(), slog.LevelError, badgerMsg(format, args), "component", "badger")
}

func (quietLogger) Warningf(format string, args ...any) {
	slog.Default().Log(context.Background(), slog.LevelWarn, badgerMsg(format, args), "component", "badger")
}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Debugf(string, ...any) {}

func badgerMsg(format string, args []any) string {
	return strings.TrimRight(fmt.Sprintf(format, args...), "\n")
}
