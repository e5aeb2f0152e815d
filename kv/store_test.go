package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
)

func TestGetReturnsCommitVersion(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	cts := mustApply(t, s, 10, nil, put("a", "1"), put("b", "2"))
	if cts != 10 {
		t.Fatalf("commitTS = %d, want 10 (ts above maxTS is used as is)", cts)
	}
	vs, err := s.Get(context.Background(), [][]byte{[]byte("b"), []byte("zz"), []byte("a")}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 3 {
		t.Fatalf("got %d values, want 3", len(vs))
	}
	wantValue(t, vs[0], "2", 10)
	wantMissing(t, vs[1])
	wantValue(t, vs[2], "1", 10)
	if string(vs[1].Key) != "zz" {
		t.Fatalf("Value.Key = %q, want the requested key", vs[1].Key)
	}
	wantMissing(t, mustGet(t, s, 9, "a"))
}

func TestDeleteMakesKeyMissing(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	c1 := mustApply(t, s, 10, nil, put("k", "v"))
	c2 := mustApply(t, s, 20, nil, del("k"))
	wantMissing(t, mustGet(t, s, c2, "k"))
	wantMissing(t, mustGet(t, s, c2+5, "k"))
	wantValue(t, mustGet(t, s, c2-1, "k"), "v", c1)
	// A deleted key compares as missing, version 0.
	mustApply(t, s, 0, []Compare{{Kind: CmpMissing, Key: []byte("k")}, {Kind: CmpVersionEqual, Key: []byte("k"), Version: 0}})
	// And can be written again.
	c3 := mustApply(t, s, 0, nil, put("k", "again"))
	wantValue(t, mustGet(t, s, c3, "k"), "again", c3)
}

func TestSnapshotReadsSeeOlderVersions(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	mustApply(t, s, 10, nil, put("k", "v10"), put("other", "o10"))
	mustApply(t, s, 20, nil, put("k", "v20"))
	mustApply(t, s, 30, nil, put("k", "v30"), del("other"))
	for _, c := range []struct {
		ts      uint64
		k       string
		version uint64
		other   string
	}{
		{5, "", 0, ""},
		{10, "v10", 10, "o10"},
		{15, "v10", 10, "o10"},
		{20, "v20", 20, "o10"},
		{29, "v20", 20, "o10"},
		{30, "v30", 30, ""},
		{1000, "v30", 30, ""},
	} {
		vs, err := s.Get(context.Background(), [][]byte{[]byte("k"), []byte("other")}, c.ts)
		if err != nil {
			t.Fatal(err)
		}
		if c.version == 0 {
			wantMissing(t, vs[0])
		} else {
			wantValue(t, vs[0], c.k, c.version)
		}
		if c.other == "" {
			wantMissing(t, vs[1])
		} else {
			wantValue(t, vs[1], c.other, 10)
		}
	}
}

func TestEmptyKeyAndValue(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	cts := mustApply(t, s, 0, nil, Op{Kind: OpPut, Key: []byte{}, Value: []byte("for the empty key")}, Op{Kind: OpPut, Key: []byte("e"), Value: nil})
	wantValue(t, mustGet(t, s, cts, ""), "for the empty key", cts)
	v := mustGet(t, s, cts, "e")
	if !v.Found || v.Value == nil || len(v.Value) != 0 || v.Version != cts {
		t.Fatalf("empty value: got %+v, want found, non-nil empty value at %d", v, cts)
	}
	// The empty key and the internal key prefixes do not collide.
	wantMissing(t, mustGet(t, s, cts, "d"))
	cmps := []Compare{{Kind: CmpValueEqual, Key: []byte("e"), Value: nil}, {Kind: CmpExists, Key: nil}}
	mustApply(t, s, 0, cmps, del(""))
	wantMissing(t, mustGet(t, s, math.MaxUint64-1, ""))
}

func TestDuplicateOpsLastWins(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	cts := mustApply(t, s, 0, []Compare{{Kind: CmpMissing, Key: []byte("a")}},
		put("a", "1"), put("b", "1"), put("a", "2"), del("b"), put("a", "3"))
	wantValue(t, mustGet(t, s, cts, "a"), "3", cts)
	wantMissing(t, mustGet(t, s, cts, "b"))
	// Large enough to take the map-based path.
	var ops []Op
	for i := range 40 {
		ops = append(ops, put(fmt.Sprintf("k%d", i%10), fmt.Sprintf("v%d", i)))
	}
	cts = mustApply(t, s, 0, nil, ops...)
	for i := 30; i < 40; i++ {
		wantValue(t, mustGet(t, s, cts, fmt.Sprintf("k%d", i%10)), fmt.Sprintf("v%d", i), cts)
	}
}

func TestCompareKinds(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	ver := mustApply(t, s, 100, nil, put("x", "hello"))
	k, missing := []byte("x"), []byte("nope")
	cases := []struct {
		name    string
		cmp     Compare
		pass    bool
		message string // of the failure, with the compare at index 1
	}{
		{"value equal", Compare{Kind: CmpValueEqual, Key: k, Value: []byte("hello")}, true, ""},
		{"value differs", Compare{Kind: CmpValueEqual, Key: k, Value: []byte("bye")}, false, `kv: compare 1 failed: value of "x" is "hello", want "bye"`},
		{"value of missing", Compare{Kind: CmpValueEqual, Key: missing, Value: []byte("")}, false, `kv: compare 1 failed: "nope" is missing, want value ""`},
		{"version equal", Compare{Kind: CmpVersionEqual, Key: k, Version: ver}, true, ""},
		{"version not equal", Compare{Kind: CmpVersionEqual, Key: k, Version: 3}, false, `kv: compare 1 failed: version of "x" is 100, want = 3`},
		{"missing version is 0", Compare{Kind: CmpVersionEqual, Key: missing, Version: 0}, true, ""},
		{"version less", Compare{Kind: CmpVersionLess, Key: k, Version: ver + 1}, true, ""},
		{"version not less", Compare{Kind: CmpVersionLess, Key: k, Version: ver}, false, `kv: compare 1 failed: version of "x" is 100, want < 100`},
		{"version greater", Compare{Kind: CmpVersionGreater, Key: k, Version: ver - 1}, true, ""},
		{"version not greater", Compare{Kind: CmpVersionGreater, Key: k, Version: ver}, false, `kv: compare 1 failed: version of "x" is 100, want > 100`},
		{"missing not greater", Compare{Kind: CmpVersionGreater, Key: missing, Version: 0}, false, `kv: compare 1 failed: version of "nope" is 0, want > 0`},
		{"exists", Compare{Kind: CmpExists, Key: k}, true, ""},
		{"does not exist", Compare{Kind: CmpExists, Key: missing}, false, `kv: compare 1 failed: "nope" is missing, want it to exist`},
		{"missing", Compare{Kind: CmpMissing, Key: missing}, true, ""},
		{"not missing", Compare{Kind: CmpMissing, Key: k}, false, `kv: compare 1 failed: "x" exists at version 100, want it missing`},
	}
	for _, via := range []string{"apply", "prepare"} {
		for i, c := range cases {
			t.Run(via+"/"+c.name, func(t *testing.T) {
				// Index 0 always passes, so a failure must report index 1.
				cmps := []Compare{{Kind: CmpExists, Key: k}, c.cmp}
				target := fmt.Sprintf("w-%s-%d", via, i)
				var err error
				var min uint64
				if via == "apply" {
					_, err = s.Apply(context.Background(), uint64(i), 0, cmps, []Op{put(target, "written")})
				} else {
					id := uint64(1000 + i)
					min, err = s.Prepare(context.Background(), PrepareRecord{TxnID: id, StartTS: 50, Ops: []Op{put(target, "written")}}, cmps)
					if err == nil {
						if err := s.Commit(context.Background(), id, min); err != nil {
							t.Fatal(err)
						}
					}
				}
				got := mustGet(t, s, s.Stats().MaxTS, target)
				if c.pass {
					if err != nil {
						t.Fatalf("compare should pass: %v", err)
					}
					if !got.Found {
						t.Fatal("compare passed but the write is missing")
					}
					return
				}
				var cf *CompareFailedError
				if !errors.As(err, &cf) || !errors.Is(err, ErrCompareFailed) {
					t.Fatalf("got %v, want *CompareFailedError", err)
				}
				if cf.Index != 1 || cf.Compare.Kind != c.cmp.Kind || !bytes.Equal(cf.Compare.Key, c.cmp.Key) {
					t.Fatalf("failure reports index %d compare %+v, want index 1 compare %+v", cf.Index, cf.Compare, c.cmp)
				}
				if bytes.Equal(c.cmp.Key, k) {
					wantValue(t, cf.Actual, "hello", ver)
				} else {
					wantMissing(t, cf.Actual)
				}
				if err.Error() != c.message {
					t.Fatalf("message %q, want %q", err.Error(), c.message)
				}
				if got.Found {
					t.Fatal("compare failed but the write happened")
				}
			})
		}
	}
}

func TestApplyRestampsAboveServedRead(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	c1 := mustApply(t, s, 10, nil, put("k", "old"))
	// A read at 100 has been served...
	wantValue(t, mustGet(t, s, 100, "k"), "old", c1)
	// ...so a write asking for ts 50 must land above 100.
	c2 := mustApply(t, s, 50, nil, put("k", "new"))
	if c2 <= 100 {
		t.Fatalf("commitTS %d is not above the served read at 100", c2)
	}
	// Repeating the read at 100 returns the same result.
	wantValue(t, mustGet(t, s, 100, "k"), "old", c1)
	wantValue(t, mustGet(t, s, c2, "k"), "new", c2)
	// Reads on other keys count too: maxTS is per store.
	mustGet(t, s, 500, "unrelated")
	if c3 := mustApply(t, s, 1, nil, put("k", "newer")); c3 <= 500 {
		t.Fatalf("commitTS %d is not above the served read at 500", c3)
	}
	if st := s.Stats(); st.MaxTS < 501 {
		t.Fatalf("MaxTS = %d, want >= 501", st.MaxTS)
	}
}

func TestApplyCommitTimestampsIncrease(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	var last uint64
	for i := range 20 {
		cts := mustApply(t, s, 7, nil, put("k", fmt.Sprint(i)))
		if cts <= last {
			t.Fatalf("commit %d at %d, not above the previous %d", i, cts, last)
		}
		last = cts
	}
	wantValue(t, mustGet(t, s, last, "k"), "19", last)
}

func TestApplyComparesOnly(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	mustApply(t, s, 10, nil, put("k", "v"))
	if _, err := s.Apply(context.Background(), 1, 0, []Compare{{Kind: CmpExists, Key: []byte("k")}}, nil); err != nil {
		t.Fatal(err)
	}
	_, err := s.Apply(context.Background(), 1, 0, []Compare{{Kind: CmpMissing, Key: []byte("k")}}, nil)
	if !errors.Is(err, ErrCompareFailed) {
		t.Fatalf("got %v, want ErrCompareFailed", err)
	}
}

func TestInvalidArguments(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	ctx := context.Background()
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrInvalidArgument) || !strings.HasPrefix(err.Error(), "kv: ") {
			t.Fatalf("%s: got %v, want a kv: ErrInvalidArgument", what, err)
		}
	}
	_, err := s.Apply(ctx, 1, 1, nil, []Op{{Kind: 9, Key: []byte("k")}})
	check("unknown op kind", err)
	_, err = s.Apply(ctx, 1, 1, []Compare{{Kind: 0, Key: []byte("k")}}, nil)
	check("unknown compare kind", err)
	_, err = s.Prepare(ctx, PrepareRecord{TxnID: 1, StartTS: 0, Ops: []Op{put("k", "v")}}, nil)
	check("zero start", err)
	_, err = s.Get(ctx, [][]byte{[]byte("k")}, math.MaxUint64)
	check("read at MaxUint64", err)
	check("commit at 0", s.Commit(ctx, 1, 0))
	if st := s.Stats(); st.LocksHeld != 0 {
		t.Fatalf("%d locks held after rejected calls", st.LocksHeld)
	}
	if _, err := Open(Options{}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Open without Dir: %v", err)
	}
}

func TestOversizedKeyIsAnErrorNotAPanic(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	ctx := context.Background()
	huge := make([]byte, 70_000) // above Badger's 65,000-byte key limit
	_, err := s.Apply(ctx, 1, 1, nil, []Op{{Kind: OpPut, Key: huge, Value: []byte("v")}})
	if err == nil || !strings.HasPrefix(err.Error(), "kv: ") {
		t.Fatalf("Apply with a huge key: %v", err)
	}
	_, err = s.Prepare(ctx, PrepareRecord{TxnID: 2, StartTS: 5, Ops: []Op{{Kind: OpPut, Key: huge}}}, nil)
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Prepare with a huge key: %v", err)
	}
	if st := s.Stats(); st.LocksHeld != 0 || st.Prepared != 0 {
		t.Fatalf("failed writes left state: %+v", st)
	}
}

func TestOpenTwiceFails(t *testing.T) {
	opts := testOpts(t, t.TempDir())
	openTest(t, opts)
	if s, err := Open(opts); err == nil {
		s.Close()
		t.Fatal("a second Open of the same directory succeeded")
	} else if !strings.HasPrefix(err.Error(), "kv: open badger in ") {
		t.Fatalf("second Open: %v", err)
	}
}

func TestClosedStore(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	mustApply(t, s, 1, nil, put("k", "v"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := context.Background()
	if _, err := s.Get(ctx, [][]byte{[]byte("k")}, 5); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	if _, err := s.Apply(ctx, 1, 5, nil, []Op{put("k", "v")}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Apply after Close: %v", err)
	}
	if _, err := s.Prepare(ctx, PrepareRecord{TxnID: 1, StartTS: 5}, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Prepare after Close: %v", err)
	}
	if err := s.Commit(ctx, 1, 6); !errors.Is(err, ErrClosed) {
		t.Fatalf("Commit after Close: %v", err)
	}
	if err := s.Abort(ctx, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Abort after Close: %v", err)
	}
	if st := s.Stats(); st.MaxTS != 1 || st.LSMBytes != 0 {
		t.Fatalf("Stats after Close: %+v", st)
	}
}

// A key listed many times in one Get is read once, and a Get whose values would pass
// MaxReadBytes fails with ErrTooLarge instead of building the reply: 1,024 copies of a 1 MiB
// key once took a node to gigabytes.
func TestGetReadsARepeatedKeyOnceAndStopsAtTheByteLimit(t *testing.T) {
	opts := testOpts(t, t.TempDir())
	opts.MaxReadBytes = 4 << 20
	s := openTest(t, opts)
	ctx := context.Background()
	big := bytes.Repeat([]byte{'v'}, 1<<20)
	mustApply(t, s, 10, nil, Op{Kind: OpPut, Key: []byte("big"), Value: big}, put("small", "s"))
	vals, err := s.Get(ctx, [][]byte{[]byte("big"), []byte("small"), []byte("big")}, 20)
	if err != nil || len(vals) != 3 || !bytes.Equal(vals[0].Value, big) || !bytes.Equal(vals[2].Value, big) ||
		string(vals[1].Value) != "s" || string(vals[2].Key) != "big" || vals[2].Version != 10 {
		t.Fatalf("get of a repeated key: %v (%d values)", err, len(vals))
	}
	keys := make([][]byte, 1024)
	for i := range keys {
		keys[i] = []byte("big")
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err = s.Get(ctx, keys, 20)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("get of 1,024 copies of a 1 MiB key: %v, want ErrTooLarge", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Fatalf("refusing 1,024 copies of a 1 MiB key allocated %d MiB", alloc>>20)
	}
}
