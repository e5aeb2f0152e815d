package kv

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// safePointKey holds the durable GC safe point, versioned by the safe point itself.
var safePointKey = []byte{tagMeta, 's', 'a', 'f', 'e'}

// loadSafePoint reads the durable safe point at Open and gives it to Badger.
func (s *Store) loadSafePoint(txn *badger.Txn) error {
	item, err := txn.Get(safePointKey)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("kv: open %s: read GC safe point: %w", s.dir, err)
	}
	s.mu.safePoint = item.Version()
	s.db.SetDiscardTs(s.mu.safePoint)
	return nil
}

// SafePoint returns the store's GC safe point (0: none).
func (s *Store) SafePoint() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.safePoint
}

// SetSafePoint raises the GC safe point to ts: from then on a read below ts gets
// *CompactedError, and Badger may drop, as it compacts, every version of a key older than its
// newest at or below ts (and a key whose newest such version is a deletion). The new safe point
// is durable before it takes effect, so a restart never serves a read below it; reads below it
// already running are waited for (bounded by ctx) before Badger may drop anything they read.
// A lower or equal ts changes nothing.
//
// The caller picks ts below every timestamp a read or a transaction still in progress uses;
// prepare records and outcome markers keep their newest version, so they are not affected.
func (s *Store) SetSafePoint(ctx context.Context, ts uint64) error {
	if ts == 0 || ts == math.MaxUint64 {
		return invalidf("GC safe point %d out of range", ts)
	}
	s.mu.Lock()
	if err := s.enterLocked(); err != nil {
		s.mu.Unlock()
		return err
	}
	defer s.exit()
	if ts <= s.mu.safePoint {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	if err := s.writeSafePoint(ts); err != nil {
		return err
	}
	s.mu.Lock()
	s.mu.safePoint = max(s.mu.safePoint, ts)
	s.mu.Unlock()
	for {
		s.mu.Lock()
		busy := false
		for rts := range s.mu.reading {
			busy = busy || rts < ts
		}
		s.mu.Unlock()
		if !busy {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kv: GC safe point %d: waiting for older reads: %w", ts, ctx.Err())
		case <-s.closing:
			return ErrClosed
		case <-time.After(time.Millisecond):
		}
	}
	s.db.SetDiscardTs(ts)
	s.maybeSweepChunks(ts)
	return nil
}

// maybeSweepChunks starts a sweep of stale chunks at safe point ts in the background, unless
// one is running or the last began less than chunkSweepEvery ago.
func (s *Store) maybeSweepChunks(ts uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.sweeping || time.Since(s.mu.sweptAt) < chunkSweepEvery || s.enterLocked() != nil {
		return
	}
	s.mu.sweeping, s.mu.sweptAt = true, time.Now()
	go func() {
		defer s.exit()
		n, err := s.sweepChunks(ts)
		switch {
		case err != nil:
			s.log.Warn("kv: sweep of stale value chunks failed", "dir", s.dir, "deleted", n, "err", err)
		case n > 0:
			s.log.Info("kv: deleted stale value chunks", "dir", s.dir, "chunks", n, "safe_point", ts)
		}
		s.mu.Lock()
		s.mu.sweeping = false
		s.mu.Unlock()
	}()
}

func (s *Store) writeSafePoint(ts uint64) error {
	txn := s.db.NewTransactionAt(math.MaxUint64, true)
	defer txn.Discard()
	if err := txn.Set(safePointKey, binary.BigEndian.AppendUint64(nil, ts)); err != nil {
		return fmt.Errorf("kv: persist GC safe point %d: %w", ts, err)
	}
	if err := s.commitAt(txn, ts, nil); err != nil {
		return fmt.Errorf("kv: persist GC safe point %d: %w", ts, err)
	}
	return s.waitSync()
}

// beginReadLocked refuses a read below the safe point, and counts it otherwise until endRead.
func (s *Store) beginReadLocked(ts uint64) error {
	if ts < s.mu.safePoint {
		return &CompactedError{TS: ts, SafePoint: s.mu.safePoint}
	}
	s.mu.reading[ts]++
	return nil
}

func (s *Store) endRead(ts uint64) {
	s.mu.Lock()
	if s.mu.reading[ts]--; s.mu.reading[ts] <= 0 {
		delete(s.mu.reading, ts)
	}
	s.mu.Unlock()
}
