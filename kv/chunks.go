package kv

import (
	"encoding/binary"
	"fmt"

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
