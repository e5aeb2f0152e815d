package kv

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// The disk quota. A store measures the bytes its directory takes on disk (measureDisk) about
// every spaceCheckInterval, and adds to the last measurement the bytes of the writes it admits
// meanwhile. Once that reaches Options.QuotaBytes it raises the space alarm and refuses every
// new write (Apply and Prepare with ops, Restore) with *SpaceExceededError, until a measurement
// finds it below spaceClearPercent of the quota. Everything else goes on: reads, compare-only
// transactions, Commit and Abort of prepared transactions (refusing them would keep their locks
// and break their atomicity), outcome markers, the maxTS mark and the GC safe point, whose
// writes are small and bounded by the transactions already admitted.
//
// Only the GC frees space, and Badger does so only as it compacts, which it does as writes
// come in: a store that refuses writes would stay full. So while the alarm is raised the store
// reclaims: it flushes the memtables and compacts the whole tree (reclaim), dropping every
// version the safe point allows. The first reclaim since Open runs as soon as the alarm is
// raised and a safe point is set; each later one waits until the safe point has moved and
// Options.ReclaimEvery has passed: with that set to the GC retention, every version written
// before the last reclaim is then below the safe point, so the store rewrites its tree at most
// once per retention. With GC off nothing can be freed, and the alarm stays until the quota is
// raised.
//
// The alarm is not written down: it is a function of the bytes on disk, which Open measures
// before it returns, so a store reopened over its quota refuses writes from its first call.

// spaceCheckInterval is how often a store measures its directory.
const spaceCheckInterval = time.Second

// spaceClearPercent is the share of the quota below which a measurement clears the alarm, so
// that a store at its quota does not flap between refusing and accepting writes.
const spaceClearPercent = 95

// DiskUsage is what a store's directory takes on disk, counted as du counts it: the bytes
// allocated to its files, not their apparent sizes (Badger's memtable logs and its current
// value-log file are sparse; the latter claims 2 GiB from its creation).
type DiskUsage struct {
	Total int64 // every file in the directory
	LSM   int64 // the LSM tree's tables (*.sst)
	Vlog  int64 // the value log (*.vlog)
}

// measureDisk returns the disk usage of the files in dir (Badger keeps no subdirectories). A
// file removed while it is listed is skipped.
func measureDisk(dir string) (DiskUsage, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return DiskUsage{}, fmt.Errorf("kv: measure %s: %w", dir, err)
	}
	var u DiskUsage
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed by Badger meanwhile
		}
		n := allocatedBytes(fi)
		u.Total += n
		switch filepath.Ext(e.Name()) {
		case ".sst":
			u.LSM += n
		case ".vlog":
			u.Vlog += n
		}
	}
	return u, nil
}

// spaceState is the quota's state, guarded by Store.mu.
type spaceState struct {
	used    DiskUsage // the last measurement
	pending int64     // bytes of the writes admitted since it
	alarm   bool      // new writes are refused
	// reclaimedAt is when the last reclaim began, and reclaimedTo the safe point it had.
	reclaimedAt time.Time
	reclaimedTo uint64
}

// usedLocked is the store's disk usage as the quota counts it: the last measurement and the
// writes admitted since.
func (s *Store) usedLocked() int64 { return s.mu.space.used.Total + s.mu.space.pending }

// admitWriteLocked admits a write of n bytes of keys and values, or refuses it with
// *SpaceExceededError while the store is at or over its quota, raising the alarm if this is
// the write that finds it there.
func (s *Store) admitWriteLocked(n int64) error {
	if s.quota <= 0 {
		return nil
	}
	sp := &s.mu.space
	if !sp.alarm && s.usedLocked() >= s.quota {
		sp.alarm = true
		s.log.Warn("kv: disk quota reached; refusing new writes until GC frees space", "dir", s.dir,
			"used_bytes", s.usedLocked(), "quota_bytes", s.quota)
	}
	if sp.alarm {
		return &SpaceExceededError{Used: s.usedLocked(), Quota: s.quota}
	}
	sp.pending += n
	return nil
}

// opBytes is what ops add to the store, as the quota counts it before measuring: their keys
// and values.
func opBytes(ops []Op) int64 {
	var n int64
	for i := range ops {
		n += int64(len(ops[i].Key) + len(ops[i].Value))
	}
	return n
}

// watchSpace measures the store every spaceCheckInterval until Close begins.
func (s *Store) watchSpace() {
	defer close(s.watchDone)
	t := time.NewTicker(spaceCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-s.closing:
			return
		case <-t.C:
			s.checkSpace()
		}
	}
}

// checkSpace measures the store, raises or clears the alarm, and reclaims space if the alarm
// is raised and a reclaim could free some. Calls are serialised.
func (s *Store) checkSpace() {
	s.checkMu.Lock()
	defer s.checkMu.Unlock()
	if !s.measure() {
		return
	}
	s.mu.Lock()
	sp := &s.mu.space
	reclaim := sp.alarm && s.mu.safePoint > sp.reclaimedTo &&
		(sp.reclaimedAt.IsZero() || time.Since(sp.reclaimedAt) >= s.reclaimEvery)
	if reclaim {
		sp.reclaimedAt, sp.reclaimedTo = time.Now(), s.mu.safePoint
	}
	s.mu.Unlock()
	if !reclaim {
		return
	}
	before := s.Stats().DiskBytes
	start := time.Now()
	if err := s.reclaim(); errors.Is(err, ErrClosed) {
		return
	} else if err != nil {
		s.log.Warn("kv: reclaiming disk space failed", "dir", s.dir, "err", err)
		return
	}
	s.measure()
	st := s.Stats()
	s.log.Info("kv: reclaimed disk space", "dir", s.dir, "before_bytes", before, "after_bytes", st.DiskBytes,
		"quota_bytes", s.quota, "safe_point", st.SafePoint, "alarm", st.SpaceAlarm, "took", time.Since(start))
}

// measure measures the store's directory and updates the alarm: raised at or over the quota,
// cleared below spaceClearPercent of it. It reports whether it could measure.
func (s *Store) measure() bool {
	u, err := measureDisk(s.dir)
	if err != nil {
		s.log.Warn("kv: cannot measure the store's disk usage", "dir", s.dir, "err", err)
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sp := &s.mu.space
	sp.used, sp.pending = u, 0
	switch {
	case s.quota <= 0:
	case !sp.alarm && u.Total >= s.quota:
		sp.alarm = true
		s.log.Warn("kv: disk quota reached; refusing new writes until GC frees space", "dir", s.dir,
			"used_bytes", u.Total, "quota_bytes", s.quota)
	case sp.alarm && float64(u.Total) < float64(s.quota)*spaceClearPercent/100:
		sp.alarm = false
		s.log.Info("kv: disk usage below the quota again; accepting writes", "dir", s.dir,
			"used_bytes", u.Total, "quota_bytes", s.quota)
	}
	return true
}

// reclaimMarkers are written, then dropped, by reclaim: one sorts before every key of the
// store and one after, so that the level-0 table they are flushed into spans every table
// below it. No other key starts with either byte.
var reclaimMarkers = [][]byte{{0x00, 'r', 'e', 'c', 'l', 'a', 'i', 'm'}, {0xff, 'r', 'e', 'c', 'l', 'a', 'i', 'm'}}

// reclaim compacts the whole LSM tree, so that Badger drops every version the safe point
// allows and the memtable logs start afresh. Badger has no call for that; DropPrefix comes
// closest: it flushes every memtable to level 0 and compacts level 0 into the levels below,
// rewriting each table there that overlaps it, dropping on the way what the discard timestamp
// allows. So reclaim writes the two markers, whose level-0 table overlaps every table, and
// drops their prefixes; then Flatten merges the levels that remain. Badger refuses writes
// while DropPrefix runs, so writers wait at the gate meanwhile (reads go on). The markers are
// never read; a crash before DropPrefix leaves them for the next reclaim.
//
// Cost: the tree is rewritten once, which needs free disk beside it for the new tables until
// the old ones are deleted.
func (s *Store) reclaim() error {
	s.mu.Lock()
	err := s.enterLocked()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	defer s.exit()
	if err := s.dropReclaimMarkers(); err != nil {
		return err
	}
	if err := s.db.Flatten(1); err != nil {
		return fmt.Errorf("kv: reclaim space: flatten: %w", err)
	}
	return nil
}

func (s *Store) dropReclaimMarkers() error {
	s.gate.Lock()
	defer s.gate.Unlock()
	txn := s.db.NewTransactionAt(math.MaxUint64, true)
	defer txn.Discard()
	for _, k := range reclaimMarkers {
		if err := txn.Set(k, nil); err != nil {
			return fmt.Errorf("kv: reclaim space: %w", err)
		}
	}
	if err := txn.CommitAt(1, nil); err != nil {
		return fmt.Errorf("kv: reclaim space: %w", err)
	}
	if err := s.db.DropPrefix(reclaimMarkers...); err != nil {
		return fmt.Errorf("kv: reclaim space: compact: %w", err)
	}
	return nil
}

// commitAt commits txn at ts (with cb as for badger.Txn.CommitAt). Every write of the store
// goes through it, so that a reclaim can hold writers back while Badger refuses writes.
func (s *Store) commitAt(txn *badger.Txn, ts uint64, cb func(error)) error {
	s.gate.RLock()
	defer s.gate.RUnlock()
	return txn.CommitAt(ts, cb)
}

// SpaceExceededError is returned by Apply, Prepare and Restore for a write while the store is
// at or over its quota (Options.QuotaBytes): nothing was written. It unwraps to
// ErrSpaceExceeded.
type SpaceExceededError struct {
	Used, Quota int64 // bytes on disk as the quota counts them, and the quota
}

// Error returns `kv: space exceeded: the store takes 8.1 MiB on disk, its quota is 8.0 MiB`.
func (e *SpaceExceededError) Error() string {
	return "kv: space exceeded: the store takes " + formatBytes(e.Used) + " on disk, its quota is " + formatBytes(e.Quota)
}

// Unwrap returns ErrSpaceExceeded.
func (e *SpaceExceededError) Unwrap() error { return ErrSpaceExceeded }

// formatBytes writes n in binary units with one decimal: 512 B, 1.5 KiB, 8.0 GiB.
func formatBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n) / 1024
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}
