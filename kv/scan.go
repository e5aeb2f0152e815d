package kv

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// ScanOptions bound one page of a Scan. A zero field means its default.
type ScanOptions struct {
	// Limit is the most keys a page holds; 0 means 1,000.
	Limit int
	// MaxBytes stops a page once its keys and values reach this many bytes (a page always
	// holds at least one key, so a scan makes progress); 0 means 4 MiB.
	MaxBytes int
	// KeysOnly leaves the values out (Value.Value is nil).
	KeysOnly bool
}

const (
	defaultScanLimit    = 1000
	defaultScanMaxBytes = 4 << 20
)

// Scan reads, at timestamp ts, the keys in [start, end) in key order (an empty end means no
// upper bound), one page: the latest version of each key committed at or below ts, deleted
// keys left out. more reports that keys past the page remain in the range; the next page
// starts just after the last key returned, at the same ts, and sees the same snapshot.
//
// A scan waits, as Get does, for every lock in [start, end) whose writes could land at or
// below ts, before it reads, so it never sees half of a transaction; it raises maxTS to ts
// first, so no write lands at or below ts in the range afterwards, and the later pages of a
// scan at ts find nothing to wait for. If a lock is still held after Options.LockWait, Scan
// returns *LockedError.
//
// Cost: one pass over the lock table per wait, then one Badger iterator over the page's keys
// (and any versions above ts it skips); memory is bounded by the page.
func (s *Store) Scan(ctx context.Context, start, end []byte, ts uint64, opts ScanOptions) (page []Value, more bool, err error) {
	if ts == math.MaxUint64 {
		return nil, false, invalidf("scan at timestamp %d", ts)
	}
	if len(end) > 0 && bytes.Compare(start, end) >= 0 {
		return nil, false, nil
	}
	if opts.Limit <= 0 {
		opts.Limit = defaultScanLimit
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = defaultScanMaxBytes
	}
	s.mu.Lock()
	if err := s.enterLocked(); err != nil {
		s.mu.Unlock()
		return nil, false, err
	}
	defer s.exit()
	if err := s.beginReadLocked(ts); err != nil {
		s.mu.Unlock()
		return nil, false, err
	}
	defer s.endRead(ts)
	if ts > s.mu.maxTS {
		s.mu.maxTS = ts
	}
	needMark := ts > s.mu.mark
	s.mu.Unlock()
	if needMark {
		if err := s.ensureMark(ts); err != nil {
			return nil, false, err
		}
	}
	// Wait first, then read: a lock released between a read and a look at the lock table
	// would leave the read without the writes it held back. Once no lock or pending write in
	// the range could land at or below ts, none can appear (maxTS is at least ts), so the
	// page read next is final.
	var timer *time.Timer
	defer func() { stopTimer(timer) }()
	s.mu.Lock()
	for {
		k, o := s.rangeBlockerLocked(start, end, ts)
		if o == nil {
			break
		}
		timer, err = s.waitLocked(ctx, o, timer)
		if err == errLockWait {
			s.mu.Unlock()
			return nil, false, &LockedError{Key: []byte(k), TxnID: o.txnID}
		}
		if err != nil {
			s.mu.Unlock()
			return nil, false, err
		}
	}
	s.mu.Unlock()
	return s.scanPage(start, end, ts, opts)
}

// scanPage reads one page at ts without looking at locks.
func (s *Store) scanPage(start, end []byte, ts uint64, opts ScanOptions) ([]Value, bool, error) {
	txn := s.db.NewTransactionAt(ts, false)
	defer txn.Discard()
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagData}, PrefetchValues: false})
	defer it.Close()
	var page []Value
	bytesIn := 0
	for it.Seek(append([]byte{tagData}, start...)); it.Valid(); it.Next() {
		item := it.Item()
		key := item.Key()[1:]
		if len(end) > 0 && bytes.Compare(key, end) >= 0 {
			return page, false, nil
		}
		if len(page) >= opts.Limit || len(page) > 0 && bytesIn >= opts.MaxBytes {
			return page, true, nil
		}
		v := Value{Key: bytes.Clone(key), Version: item.Version(), Found: true}
		if !opts.KeysOnly {
			var err error
			if v.Value, err = valueOf(s.db, item); err != nil {
				return nil, false, fmt.Errorf("kv: scan %s at %d: %w", quoteKey(key), ts, err)
			}
			if v.Value == nil {
				v.Value = []byte{}
			}
		}
		bytesIn += len(v.Key) + len(v.Value)
		page = append(page, v)
	}
	return page, false, nil
}

// rangeBlockerLocked returns a key in [start, end) (end empty: no bound) whose lock, or whose
// write not yet durable, a read at ts must wait for, and its owner, or ("", nil).
func (s *Store) rangeBlockerLocked(start, end []byte, ts uint64) (string, *lockOwner) {
	in := func(k string) bool {
		return k >= string(start) && (len(end) == 0 || k < string(end))
	}
	for k, o := range s.mu.locks {
		if ts >= o.readFrom && in(k) {
			return k, o
		}
	}
	for k, owners := range s.mu.pending {
		if !in(k) {
			continue
		}
		for _, o := range owners {
			if ts >= o.readFrom {
				return k, o
			}
		}
	}
	return "", nil
}
