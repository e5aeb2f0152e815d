package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/kvtx/kvtx/txn"
)

// writeTestFile writes a backup of recs (any order) taken at ts on a cluster of nodes, as
// Backup does, and returns its path.
func writeTestFile(t *testing.T, ts uint64, nodes []string, recs []Record) string {
	t.Helper()
	slices.SortFunc(recs, func(a, b Record) int { return bytes.Compare(a.Key, b.Key) })
	sm := txn.NewShardMap(nodes)
	bufs := make([]*bytes.Buffer, len(nodes))
	ws := make([]*sectionWriter, len(nodes))
	for i := range nodes {
		bufs[i] = &bytes.Buffer{}
		var err error
		if ws[i], err = newSectionWriter(bufs[i]); err != nil {
			t.Fatal(err)
		}
	}
	m := &Manifest{Format: Format, BackupTS: ts, ShardMap: ShardMap{Hash: ShardHash, Nodes: nodes}}
	for _, r := range recs {
		if err := ws[sm.Shard(r.Key)].add(r); err != nil {
			t.Fatal(err)
		}
		m.Keys++
		m.Bytes += int64(len(r.Key) + len(r.Value))
	}
	var body []byte
	for i, w := range ws {
		sec, err := w.close(nodes[i])
		if err != nil {
			t.Fatal(err)
		}
		m.Shards = append(m.Shards, sec)
		body = append(body, bufs[i].Bytes()...)
	}
	return writeRaw(t, m, body)
}

// writeRaw writes a file of m's header and body as they are.
func writeRaw(t *testing.T, m *Manifest, body []byte) string {
	t.Helper()
	header, err := encodeHeader(m)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "b.kvtx")
	if err := os.WriteFile(path, append(header, body...), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// rawFile writes a one-shard file whose section is raw record bytes, compressed, with a
// manifest that agrees with them on every count and checksum: it is consistent, so only the
// checks of the records themselves can refuse it.
func rawFile(t *testing.T, ts uint64, keys, n int64, raw []byte) string {
	t.Helper()
	var buf bytes.Buffer
	enc, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	enc.Write(raw)
	enc.Close()
	sum := sha256.Sum256(buf.Bytes())
	m := &Manifest{Format: Format, BackupTS: ts, ShardMap: ShardMap{Hash: ShardHash, Nodes: []string{"node1"}}, Keys: keys, Bytes: n,
		Shards: []Section{{Node: "node1", Keys: keys, Bytes: n, CompressedBytes: int64(buf.Len()), SHA256: hex.EncodeToString(sum[:])}}}
	return writeRaw(t, m, buf.Bytes())
}

func record(key string, value []byte, version uint64) []byte {
	b := binary.AppendUvarint(nil, uint64(len(key)))
	b = append(b, key...)
	b = binary.AppendUvarint(b, uint64(len(value)))
	b = append(b, value...)
	return binary.AppendUvarint(b, version)
}

func readAll(t *testing.T, path string) (*Manifest, []Record, error) {
	t.Helper()
	r, err := Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer r.Close()
	var out []Record
	err = r.Records(func(shard int, rec Record) error {
		out = append(out, rec)
		return nil
	})
	return r.Manifest(), out, err
}

func testRecords(rng *rand.Rand, n int) []Record {
	recs := []Record{
		{Key: []byte("empty-value"), Value: []byte{}, Version: 3},
		{Key: []byte("big"), Value: bytes.Repeat([]byte("xyz"), 1<<20), Version: 99},
	}
	for i := range n {
		recs = append(recs, Record{Key: fmt.Appendf(nil, "k/%05d", i), Value: fmt.Appendf(nil, "value %d", rng.IntN(1000)), Version: 1 + rng.Uint64N(1000)})
	}
	return recs
}

// A file read back holds every record, with its value and version, in its source shard's
// section, in key order; the manifest's counts are those of the records.
func TestFileRoundTrip(t *testing.T) {
	nodes := []string{"node1", "node2", "node3"}
	recs := testRecords(rand.New(rand.NewPCG(1, 2)), 500)
	path := writeTestFile(t, 1000, nodes, slices.Clone(recs))
	m, err := Verify(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.BackupTS != 1000 || m.Keys != int64(len(recs)) || !slices.Equal(m.ShardMap.Nodes, nodes) {
		t.Fatalf("manifest %+v", m)
	}
	_, got, err := readAll(t, path)
	if err != nil {
		t.Fatal(err)
	}
	sm := txn.NewShardMap(nodes)
	slices.SortFunc(recs, func(a, b Record) int {
		if c := sm.Shard(a.Key) - sm.Shard(b.Key); c != 0 {
			return c
		}
		return bytes.Compare(a.Key, b.Key)
	})
	if len(got) != len(recs) {
		t.Fatalf("%d records, want %d", len(got), len(recs))
	}
	for i := range got {
		if !bytes.Equal(got[i].Key, recs[i].Key) || !bytes.Equal(got[i].Value, recs[i].Value) || got[i].Version != recs[i].Version {
			t.Fatalf("record %d: %q@%d (%d bytes), want %q@%d (%d bytes)", i, got[i].Key, got[i].Version, len(got[i].Value), recs[i].Key, recs[i].Version, len(recs[i].Value))
		}
	}
	empty := writeTestFile(t, 5, nodes, nil)
	if m, err := Verify(empty, nil); err != nil || m.Keys != 0 {
		t.Fatalf("empty backup: %+v %v", m, err)
	}
}

// A file cut anywhere is refused as corrupt.
func TestTruncatedFileIsRefused(t *testing.T) {
	path := writeTestFile(t, 1000, []string{"node1", "node2"}, testRecords(rand.New(rand.NewPCG(3, 4)), 200))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 4, headerBytes, headerBytes + 10, len(data) / 2, len(data) - 1} {
		if err := os.WriteFile(path, data[:n], 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Verify(path, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("file cut at %d of %d bytes: %v, want ErrCorrupt", n, len(data), err)
		}
	}
	if err := os.WriteFile(path, append(data, 0), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(path, nil); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "extended") {
		t.Fatalf("file with a byte appended: %v, want ErrCorrupt", err)
	}
}

// Flipping any one byte of a file, in its header, manifest, checksum or any section, is
// detected.
func TestEveryFlippedByteIsDetected(t *testing.T) {
	recs := []Record{{Key: []byte("a"), Value: []byte("1"), Version: 5}, {Key: []byte("b"), Value: []byte("22"), Version: 6}, {Key: []byte("c"), Value: nil, Version: 7}}
	path := writeTestFile(t, 10, []string{"node1", "node2"}, recs)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range data {
		bad := slices.Clone(data)
		bad[i] ^= 0x20
		if err := os.WriteFile(path, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Verify(path, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("byte %d of %d flipped: %v, want ErrCorrupt", i, len(data), err)
		}
	}
}

// Lengths, counts and versions that no honest file holds are refused with a clear error
// before anything that large is allocated, even when every checksum agrees.
func TestHostileSizesAreRefused(t *testing.T) {
	var huge [10]byte
	n := binary.PutUvarint(huge[:], 1<<40)
	for _, c := range []struct {
		name, want string
		keys, n    int64
		raw        []byte
	}{
		{"key length of 2^40", "length 1099511627776", 1, 10, append(huge[:n:n], 'k')},
		{"key length past the section", "bytes left", 1, 3, record("longer-key", nil, 1)},
		{"value length past the limit", "value length", 1, 1 << 30, append(append(binary.AppendUvarint(nil, 1), 'k'), huge[:n]...)},
		{"version above the backup", "outside [1, 100]", 1, 2, record("k", []byte("v"), 101)},
		{"version 0", "outside [1, 100]", 1, 2, record("k", []byte("v"), 0)},
		{"keys out of order", "out of order", 2, 4, append(record("b", []byte("1"), 1), record("a", []byte("2"), 1)...)},
		{"more records than the manifest says", "data after the last", 1, 2, append(record("a", []byte("1"), 1), record("b", []byte("2"), 1)...)},
		{"fewer records than the manifest says", "truncated", 2, 4, record("a", []byte("1"), 1)},
		{"bytes that disagree with the manifest", "the manifest says 9", 1, 9, record("a", []byte("1"), 1)},
	} {
		_, err := Verify(rawFile(t, 100, c.keys, c.n, c.raw), nil)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrCorrupt saying %q", c.name, err, c.want)
		}
	}
	// A manifest length past the limit, and manifests whose checksums agree but whose
	// contents lie: a section past the end of the file, too many shards, sections that do
	// not match the shard map, negative counts.
	path := filepath.Join(t.TempDir(), "b.kvtx")
	head := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(magic[:], Format), 1<<31)
	os.WriteFile(path, head, 0o644)
	if _, err := Verify(path, nil); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "manifest of 2147483648 bytes") {
		t.Errorf("manifest length 2^31: %v", err)
	}
	good := func() *Manifest {
		return &Manifest{Format: Format, BackupTS: 9, ShardMap: ShardMap{Hash: ShardHash, Nodes: []string{"node1"}},
			Shards: []Section{{Node: "node1", SHA256: strings.Repeat("0", 64)}}}
	}
	for _, c := range []struct {
		name, want string
		edit       func(*Manifest)
	}{
		{"a section of 2^62 bytes", "bytes in a file of", func(m *Manifest) { m.Shards[0].CompressedBytes = 1 << 62 }},
		{"5000 shards", "5000 shards", func(m *Manifest) {
			m.Shards = make([]Section, 5000)
			m.ShardMap.Nodes = make([]string, 5000)
		}},
		{"a section of another node", "section 0 is of node", func(m *Manifest) { m.Shards[0].Node = "node9" }},
		{"negative keys", "-1 keys", func(m *Manifest) { m.Shards[0].Keys = -1; m.Keys = -1 }},
		{"totals that disagree", "manifest totals", func(m *Manifest) { m.Keys = 7 }},
		{"another format", "format 2", func(m *Manifest) { m.Format = 2 }},
	} {
		m := good()
		c.edit(m)
		if _, err := Verify(writeRaw(t, m, nil), nil); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrCorrupt saying %q", c.name, err, c.want)
		}
	}
}
