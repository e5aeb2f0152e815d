package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"
)

// scanModel is every version ever committed, to compute what a scan at ts must return.
type scanModel map[string][]modelVersion

type modelVersion struct {
	ts      uint64
	value   string
	deleted bool
}

func (m scanModel) add(ts uint64, ops []Op) {
	for _, op := range ops {
		m[string(op.Key)] = append(m[string(op.Key)], modelVersion{ts: ts, value: string(op.Value), deleted: op.Kind == OpDelete})
	}
}

// at returns the live keys of [start, end) at ts with their values and versions, in order.
func (m scanModel) at(start, end string, ts uint64) []Value {
	var out []Value
	for k, vs := range m {
		if k < start || end != "" && k >= end {
			continue
		}
		var latest *modelVersion
		for i := range vs {
			if vs[i].ts <= ts && (latest == nil || vs[i].ts > latest.ts) {
				latest = &vs[i]
			}
		}
		if latest != nil && !latest.deleted {
			out = append(out, Value{Key: []byte(k), Value: []byte(latest.value), Version: latest.ts, Found: true})
		}
	}
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i].Key, out[j].Key) < 0 })
	return out
}

// scanAll pages through [start, end) at ts and returns every key, checking that each page
// respects its limits.
func scanAll(t *testing.T, s *Store, start, end string, ts uint64, opts ScanOptions) ([]Value, int) {
	t.Helper()
	var all []Value
	pages := 0
	from := []byte(start)
	for {
		page, more, err := s.Scan(context.Background(), from, []byte(end), ts, opts)
		if err != nil {
			t.Fatalf("scan [%q, %q) at %d from %q: %v", start, end, ts, from, err)
		}
		pages++
		if opts.Limit > 0 && len(page) > opts.Limit {
			t.Fatalf("a page of %d keys over the limit of %d", len(page), opts.Limit)
		}
		if opts.MaxBytes > 0 && len(page) > 1 {
			n := 0
			for _, v := range page[:len(page)-1] {
				n += len(v.Key) + len(v.Value)
			}
			if n >= opts.MaxBytes {
				t.Fatalf("a page went on past its byte budget of %d (%d bytes before its last key)", opts.MaxBytes, n)
			}
		}
		all = append(all, page...)
		if !more {
			return all, pages
		}
		if len(page) == 0 {
			t.Fatal("a page with more to come holds no key: the scan makes no progress")
		}
		from = append(bytes.Clone(page[len(page)-1].Key), 0)
	}
}

func sameValues(t *testing.T, what string, got, want []Value, keysOnly bool) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d keys, want %d\ngot  %v\nwant %v", what, len(got), len(want), keysOf(got), keysOf(want))
	}
	for i := range got {
		if !bytes.Equal(got[i].Key, want[i].Key) || got[i].Version != want[i].Version || !got[i].Found ||
			!keysOnly && !bytes.Equal(got[i].Value, want[i].Value) || keysOnly && got[i].Value != nil {
			t.Fatalf("%s: key %d is %q=%q@%d, want %q=%q@%d", what, i, got[i].Key, got[i].Value, got[i].Version, want[i].Key, want[i].Value, want[i].Version)
		}
	}
}

func keysOf(vs []Value) []string {
	var out []string
	for _, v := range vs {
		out = append(out, string(v.Key))
	}
	return out
}

// Every kind of range over a random history of one-phase writes, deletes and two-phase
// commits, at every timestamp it passed through, matches the model; so does paging.
func TestScanMatchesTheHistoryAtEveryTimestamp(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	rng := rand.New(rand.NewPCG(7, 11))
	m := scanModel{}
	key := func() string { return fmt.Sprintf("k%03d", rng.IntN(120)) }
	var stamps []uint64
	ts := uint64(10)
	for i := range 400 {
		var ops []Op
		for range 1 + rng.IntN(3) {
			if rng.IntN(4) == 0 {
				ops = append(ops, del(key()))
			} else {
				ops = append(ops, put(key(), fmt.Sprintf("v%d-%s", i, bytes.Repeat([]byte("x"), rng.IntN(300)))))
			}
		}
		ts += 2
		if rng.IntN(3) == 0 {
			min := mustPrepare(t, s, uint64(1000+i), ts, nil, ops...)
			if err := s.Commit(context.Background(), uint64(1000+i), min); err != nil {
				t.Fatal(err)
			}
			m.add(min, dedupeOps(ops))
			ts = max(ts, min)
		} else {
			cts := mustApply(t, s, ts, nil, ops...)
			m.add(cts, dedupeOps(ops))
			ts = max(ts, cts)
		}
		stamps = append(stamps, ts)
	}
	ranges := [][2]string{{"", ""}, {"k0", "k1"}, {"k050", "k060"}, {"k119", ""}, {"k0", "k0"}, {"a", "b"}, {"k03", ""}}
	for _, at := range []uint64{stamps[10], stamps[200], stamps[len(stamps)-1], ts + 100} {
		for _, r := range ranges {
			want := m.at(r[0], r[1], at)
			for _, opts := range []ScanOptions{{}, {Limit: 7}, {MaxBytes: 900}, {Limit: 1}, {KeysOnly: true, Limit: 13}} {
				got, _ := scanAll(t, s, r[0], r[1], at, opts)
				sameValues(t, fmt.Sprintf("scan [%q, %q) at %d %+v", r[0], r[1], at, opts), got, want, opts.KeysOnly)
			}
		}
	}
	// A range many times the byte budget comes in many pages, each within it.
	_, pages := scanAll(t, s, "", "", ts+100, ScanOptions{MaxBytes: 1 << 10})
	if pages < 10 {
		t.Fatalf("a scan of the whole store with a 1 KiB budget took %d pages", pages)
	}
}

// Paging at one timestamp while writers keep changing the range returns exactly the snapshot.
func TestScanPagesAtOneTimestampSeeOneSnapshot(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	m := scanModel{}
	for i := range 50 {
		op := put(fmt.Sprintf("p%02d", i), "before")
		m.add(mustApply(t, s, uint64(10+i), nil, op), []Op{op})
	}
	at := s.Stats().MaxTS
	want := m.at("p", "q", at)
	var got []Value
	from := []byte("p")
	for i := 0; ; i++ {
		page, more, err := s.Scan(context.Background(), from, []byte("q"), at, ScanOptions{Limit: 5})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, page...)
		// Writes between pages: overwrites, deletes and new keys, all above at.
		mustApply(t, s, at+1, nil, put(fmt.Sprintf("p%02d", (i*7)%50), "after"), del(fmt.Sprintf("p%02d", (i*3+1)%50)), put(fmt.Sprintf("p%02da", i), "new"))
		if !more {
			break
		}
		from = append(bytes.Clone(page[len(page)-1].Key), 0)
	}
	sameValues(t, "paged scan under writes", got, want, false)
}

// A scan never sees half of a transaction: it waits for a prepared transaction whose writes
// could land at or below its timestamp, in the part of the range it covers, and then sees
// all of them; it does not wait for locks outside the range or above its timestamp.
func TestScanWaitsForPreparedTransactionsInItsRange(t *testing.T) {
	opts := testOpts(t, t.TempDir())
	opts.LockWait = 5 * time.Second
	s := openTest(t, opts)
	mustApply(t, s, 5, nil, put("a1", "old"), put("a2", "old"), put("m", "free"))
	min := mustPrepare(t, s, 9, 6, nil, put("a1", "new"), put("a2", "new"), put("z", "new"))
	done := make(chan []Value, 1)
	go func() {
		page, _, err := s.Scan(context.Background(), []byte("a"), []byte("b"), min+10, ScanOptions{})
		if err != nil {
			t.Error(err)
		}
		done <- page
	}()
	select {
	case page := <-done:
		t.Fatalf("scan returned %v while a transaction in its range was prepared", keysOf(page))
	case <-time.After(50 * time.Millisecond):
	}
	// Outside the range, or at a timestamp below the transaction's minimum: no wait.
	if page, _, err := s.Scan(context.Background(), []byte("b"), []byte("y"), min+10, ScanOptions{}); err != nil || len(page) != 1 {
		t.Fatalf("a scan beside the prepared transaction's keys: %v, %v", keysOf(page), err)
	}
	if page, _, err := s.Scan(context.Background(), []byte("a"), []byte("b"), min-1, ScanOptions{}); err != nil || len(page) != 2 || string(page[0].Value) != "old" {
		t.Fatalf("scan below the prepared transaction's minimum: %v %v", page, err)
	}
	if err := s.Commit(context.Background(), 9, min); err != nil {
		t.Fatal(err)
	}
	page := <-done
	if len(page) != 2 || string(page[0].Value) != "new" || string(page[1].Value) != "new" {
		t.Fatalf("scan after the commit: %v, want both writes", page)
	}
	// A lock that outlives the wait bound is reported, not skipped.
	opts2 := testOpts(t, t.TempDir())
	opts2.LockWait = 100 * time.Millisecond
	s2 := openTest(t, opts2)
	min2 := mustPrepare(t, s2, 3, 4, nil, put("m", "x"))
	_, _, err := s2.Scan(context.Background(), nil, nil, min2+1, ScanOptions{})
	var le *LockedError
	if !errors.As(err, &le) || le.TxnID != 3 {
		t.Fatalf("scan over a lock held past the wait bound: %v, want *LockedError for 3", err)
	}
	if err := s2.Abort(context.Background(), 3); err != nil {
		t.Fatal(err)
	}
}

// Scans racing two-phase commits that write pairs of keys never see half of a pair: a commit
// that lands while a scan reads must either be waited for or be seen whole.
func TestScansRacingCommitsNeverSeeHalfATransaction(t *testing.T) {
	s := openTest(t, testOpts(t, t.TempDir()))
	var o oracle
	const pairs = 4
	for j := range pairs {
		mustApply(t, s, o.next(), nil, put(fmt.Sprintf("x%d", j), "0"), put(fmt.Sprintf("y%d", j), "0"))
	}
	ctx := context.Background()
	deadline := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				j, v := (w+i)%pairs, fmt.Sprintf("%d.%d", w, i)
				id := o.next()
				min, err := s.Prepare(ctx, PrepareRecord{TxnID: id, StartTS: id, Ops: []Op{put(fmt.Sprintf("x%d", j), v), put(fmt.Sprintf("y%d", j), v)}, Participants: []string{"n1", "n2"}}, nil)
				if errors.Is(err, ErrConflict) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				cts := max(o.next(), min)
				o.observe(cts)
				if err := s.CommitNoSync(ctx, id, cts); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	scans := 0
	for time.Now().Before(deadline) {
		page, _, err := s.Scan(ctx, nil, nil, o.next(), ScanOptions{})
		if err != nil {
			t.Fatal(err)
		}
		scans++
		for j := 0; j < pairs; j++ {
			if x, y := page[j], page[pairs+j]; !bytes.Equal(x.Value, y.Value) || x.Version != y.Version {
				t.Fatalf("scan %d saw half a transaction: %s=%s@%d, %s=%s@%d", scans, x.Key, x.Value, x.Version, y.Key, y.Value, y.Version)
			}
		}
	}
	wg.Wait()
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d scans", scans)
}

// A scan that starts while a transaction in its range is prepared, at a timestamp its commit
// may land at or below, sees the commit, however the two race: the scan must never decide
// that the range is free of locks after reading a page the commit has since changed (a page
// read before the commit, checked after the lock is gone, would be a stale state at the
// scan's timestamp, and another shard would show the rest of the transaction). A race with
// no wrong outcome: a sound store passes every round, an unsound one fails some.
func TestScanRacingACommitInItsRangeSeesIt(t *testing.T) {
	opts := testOpts(t, t.TempDir())
	opts.LockWait = 10 * time.Second
	s := openTest(t, opts)
	ctx := context.Background()
	ts := mustApply(t, s, 1, nil, put("k", "v0"))
	for i := uint64(1); i <= 300; i++ {
		min := mustPrepare(t, s, i, ts+1, nil, put("k", fmt.Sprint("v", i)))
		want := fmt.Sprint("v", i)
		commitErr := make(chan error, 1)
		start := make(chan struct{})
		go func() {
			<-start
			commitErr <- s.CommitNoSync(ctx, i, min)
		}()
		close(start)
		page, _, err := s.Scan(ctx, []byte("k"), []byte("l"), min+1, ScanOptions{})
		if err := <-commitErr; err != nil {
			t.Fatal(err)
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(page) != 1 || string(page[0].Value) != want {
			t.Fatalf("round %d: scan at %d of a transaction prepared before it and committed at %d read %v, want %s", i, min+1, min, page, want)
		}
		ts = min + 1
	}
}
