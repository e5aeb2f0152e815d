package kv

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"
)

func sampleRecord() *diskRecord {
	return &diskRecord{
		TxnID:        1<<63 + 5,
		StartTS:      123456789,
		PreparedAt:   time.Unix(1700000000, 987654321),
		Ops:          []Op{put("a", "1"), del("b"), {Kind: OpPut, Key: []byte{}, Value: []byte{}}, put("c", string(make([]byte, 300)))},
		ReadKeys:     [][]byte{[]byte("guard"), {}},
		Participants: []string{"node-1", "node-2", ""},
		MinCommitTS:  123456790,
		Parallel:     true,
	}
}

func TestRecordRoundTrip(t *testing.T) {
	want := sampleRecord()
	got, err := decodeRecord(encodeRecord(want))
	if err != nil {
		t.Fatal(err)
	}
	if got.TxnID != want.TxnID || got.StartTS != want.StartTS || !got.PreparedAt.Equal(want.PreparedAt) ||
		!slices.Equal(got.Participants, want.Participants) || len(got.Ops) != len(want.Ops) || len(got.ReadKeys) != len(want.ReadKeys) ||
		got.MinCommitTS != want.MinCommitTS || got.Parallel != want.Parallel {
		t.Fatalf("round trip: got %+v, want %+v", got, want)
	}
	for i := range want.Ops {
		g, w := got.Ops[i], want.Ops[i]
		if g.Kind != w.Kind || !bytes.Equal(g.Key, w.Key) || (w.Kind == OpPut && !bytes.Equal(g.Value, w.Value)) {
			t.Fatalf("op %d: got %+v, want %+v", i, g, w)
		}
	}
	for i := range want.ReadKeys {
		if !bytes.Equal(got.ReadKeys[i], want.ReadKeys[i]) {
			t.Fatalf("read key %d: got %q, want %q", i, got.ReadKeys[i], want.ReadKeys[i])
		}
	}
	empty, err := decodeRecord(encodeRecord(&diskRecord{TxnID: 1, StartTS: 2}))
	if err != nil || empty.TxnID != 1 || empty.StartTS != 2 || len(empty.Ops) != 0 || empty.Parallel {
		t.Fatalf("empty record: %+v, %v", empty, err)
	}
}

// A store written by a previous format still opens: version 1 records (no minimum commit
// timestamp, no flags) decode with the minimum unknown (0) and the classic protocol, version 2
// records without a digest.
func TestOlderRecordVersionsStillDecode(t *testing.T) {
	v3 := encodeRecord(&diskRecord{TxnID: 7, StartTS: 9, Ops: []Op{put("k", "v")}, Participants: []string{"n1"}, MinCommitTS: 11})
	v2 := slices.Clone(v3[:len(v3)-1]) // without the digest's length (0)
	v2[0] = 2
	v1 := slices.Clone(v3[:len(v3)-3]) // and without the minimum (one byte here) and the flags
	v1[0] = 1
	got, err := decodeRecord(v1)
	if err != nil || got.TxnID != 7 || got.StartTS != 9 || got.MinCommitTS != 0 || got.Parallel || len(got.Ops) != 1 {
		t.Fatalf("version 1 record: %+v, %v", got, err)
	}
	got, err = decodeRecord(v2)
	if err != nil || got.MinCommitTS != 11 || got.Digest != nil || len(got.Ops) != 1 {
		t.Fatalf("version 2 record: %+v, %v", got, err)
	}
	if _, err := decodeRecord(v2[:len(v2)-1]); !errors.Is(err, errCorrupt) {
		t.Fatalf("version 2 record without its flags: %v, want errCorrupt", err)
	}
	bad := slices.Clone(v2)
	bad[len(bad)-1] = 0x80
	if _, err := decodeRecord(bad); !errors.Is(err, errCorrupt) {
		t.Fatalf("unknown flags: %v, want errCorrupt", err)
	}
	withDigest := encodeRecord(&diskRecord{TxnID: 7, StartTS: 9, Digest: []byte("0123456789abcdef0123456789abcdef")})
	if got, err := decodeRecord(withDigest); err != nil || string(got.Digest) != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("version 3 record: %+v, %v", got, err)
	}
}

func TestRecordCorruptionIsAnError(t *testing.T) {
	b := encodeRecord(sampleRecord())
	for n := range len(b) {
		if _, err := decodeRecord(b[:n]); !errors.Is(err, errCorrupt) {
			t.Fatalf("truncated to %d of %d bytes: got %v, want errCorrupt", n, len(b), err)
		}
	}
	if _, err := decodeRecord(append(slices.Clone(b), 0)); !errors.Is(err, errCorrupt) {
		t.Fatalf("trailing byte: %v", err)
	}
	bad := slices.Clone(b)
	bad[0] = 99
	if _, err := decodeRecord(bad); !errors.Is(err, errCorrupt) {
		t.Fatalf("unknown version: %v", err)
	}
	// Any single-byte change must decode or fail cleanly, never panic.
	for i := range b {
		for _, v := range []byte{0, 0x7f, 0x80, 0xff} {
			c := slices.Clone(b)
			c[i] = v
			_, _ = decodeRecord(c)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecord(sampleRecord()))
	f.Add([]byte{recordVersion})
	f.Add([]byte{recordVersion, 1, 2, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			return
		}
		// What decodes must survive a re-encoding unchanged (the input may
		// use non-canonical varints, so compare canonical forms).
		canon := encodeRecord(r)
		r2, err := decodeRecord(canon)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if again := encodeRecord(r2); !bytes.Equal(again, canon) {
			t.Fatalf("decode/encode is not stable: %x -> %x", canon, again)
		}
	})
}
