package kv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Badger key layout. Every key starts with a one-byte tag, so user keys
// (including the empty key) never collide with internal ones.
const (
	tagData    = 'd' // 'd' + user key, version = commit timestamp
	tagPrepare = 'p' // 'p' + big-endian txn id, version = start timestamp
	tagMeta    = 'm' // metadata, read at math.MaxUint64
	tagOutcome = 'o' // 'o' + big-endian txn id: how a transaction finished here (outcome.go)
)

// markKey holds the persisted maxTS high-water mark; each write is versioned
// by the mark itself, so the highest mark is the one read back.
var markKey = []byte{tagMeta, 'm', 'a', 'x', 't', 's'}

// prepareKey returns the Badger key of txnID's prepare record.
func prepareKey(txnID uint64) []byte {
	var k [9]byte
	k[0] = tagPrepare
	binary.BigEndian.PutUint64(k[1:], txnID)
	return k[:]
}

// recordVersion is the format version of encoded prepare records. Version 1 records (no
// minimum commit timestamp, no flags) and version 2 records (no digest) are still read.
const recordVersion = 3

// recordParallel is the flag of a record prepared under the parallel commit protocol.
const recordParallel = 1

// diskRecord is a decoded prepare record.
type diskRecord struct {
	TxnID        uint64
	StartTS      uint64
	PreparedAt   time.Time
	Ops          []Op
	ReadKeys     [][]byte // compare keys that are not also op keys
	Participants []string
	MinCommitTS  uint64 // 0 in version 1 records
	Parallel     bool
	Digest       []byte // the request's digest (requestDigest); nil before version 3
}

// encodeRecord serialises a prepare record:
//
//	version byte (1)
//	uvarint txnID, uvarint startTS, varint preparedAt (Unix nanoseconds)
//	uvarint len(ops), then per op: kind byte, uvarint len(key), key, uvarint len(value), value
//	uvarint len(readKeys), then per key: uvarint len, bytes
//	uvarint len(participants), then per name: uvarint len, bytes
//	uvarint minCommitTS, flags byte (recordParallel)         (version 2 on)
//	uvarint len(digest), digest                              (version 3 on)
func encodeRecord(r *diskRecord) []byte {
	n := 2 + 4*binary.MaxVarintLen64 + 4*binary.MaxVarintLen64 + len(r.Digest)
	for _, op := range r.Ops {
		n += 1 + 2*binary.MaxVarintLen64 + len(op.Key) + len(op.Value)
	}
	for _, k := range r.ReadKeys {
		n += binary.MaxVarintLen64 + len(k)
	}
	for _, p := range r.Participants {
		n += binary.MaxVarintLen64 + len(p)
	}
	b := make([]byte, 0, n)
	b = append(b, recordVersion)
	b = binary.AppendUvarint(b, r.TxnID)
	b = binary.AppendUvarint(b, r.StartTS)
	b = binary.AppendVarint(b, r.PreparedAt.UnixNano())
	b = binary.AppendUvarint(b, uint64(len(r.Ops)))
	for _, op := range r.Ops {
		b = append(b, byte(op.Kind))
		b = appendBytes(b, op.Key)
		b = appendBytes(b, op.Value)
	}
	b = binary.AppendUvarint(b, uint64(len(r.ReadKeys)))
	for _, k := range r.ReadKeys {
		b = appendBytes(b, k)
	}
	b = binary.AppendUvarint(b, uint64(len(r.Participants)))
	for _, p := range r.Participants {
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p...)
	}
	b = binary.AppendUvarint(b, r.MinCommitTS)
	var flags byte
	if r.Parallel {
		flags |= recordParallel
	}
	b = append(b, flags)
	return appendBytes(b, r.Digest)
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

var errCorrupt = errors.New("corrupt prepare record")

// recordDecoder reads the fields of an encoded record, remembering the first
// error. Decoded byte slices alias the input.
type recordDecoder struct {
	b   []byte
	err error
}

func (d *recordDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *recordDecoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *recordDecoder) byte1() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = errCorrupt
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *recordDecoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errCorrupt
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// count reads a slice length, rejecting lengths that the remaining input
// cannot possibly hold (each element takes at least minSize bytes), so a
// corrupt length cannot trigger a huge allocation.
func (d *recordDecoder) count(minSize int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(len(d.b)/minSize) || n > math.MaxInt32 {
		d.err = errCorrupt
		return 0
	}
	return int(n)
}

// decodeRecord parses an encoded prepare record. The returned slices alias b.
func decodeRecord(b []byte) (*diskRecord, error) {
	d := &recordDecoder{b: b}
	version := d.byte1()
	if d.err == nil && (version < 1 || version > recordVersion) {
		return nil, fmt.Errorf("%w: unknown format version %d", errCorrupt, version)
	}
	r := &diskRecord{}
	r.TxnID = d.uvarint()
	r.StartTS = d.uvarint()
	r.PreparedAt = time.Unix(0, d.varint())
	if n := d.count(3); n > 0 {
		r.Ops = make([]Op, n)
		for i := range r.Ops {
			r.Ops[i].Kind = OpKind(d.byte1())
			r.Ops[i].Key = d.bytes()
			r.Ops[i].Value = d.bytes()
			if d.err == nil && r.Ops[i].Kind != OpPut && r.Ops[i].Kind != OpDelete {
				return nil, fmt.Errorf("%w: op %d has unknown kind %d", errCorrupt, i, r.Ops[i].Kind)
			}
		}
	}
	if n := d.count(1); n > 0 {
		r.ReadKeys = make([][]byte, n)
		for i := range r.ReadKeys {
			r.ReadKeys[i] = d.bytes()
		}
	}
	if n := d.count(1); n > 0 {
		r.Participants = make([]string, n)
		for i := range r.Participants {
			r.Participants[i] = string(d.bytes())
		}
	}
	if version >= 2 {
		r.MinCommitTS = d.uvarint()
		flags := d.byte1()
		if d.err == nil && flags&^recordParallel != 0 {
			return nil, fmt.Errorf("%w: unknown flags %#x", errCorrupt, flags)
		}
		r.Parallel = flags&recordParallel != 0
	}
	if version >= 3 {
		r.Digest = d.bytes()
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(d.b))
	}
	return r, nil
}

// readRecord reads and decodes the prepare record item, checking that it holds the transaction
// its key names, at its own start timestamp.
func readRecord(db *badger.DB, item *badger.Item) (*diskRecord, error) {
	key := item.KeyCopy(nil)
	val, err := valueOf(db, item)
	if err != nil {
		return nil, fmt.Errorf("read prepare record %x: %w", key, err)
	}
	rec, err := decodeRecord(val)
	if err != nil {
		return nil, fmt.Errorf("prepare record %x: %w", key, err)
	}
	if len(key) != 9 || binary.BigEndian.Uint64(key[1:]) != rec.TxnID || item.Version() != rec.StartTS {
		return nil, fmt.Errorf("prepare record %x (version %d) holds transaction %d start %d: %w",
			key, item.Version(), rec.TxnID, rec.StartTS, errCorrupt)
	}
	return rec, nil
}
