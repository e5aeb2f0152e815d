package kv

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// A restore writes every key at its own version: reads see each value from that version on
// and nothing below it, a split value comes back whole, the writes survive a crash once
// Restore returns, running it again changes nothing, and later writes land above the
// highest restored version.
func TestRestoreWritesEachKeyAtItsOwnVersion(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, testOpts(t, dir))
	ctx := context.Background()
	if st, err := s.RestoreState(); err != nil || st.HasData {
		t.Fatalf("fresh store: %+v %v, want no data", st, err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16) // 3 MiB: stored in chunks
	vals := []Value{
		{Key: []byte("a"), Value: []byte("1"), Version: 40},
		{Key: []byte("b"), Value: []byte("2"), Version: 7},
		{Key: []byte("c"), Value: []byte{}, Version: 40},
		{Key: []byte("d"), Value: big, Version: 1000},
	}
	for range 2 { // the second run is a rerun: same keys, same versions
		if err := s.Restore(ctx, vals); err != nil {
			t.Fatal(err)
		}
	}
	if ts := mustApply(t, s, 3, nil, put("e", "x")); ts <= 1000 {
		t.Fatalf("a write after the restore committed at %d, not above the restored version 1000", ts)
	}
	check := func(s *Store) {
		t.Helper()
		for _, v := range vals {
			got := mustGet(t, s, 5000, string(v.Key))
			if !got.Found || got.Version != v.Version || !bytes.Equal(got.Value, v.Value) {
				t.Fatalf("%s: found=%v version %d, %d bytes; want version %d, %d bytes", v.Key, got.Found, got.Version, len(got.Value), v.Version, len(v.Value))
			}
			wantMissing(t, mustGet(t, s, v.Version-1, string(v.Key)))
		}
	}
	check(s)
	if st, err := s.RestoreState(); err != nil || !st.HasData || st.Locks != 0 {
		t.Fatalf("after restore: %+v %v, want data and no locks", st, err)
	}
	crashed := openTest(t, testOpts(t, crashCopy(t, dir)))
	check(crashed)
}

// A restore refuses, writing nothing, a batch with a locked key, a key given twice or a
// version out of range; a deletion alone counts as data.
func TestRestoreRefusesLockedKeysAndBadInput(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	ctx := context.Background()
	mustPrepare(t, s, 10, 9, nil, put("locked", "p"))
	err := s.Restore(ctx, []Value{{Key: []byte("free"), Value: []byte("1"), Version: 3}, {Key: []byte("locked"), Value: []byte("2"), Version: 3}})
	var ce *ConflictError
	if !errors.As(err, &ce) || string(ce.Key) != "locked" || ce.TxnID != 10 {
		t.Fatalf("restore of a locked key: %v, want a conflict with transaction 10", err)
	}
	for _, bad := range [][]Value{
		{{Key: []byte("x"), Value: []byte("1"), Version: 0}},
		{{Key: []byte("x"), Value: []byte("1"), Version: 1<<64 - 1}},
		{{Key: []byte("x"), Value: []byte("1"), Version: 2}, {Key: []byte("x"), Value: []byte("2"), Version: 3}},
	} {
		if err := s.Restore(ctx, bad); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("restore %+v: %v, want ErrInvalidArgument", bad, err)
		}
	}
	if st, err := s.RestoreState(); err != nil || st.HasData || st.Prepared != 1 || st.Locks != 1 {
		t.Fatalf("after refused restores: %+v %v, want no data, one prepared transaction holding one lock", st, err)
	}
	if err := s.Abort(ctx, 10); err != nil {
		t.Fatal(err)
	}
	mustApply(t, s, 20, nil, del("never-written"))
	if st, err := s.RestoreState(); err != nil || !st.HasData {
		t.Fatalf("after a deletion: %+v %v, want data", st, err)
	}
}
