package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kvtx/kvtx/txn/client"
)

// rangeModel is every key's history, to compute what a range read at a version returns.
type rangeModel map[string][]client.KeyValue

func (m rangeModel) at(start, end string, version uint64) []client.KeyValue {
	var out []client.KeyValue
	for k, vs := range m {
		if k < start || end != "" && k >= end {
			continue
		}
		var latest *client.KeyValue
		for i := range vs {
			if vs[i].Version <= version && (latest == nil || vs[i].Version > latest.Version) {
				latest = &vs[i]
			}
		}
		if latest != nil && latest.Found {
			out = append(out, *latest)
		}
	}
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i].Key, out[j].Key) < 0 })
	return out
}

func scanAllKeys(t *testing.T, cl *client.Client, start, end string, opts ...client.ScanOption) []client.KeyValue {
	t.Helper()
	var out []client.KeyValue
	for kv, err := range cl.Scan(stepCtx(t), []byte(start), []byte(end), opts...) {
		if err != nil {
			t.Fatalf("scan [%q, %q): %v", start, end, err)
		}
		out = append(out, kv)
	}
	return out
}

func sameRange(t *testing.T, what string, got, want []client.KeyValue, keysOnly bool) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d keys, want %d", what, len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i].Key, want[i].Key) || got[i].Version != want[i].Version || !keysOnly && !bytes.Equal(got[i].Value, want[i].Value) {
			t.Fatalf("%s: key %d is %q=%q@%d, want %q=%q@%d", what, i, got[i].Key, got[i].Value, got[i].Version, want[i].Key, want[i].Value, want[i].Version)
		}
	}
}

// Range reads over three shards match a model of a random history of one-phase and
// cross-shard writes and deletes: prefix, bounded and from-key ranges, keys only, pages of
// every size, and reads at an older version; paging at one version while writers change the
// range returns exactly that snapshot; kvctl prints and deletes ranges.
func TestRangeReadsMatchAModel(t *testing.T) {
	c := newCluster(t, 3)
	cl := c.client()
	ctx := stepCtx(t)
	rng := rand.New(rand.NewPCG(3, 5))
	m := rangeModel{}
	var mid uint64
	for i := range 150 {
		var ops []client.Op
		for range 1 + rng.IntN(3) {
			k := fmt.Sprintf("r/%03d", rng.IntN(120))
			if rng.IntN(5) == 0 {
				ops = append(ops, client.Del([]byte(k)))
			} else {
				ops = append(ops, client.Put([]byte(k), []byte(fmt.Sprintf("v%d", i))))
			}
		}
		res, err := cl.Txn(ctx, nil, ops...)
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		seen := map[string]bool{}
		for j := len(ops) - 1; j >= 0; j-- { // the last op on a key wins
			k := string(ops[j].Key)
			if seen[k] {
				continue
			}
			seen[k] = true
			m[k] = append(m[k], client.KeyValue{Key: ops[j].Key, Value: ops[j].Value, Version: res.CommitTS, Found: ops[j].Kind == 1})
		}
		if i == 75 {
			mid = res.CommitTS
		}
	}
	now := uint64(1<<64 - 1)
	for _, r := range [][2]string{{"r/", "r0"}, {"r/050", "r/060"}, {"r/1", ""}, {"", ""}, {"r/x", "r/y"}} {
		sameRange(t, fmt.Sprintf("scan [%q, %q)", r[0], r[1]), scanAllKeys(t, cl, r[0], r[1]), m.at(r[0], r[1], now), false)
		sameRange(t, fmt.Sprintf("scan [%q, %q) at %d", r[0], r[1], mid), scanAllKeys(t, cl, r[0], r[1], client.ScanAt(mid)), m.at(r[0], r[1], mid), false)
		sameRange(t, fmt.Sprintf("keys-only scan [%q, %q) in pages of 3", r[0], r[1]), scanAllKeys(t, cl, r[0], r[1], client.ScanKeysOnly(), client.ScanPageSize(3)), m.at(r[0], r[1], now), true)
	}
	// Values large on one shard and small on the others, so that the first shard's share of a
	// page's byte budget ends its part after a few keys while the others send all of theirs:
	// the master must stop at the smallest last key of a shard that has more, or the next page
	// would skip the first shard's keys in between.
	shards := c.Config().ShardMap()
	for i := range 60 {
		k := fmt.Sprintf("b/%03d", i)
		size := 100
		if shards.Shard([]byte(k)) == 0 {
			size = 40 << 10
		}
		v := bytes.Repeat([]byte{byte('a' + i%26)}, size)
		res, err := cl.Txn(ctx, nil, client.Put([]byte(k), v))
		if err != nil {
			t.Fatal(err)
		}
		m[k] = append(m[k], client.KeyValue{Key: []byte(k), Value: v, Version: res.CommitTS, Found: true})
	}
	sameRange(t, "scan of big values in pages of 200 KiB", scanAllKeys(t, cl, "b/", "b0", client.ScanPageBytes(200<<10)), m.at("b/", "b0", now), false)

	kvs, err := cl.ReadAt(ctx, mid, []byte("r/010"), []byte("r/011"))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range kvs {
		want := m.at(string(kv.Key), string(kv.Key)+"\x00", mid)
		if len(want) == 0 && kv.Found || len(want) == 1 && (!kv.Found || kv.Version != want[0].Version) {
			t.Fatalf("read of %s at %d: %+v, want %+v", kv.Key, mid, kv, want)
		}
	}

	// Pages at one version while writers change the range: exactly the snapshot.
	_, version, _, err := cl.ScanPage(ctx, []byte("r/"), []byte("r0"), 1)
	if err != nil {
		t.Fatal(err)
	}
	want := m.at("r/", "r0", version)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := fmt.Sprintf("r/%03d", i%130)
			if _, err := cl.Txn(ctx, nil, client.Put([]byte(k), []byte("later")), client.Del([]byte(fmt.Sprintf("r/%03d", (i*7)%130)))); err != nil {
				t.Error(err)
				return
			}
		}
	})
	got := scanAllKeys(t, cl, "r/", "r0", client.ScanAt(version), client.ScanPageSize(4))
	close(stop)
	wg.Wait()
	sameRange(t, "paged scan at one version under writes", got, want, false)

	// kvctl: a prefix as JSON, closed by the version read at; a count; a limit; then a delete.
	out, errOut, code := c.kvctl("get", "--prefix", "r/0", "--at", strconv.FormatUint(version, 10), "-o", "json")
	if code != 0 {
		t.Fatalf("get --prefix: %d %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	wantPrefix := m.at("r/0", "r/1", version)
	if len(lines) != len(wantPrefix)+1 {
		t.Fatalf("get --prefix r/0 printed %d lines, want %d keys and a closing line:\n%s", len(lines), len(wantPrefix), out)
	}
	var closing struct {
		More    bool   `json:"more"`
		Version uint64 `json:"version"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &closing); err != nil || closing.More || closing.Version != version {
		t.Fatalf("closing line %q: %+v %v; want more false at version %d", lines[len(lines)-1], closing, err, version)
	}
	out, _, code = c.kvctl("get", "--prefix", "r/0", "--at", strconv.FormatUint(version, 10), "--count-only")
	if code != 0 || strings.TrimSpace(out) != strconv.Itoa(len(wantPrefix)) {
		t.Fatalf("get --count-only: %d %q, want %d", code, out, len(wantPrefix))
	}
	out, _, code = c.kvctl("get", "--from-key", "r/0", "--limit", "5", "--keys-only")
	if got := strings.Fields(out); code != 0 || len(got) != 5 || got[0] < "r/0" || !sort.StringsAreSorted(got) {
		t.Fatalf("get --from-key --limit 5 --keys-only: %d %q", code, out)
	}
	if _, errOut, code := c.kvctl("del", "--prefix", "r/0"); code != 0 {
		t.Fatalf("del --prefix: %d %s", code, errOut)
	}
	if left := scanAllKeys(t, cl, "r/0", "r/1"); len(left) != 0 {
		t.Fatalf("after del --prefix r/0, %d keys remain: %v", len(left), left)
	}
	if after := scanAllKeys(t, cl, "r/1", "r/2"); len(after) == 0 {
		t.Fatal("del --prefix r/0 took the keys of r/1 too")
	}
}
