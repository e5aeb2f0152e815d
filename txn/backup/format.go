package backup

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/kvtx/kvtx/txn"
)

// File layout (format 1), all integers big-endian:
//
//	magic "kvtxbak\n" | uint32 format | uint32 manifest length M | M bytes of manifest (JSON)
//	| 32 bytes: SHA-256 of everything before | section 0 | section 1 | ... | end of file
//
// Section i holds shard i of the source cluster: exactly Manifest.Shards[i].CompressedBytes
// bytes whose SHA-256 is Manifest.Shards[i].SHA256, a zstd stream of records in strictly
// increasing key order, each record uvarint key length | key | uvarint value length | value |
// uvarint version. A reader checks every length against the limits below and against what the
// manifest says remains before it allocates anything.

// Format is the version of the file format this package writes and reads.
const Format = 1

// Limits of the format: a file past one is refused as corrupt or hostile.
const (
	MaxManifestBytes = 1 << 20
	MaxShards        = 4096
	MaxKeyBytes      = 64 << 10
	MaxValueBytes    = 16 << 20
)

var magic = [8]byte{'k', 'v', 't', 'x', 'b', 'a', 'k', '\n'}

// headerBytes is the size of magic, format and manifest length.
const headerBytes = len(magic) + 8

// ShardHash names the key-to-shard function of the source cluster: FNV-1a 64 of the key
// modulo the number of nodes, over the node list in order (txn.ShardMap).
const ShardHash = "fnv1a64-mod-nodes"

// Manifest describes a backup: when and of what it was taken, and each shard's section.
type Manifest struct {
	// Format is the file format version (Format).
	Format int `json:"format"`
	// BackupTS is the snapshot's timestamp: every key is as a read at BackupTS saw it.
	BackupTS uint64 `json:"backup_ts"`
	// Created is when the backup began, in UTC.
	Created time.Time `json:"created"`
	// ShardMap is the source cluster's shard map.
	ShardMap ShardMap `json:"shard_map"`
	// Shards describes each shard's section, in shard order.
	Shards []Section `json:"shards"`
	// Keys and Bytes total the sections' Keys and Bytes.
	Keys  int64 `json:"keys"`
	Bytes int64 `json:"bytes"`
}

// ShardMap is a cluster's shard map as a backup records it.
type ShardMap struct {
	// Hash names the key-to-shard function (ShardHash).
	Hash string `json:"hash"`
	// Nodes are the node names in shard order.
	Nodes []string `json:"nodes"`
}

// Section describes one shard's data in the file.
type Section struct {
	// Node is the shard's node in the source cluster.
	Node string `json:"node"`
	// Keys counts the section's keys; Bytes their keys' and values' bytes.
	Keys  int64 `json:"keys"`
	Bytes int64 `json:"bytes"`
	// CompressedBytes is the section's size in the file; SHA256 the hex SHA-256 of those bytes.
	CompressedBytes int64  `json:"compressed_bytes"`
	SHA256          string `json:"sha256"`
}

// Record is one key of a backup: its value and version (the commit timestamp of the write
// that produced it) at the backup's timestamp.
type Record struct {
	Key     []byte
	Value   []byte
	Version uint64
}

// ErrCorrupt: a backup file is damaged, truncated or not a backup. Every such error of this
// package matches it with errors.Is.
var ErrCorrupt = errors.New("backup: corrupt file")

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// check reports what is wrong with m, or nil: the limits, the totals, and that the sections
// match the shard map.
func (m *Manifest) check() error {
	switch {
	case m.Format != Format:
		return corruptf("format %d, this kvctl reads format %d", m.Format, Format)
	case m.BackupTS == 0:
		return corruptf("manifest without a backup timestamp")
	case m.ShardMap.Hash != ShardHash:
		return corruptf("shard map hash %q, want %q", m.ShardMap.Hash, ShardHash)
	case len(m.Shards) == 0 || len(m.Shards) > MaxShards:
		return corruptf("%d shards, want 1 to %d", len(m.Shards), MaxShards)
	case len(m.ShardMap.Nodes) != len(m.Shards):
		return corruptf("%d sections for a shard map of %d nodes", len(m.Shards), len(m.ShardMap.Nodes))
	}
	var keys, bytes int64
	seen := map[string]bool{}
	for i, s := range m.Shards {
		if s.Node == "" || s.Node != m.ShardMap.Nodes[i] || seen[s.Node] {
			return corruptf("section %d is of node %q, shard %d of the shard map is %q", i, s.Node, i, m.ShardMap.Nodes[i])
		}
		seen[s.Node] = true
		if s.Keys < 0 || s.Bytes < 0 || s.CompressedBytes < 0 || s.Keys > s.Bytes { // every key has a byte at least
			return corruptf("section %d: %d keys, %d bytes, %d compressed bytes", i, s.Keys, s.Bytes, s.CompressedBytes)
		}
		if len(s.SHA256) != 2*sha256.Size {
			return corruptf("section %d: checksum %q is not a SHA-256", i, s.SHA256)
		}
		keys += s.Keys
		bytes += s.Bytes
	}
	if keys != m.Keys || bytes != m.Bytes {
		return corruptf("manifest totals %d keys and %d bytes, its sections %d and %d", m.Keys, m.Bytes, keys, bytes)
	}
	return nil
}

// shardMap returns the source cluster's shard map.
func (m *Manifest) shardMap() *txn.ShardMap { return txn.NewShardMap(m.ShardMap.Nodes) }

// encodeHeader returns the file's bytes up to the first section: header, manifest, checksum.
func encodeHeader(m *Manifest) ([]byte, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("backup: encode manifest: %w", err)
	}
	if len(body) > MaxManifestBytes {
		return nil, fmt.Errorf("backup: manifest of %d bytes exceeds %d", len(body), MaxManifestBytes)
	}
	out := append([]byte{}, magic[:]...)
	out = binary.BigEndian.AppendUint32(out, Format)
	out = binary.BigEndian.AppendUint32(out, uint32(len(body)))
	out = append(out, body...)
	sum := sha256.Sum256(out)
	return append(out, sum[:]...), nil
}

// readHeader reads and checks the header and manifest from r, returning the manifest and
// how many bytes they took.
func readHeader(r io.Reader) (*Manifest, int64, error) {
	head := make([]byte, headerBytes)
	if _, err := io.ReadFull(r, head); err != nil {
		return nil, 0, corruptf("header: %v", eofAsTruncated(err))
	}
	if !bytes.Equal(head[:len(magic)], magic[:]) {
		return nil, 0, corruptf("not a kvtx backup (no magic number)")
	}
	if f := binary.BigEndian.Uint32(head[len(magic):]); f != Format {
		return nil, 0, corruptf("format %d, this kvctl reads format %d", f, Format)
	}
	n := binary.BigEndian.Uint32(head[len(magic)+4:])
	if n == 0 || n > MaxManifestBytes {
		return nil, 0, corruptf("manifest of %d bytes, want 1 to %d", n, MaxManifestBytes)
	}
	rest := make([]byte, int(n)+sha256.Size)
	if _, err := io.ReadFull(r, rest); err != nil {
		return nil, 0, corruptf("manifest: %v", eofAsTruncated(err))
	}
	h := sha256.New()
	h.Write(head)
	h.Write(rest[:n])
	if !bytes.Equal(h.Sum(nil), rest[n:]) {
		return nil, 0, corruptf("manifest checksum mismatch")
	}
	m := &Manifest{}
	dec := json.NewDecoder(bytes.NewReader(rest[:n]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(m); err != nil {
		return nil, 0, corruptf("manifest: %v", err)
	}
	if err := m.check(); err != nil {
		return nil, 0, err
	}
	return m, int64(headerBytes) + int64(len(rest)), nil
}

func eofAsTruncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("file truncated")
	}
	return err
}

// sectionWriter compresses one shard's records into w and counts and hashes what it writes.
type sectionWriter struct {
	out    *countingWriter
	enc    *zstd.Encoder
	buf    []byte
	keys   int64
	bytes  int64
	last   []byte
	closed bool
}

type countingWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}

func newSectionWriter(w io.Writer) (*sectionWriter, error) {
	out := &countingWriter{w: w, h: sha256.New()}
	// One goroutine and a 1 MiB window per shard: a backup's memory does not grow with the
	// store, nor much with the number of shards.
	enc, err := zstd.NewWriter(out, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(1<<20))
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	return &sectionWriter{out: out, enc: enc}, nil
}

// add appends a record; keys must come in strictly increasing order.
func (s *sectionWriter) add(r Record) error {
	if len(r.Key) == 0 || len(r.Key) > MaxKeyBytes || len(r.Value) > MaxValueBytes || r.Version == 0 {
		return fmt.Errorf("backup: key %q (%d bytes, value %d bytes, version %d) does not fit the format", shortKey(r.Key), len(r.Key), len(r.Value), r.Version)
	}
	if s.keys > 0 && bytes.Compare(r.Key, s.last) <= 0 {
		return fmt.Errorf("backup: key %q after %q: keys out of order", shortKey(r.Key), shortKey(s.last))
	}
	b := s.buf[:0]
	b = binary.AppendUvarint(b, uint64(len(r.Key)))
	b = append(b, r.Key...)
	b = binary.AppendUvarint(b, uint64(len(r.Value)))
	b = append(b, r.Value...)
	b = binary.AppendUvarint(b, r.Version)
	s.buf = b
	if _, err := s.enc.Write(b); err != nil {
		return fmt.Errorf("backup: write: %w", err)
	}
	s.keys++
	s.bytes += int64(len(r.Key) + len(r.Value))
	s.last = append(s.last[:0], r.Key...)
	return nil
}

// close ends the zstd stream and returns the section's description.
func (s *sectionWriter) close(node string) (Section, error) {
	if !s.closed {
		s.closed = true
		if err := s.enc.Close(); err != nil {
			return Section{}, fmt.Errorf("backup: write: %w", err)
		}
	}
	return Section{Node: node, Keys: s.keys, Bytes: s.bytes, CompressedBytes: s.out.n, SHA256: hex.EncodeToString(s.out.h.Sum(nil))}, nil
}

// sectionReader reads one section's records, checking them against the manifest.
type sectionReader struct {
	m       *Manifest
	i       int
	sm      *txn.ShardMap
	raw     io.Reader // the section's bytes, hashed as they are read
	hash    hash.Hash
	dec     *zstd.Decoder
	br      *bufio.Reader
	keys    int64
	bytes   int64
	last    []byte
	started bool
}

func newDecoder() (*zstd.Decoder, error) {
	// Bounded memory whatever the file says: one goroutine, a window of at most 8 MiB.
	return zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(8<<20), zstd.WithDecoderMaxMemory(64<<20))
}

// next returns the section's next record, or io.EOF after the last one, once the section's
// bytes and counts have been checked. The record's slices are fresh.
func (s *sectionReader) next() (Record, error) {
	sec := s.m.Shards[s.i]
	if s.keys == sec.Keys {
		return Record{}, s.finish()
	}
	klen, err := binary.ReadUvarint(s.br)
	if err != nil {
		return Record{}, s.fail("key %d: length: %v", s.keys, eofAsTruncated(err))
	}
	left := sec.Bytes - s.bytes
	if klen == 0 || klen > MaxKeyBytes || int64(klen) > left {
		return Record{}, s.fail("key %d: length %d (limit %d, %d bytes left in the section)", s.keys, klen, MaxKeyBytes, left)
	}
	key := make([]byte, klen)
	if _, err := io.ReadFull(s.br, key); err != nil {
		return Record{}, s.fail("key %d: %v", s.keys, eofAsTruncated(err))
	}
	vlen, err := binary.ReadUvarint(s.br)
	if err != nil {
		return Record{}, s.fail("key %q: value length: %v", shortKey(key), eofAsTruncated(err))
	}
	if vlen > MaxValueBytes || int64(vlen) > left-int64(klen) {
		return Record{}, s.fail("key %q: value length %d (limit %d, %d bytes left in the section)", shortKey(key), vlen, MaxValueBytes, left-int64(klen))
	}
	value := make([]byte, vlen)
	if _, err := io.ReadFull(s.br, value); err != nil {
		return Record{}, s.fail("key %q: value: %v", shortKey(key), eofAsTruncated(err))
	}
	version, err := binary.ReadUvarint(s.br)
	if err != nil {
		return Record{}, s.fail("key %q: version: %v", shortKey(key), eofAsTruncated(err))
	}
	switch {
	case version == 0 || version > s.m.BackupTS:
		return Record{}, s.fail("key %q at version %d, outside [1, %d]", shortKey(key), version, s.m.BackupTS)
	case s.keys > 0 && bytes.Compare(key, s.last) <= 0:
		return Record{}, s.fail("key %q after %q: keys out of order", shortKey(key), shortKey(s.last))
	case s.sm.Shard(key) != s.i:
		return Record{}, s.fail("key %q belongs to shard %d, not %d", shortKey(key), s.sm.Shard(key), s.i)
	}
	s.keys++
	s.bytes += int64(klen + vlen)
	s.last = append(s.last[:0], key...)
	return Record{Key: key, Value: value, Version: version}, nil
}

// finish checks that the section ends where the manifest says, with its checksum.
func (s *sectionReader) finish() error {
	sec := s.m.Shards[s.i]
	if s.bytes != sec.Bytes {
		return s.fail("%d bytes of keys and values, the manifest says %d", s.bytes, sec.Bytes)
	}
	if _, err := s.br.ReadByte(); err != io.EOF {
		return s.fail("data after the last of its %d keys", sec.Keys)
	}
	if err := s.checksum(); err != nil {
		return err
	}
	return io.EOF
}

// checksum reads what remains of the section's bytes and compares their SHA-256 with the
// manifest's.
func (s *sectionReader) checksum() error {
	if _, err := io.Copy(io.Discard, s.raw); err != nil {
		return corruptf("section %d (%s): %v", s.i, s.m.Shards[s.i].Node, err)
	}
	if hex.EncodeToString(s.hash.Sum(nil)) != s.m.Shards[s.i].SHA256 {
		return corruptf("section %d (%s): checksum mismatch", s.i, s.m.Shards[s.i].Node)
	}
	return nil
}

// fail reports a bad record; a checksum mismatch, the likelier cause, wins.
func (s *sectionReader) fail(format string, args ...any) error {
	if err := s.checksum(); err != nil {
		return err
	}
	return corruptf("section %d (%s): "+format, append([]any{s.i, s.m.Shards[s.i].Node}, args...)...)
}

// Reader reads a backup file: the manifest, checked when the file is opened, then every
// section's records in order, each checked against the manifest and its checksum.
type Reader struct {
	f    *os.File
	m    *Manifest
	base int64 // offset of the first section
	dec  *zstd.Decoder
}

// Open opens a backup file and checks its header and manifest, and that its size is what the
// manifest says; the sections are checked as Records reads them.
func Open(path string) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	r, err := newReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	return r, nil
}

func newReader(f *os.File) (*Reader, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	m, base, err := readHeader(bufio.NewReader(io.LimitReader(f, int64(headerBytes)+MaxManifestBytes+sha256.Size)))
	if err != nil {
		return nil, err
	}
	want := base
	for _, s := range m.Shards {
		if s.CompressedBytes > st.Size() {
			return nil, corruptf("section of %s: %d bytes in a file of %d", s.Node, s.CompressedBytes, st.Size())
		}
		want += s.CompressedBytes
	}
	if st.Size() != want {
		return nil, corruptf("file of %d bytes, its manifest describes %d (truncated or extended)", st.Size(), want)
	}
	dec, err := newDecoder()
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	return &Reader{f: f, m: m, base: base, dec: dec}, nil
}

// Manifest returns the file's manifest.
func (r *Reader) Manifest() *Manifest { return r.m }

// Close closes the file.
func (r *Reader) Close() error {
	r.dec.Close()
	return r.f.Close()
}

// Records calls fn with every record of every section, in shard then key order, reading the
// file from its first section; an error of fn stops it and is returned. Every record is
// checked before fn sees it, and each section's checksum when it ends: a damaged file gives
// an error matching ErrCorrupt, possibly after fn has seen the records before the damage
// (Verify first to know the whole file is sound).
func (r *Reader) Records(fn func(shard int, rec Record) error) error {
	off := r.base
	sm := r.m.shardMap()
	for i, sec := range r.m.Shards {
		h := sha256.New()
		raw := io.TeeReader(bufio.NewReaderSize(io.NewSectionReader(r.f, off, sec.CompressedBytes), 256<<10), h)
		off += sec.CompressedBytes
		if err := r.dec.Reset(raw); err != nil {
			return corruptf("section %d (%s): %v", i, sec.Node, err)
		}
		s := &sectionReader{m: r.m, i: i, sm: sm, raw: raw, hash: h, dec: r.dec, br: bufio.NewReaderSize(r.dec, 64<<10)}
		for {
			rec, err := s.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
			if err := fn(i, rec); err != nil {
				return err
			}
		}
	}
	return nil
}

// Verify reads the whole file and checks every checksum, count and record; progress, if set,
// is called after each record with the keys and bytes read so far. It returns the manifest.
func Verify(path string, progress func(keys, bytes int64)) (*Manifest, error) {
	r, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var keys, n int64
	err = r.Records(func(_ int, rec Record) error {
		keys++
		n += int64(len(rec.Key) + len(rec.Value))
		if progress != nil {
			progress(keys, n)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	return r.m, nil
}

func shortKey(k []byte) string {
	if len(k) > 32 {
		return string(k[:32]) + "…"
	}
	return string(k)
}
