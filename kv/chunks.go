package kv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Badger keeps a value of valueThreshold bytes or more in its value log and only a pointer to
// it in the LSM tree and the memtable's write-ahead log. With SyncWrites off nothing orders the
// value-log bytes before the WAL entry that points at them: a sync round of another writer (or
// the kernel's writeback) can make the pointer durable while the bytes are not, and after a
// power cut the version exists but cannot be read (seen under lossyfs: "Invalid value pointer
// offset"). So this package never lets Badger use its value log: a value (or prepare record)
// that would reach it is split into chunks kept in the LSM tree, all written in the same Badger
// transaction at the same version, so they are durable together with the WAL entry.
//
// Layout: the value's own key holds a 4-byte big-endian total length and the first chunk,
// with metaChunked in its user meta; chunk i (from 1) lives under chunkKey(key, i) at the
// same version.

// chunkSize is the most bytes of a split value under one Badger key, well below valueThreshold.
const chunkSize = valueThreshold / 2

// metaChunked marks, in Badger's user meta, a value stored as chunks.
const metaChunked byte = 1 << 0

// tagChunk prefixes the keys of chunks after the first.
const tagChunk = 'c'

// chunkKey returns the Badger key of chunk i (i >= 1) of the value under key: the tag, the
// chunk's number, then the key, so that keys of different values never collide.
func chunkKey(key []byte, i int) []byte {
	k := make([]byte, 0, 5+len(key))
	k = append(k, tagChunk)
	k = binary.BigEndian.AppendUint32(k, uint32(i))
	return append(k, key...)
}

// setValue adds key=value to txn, split into chunks if the value would otherwise go to Badger's
// value log. Badger references key and value until txn ends.
func setValue(txn *badger.Txn, key, value []byte) error {
	if len(value) < valueThreshold {
		return txn.Set(key, value)
	}
	first := make([]byte, 4, 4+chunkSize)
	binary.BigEndian.PutUint32(first, uint32(len(value)))
	first = append(first, value[:chunkSize]...)
	if err := txn.SetEntry(badger.NewEntry(key, first).WithMeta(metaChunked)); err != nil {
		return err
	}
	for i, off := 1, chunkSize; off < len(value); i, off = i+1, off+chunkSize {
		if err := txn.Set(chunkKey(key, i), value[off:min(off+chunkSize, len(value))]); err != nil {
			return err
		}
	}
	return nil
}

// valueOf returns a copy of item's whole value, joining the chunks of a split one, which it
// reads at item's own version from db.
func valueOf(db *badger.DB, item *badger.Item) ([]byte, error) {
	v, err := item.ValueCopy(nil)
	if err != nil || item.UserMeta()&metaChunked == 0 {
		return v, err
	}
	if len(v) < 4 {
		return nil, fmt.Errorf("split value of %q at %d: first chunk of %d bytes: %w", item.Key(), item.Version(), len(v), errCorrupt)
	}
	total := int(binary.BigEndian.Uint32(v))
	out := make([]byte, 0, total)
	out = append(out, v[4:]...)
	txn := db.NewTransactionAt(item.Version(), false)
	defer txn.Discard()
	for i := 1; len(out) < total; i++ {
		ci, err := txn.Get(chunkKey(item.Key(), i))
		if err != nil {
			return nil, fmt.Errorf("split value of %q at %d: chunk %d: %w (%w)", item.Key(), item.Version(), i, err, errCorrupt)
		}
		if ci.Version() != item.Version() {
			return nil, fmt.Errorf("split value of %q at %d: chunk %d is at version %d: %w", item.Key(), item.Version(), i, ci.Version(), errCorrupt)
		}
		if err := ci.Value(func(b []byte) error { out = append(out, b...); return nil }); err != nil {
			return nil, err
		}
	}
	if len(out) != total {
		return nil, fmt.Errorf("split value of %q at %d: %d bytes, want %d: %w", item.Key(), item.Version(), len(out), total, errCorrupt)
	}
	return out, nil
}

// A chunk whose value is no longer a key's newest version at or below the GC safe point (the
// key was overwritten by a value with fewer chunks, deleted, or is a finished transaction's
// prepare record) is still the chunk key's own newest version, so Badger's compactions keep it
// for good. sweepChunks deletes such chunks at the safe point: every read at or above it asks
// for chunks only at its value's version, which is newer, so no read can see the deletion, and
// the next compactions drop the chunk and the deletion both. The deletions need no sync: one
// lost at a power cut is found again by the next sweep.

// chunkSweepEvery is the least time between two chunk sweeps (each iterates every chunk key).
const chunkSweepEvery = 30 * time.Second

// sweepChunkBatch is the most deletions one Badger transaction of a sweep carries, and
// sweepChunkBytes the most bytes of them by Badger's estimate (a key and entryOverhead each),
// past which the transaction ends early: 1,000 deletions of 4 KiB keys would need a memtable of
// 27 MiB, while 1 MiB and one more such key fit the smallest one (minMemTableSize).
const (
	sweepChunkBatch = 1000
	sweepChunkBytes = 1 << 20
)

// sweepChunks deletes, at version safe, every chunk that no key's newest version at or below
// safe uses, in transactions of at most sweepChunkBatch deletions and about sweepChunkBytes,
// and returns how many it deleted. The caller has made safe the discard timestamp.
func (s *Store) sweepChunks(safe uint64) (int, error) {
	view := s.db.NewTransactionAt(safe, false)
	defer view.Discard()
	it := view.NewIterator(badger.IteratorOptions{Prefix: []byte{tagChunk}, PrefetchValues: false})
	defer it.Close()
	var stale [][]byte
	deleted, staleBytes := 0, 0
	flush := func() error {
		txn := s.db.NewTransactionAt(math.MaxUint64, true)
		defer txn.Discard()
		for _, k := range stale {
			if err := txn.Delete(k); err != nil {
				return fmt.Errorf("kv: sweep chunks: %w", err)
			}
		}
		if err := s.commitAt(txn, safe, nil); err != nil {
			return fmt.Errorf("kv: sweep chunks: %w", err)
		}
		deleted += len(stale)
		stale, staleBytes = stale[:0], 0
		return nil
	}
	for it.Rewind(); it.Valid(); it.Next() {
		if s.isClosing.Load() {
			return deleted, ErrClosed
		}
		item := it.Item()
		if item.Version() >= safe {
			continue // written at the safe point itself: its value is the newest there
		}
		key := item.Key()
		if len(key) < 5 {
			continue
		}
		parent, err := view.Get(key[5:])
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
		case err != nil:
			return deleted, fmt.Errorf("kv: sweep chunks: read %q: %w", key[5:], err)
		case parent.Version() == item.Version() && parent.UserMeta()&metaChunked != 0:
			continue // the chunk of the value the key holds at the safe point
		}
		stale, staleBytes = append(stale, item.KeyCopy(nil)), staleBytes+len(key)+entryOverhead
		if len(stale) == sweepChunkBatch || staleBytes >= sweepChunkBytes {
			if err := flush(); err != nil {
				return deleted, err
			}
		}
	}
	if len(stale) == 0 {
		return deleted, nil
	}
	return deleted, flush()
}
