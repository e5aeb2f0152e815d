package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/client"
)

// Append checks atomicity: each transaction appends its id to one key on every shard of a
// group (read-modify-write with version compares; a value is a comma-separated list of ids).
// Every list of a group must end up identical: an acknowledged id on every shard, no id on only
// some shards, no definitely failed id anywhere, one order everywhere; every snapshot read
// during the run sees identical lists that are prefixes of the final one; and so does every
// scan of all the groups (in pages at one version), which also sees every append acknowledged
// before the scan began.
type Append struct {
	ks     keyspace
	groups [][]string // per group, one key per shard
}

// NewAppend makes groups of keys, one key per shard in each.
func NewAppend(sm *txn.ShardMap, groups int) *Append {
	a := &Append{ks: keyspace{sm}}
	used := map[string]bool{}
	for g := 0; g < groups; g++ {
		var keys []string
		for s := 0; s < sm.Len(); s++ {
			keys = append(keys, a.ks.onShard(fmt.Sprintf("%sg%d/k", appendPrefix, g), s, used))
		}
		a.groups = append(a.groups, keys)
	}
	return a
}

// Name returns "append".
func (a *Append) Name() string { return "append" }

// Setup writes nothing: a missing key is the empty list.
func (a *Append) Setup(ctx context.Context, cl *client.Client) error { return nil }

func parseList(v string) []string {
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// appendPrefix starts the name of every key of every group, and of no other key.
const appendPrefix = "append/"

// Step appends to a random group (7 in 10), reads one in a snapshot (2 in 10) or scans every
// group (1 in 10).
func (a *Append) Step(ctx context.Context, cl *client.Client, rng *rand.Rand, id int, rec *Recorder) error {
	g := rng.IntN(len(a.groups))
	keys := a.groups[g]
	cctx, cancel := opCtx(ctx)
	defer cancel()
	switch rng.IntN(10) {
	case 0:
		return scan(cctx, cl, rec, &Op{Workload: "append", Client: id, Group: -1}, appendPrefix, prefixEnd(appendPrefix))
	case 1, 2:
		op := rec.Invoke(&Op{Workload: "append", Client: id, Kind: "read", Group: g, Keys: keys, Shards: a.ks.shards(keys)})
		kvs, _, err := cl.Snapshot(cctx, bkeys(keys)...)
		if err == nil {
			op.Out, op.Found = values(kvs)
		}
		rec.Complete(op, err)
		return err
	}
	kvs, _, err := cl.Snapshot(cctx, bkeys(keys)...)
	if err != nil {
		return err
	}
	op := &Op{Workload: "append", Client: id, Kind: "append", Write: true, Group: g, Keys: keys, Shards: a.ks.shards(keys)}
	rec.Invoke(op)
	elem := strconv.FormatInt(op.ID, 10)
	op.In = []string{elem}
	op.Markers = a.ks.markers(op.ID, op.Shards)
	var cmps []client.Compare
	var ops []client.Op
	for i, k := range keys {
		cmps = append(cmps, client.IfVersion([]byte(k), kvs[i].Version))
		v := elem
		if kvs[i].Found && len(kvs[i].Value) > 0 {
			v = string(kvs[i].Value) + "," + elem
		}
		ops = append(ops, client.Put([]byte(k), []byte(v)))
	}
	ops = append(ops, markerPuts(op)...)
	_, err = cl.Txn(cctx, cmps, ops...)
	rec.Complete(op, err)
	return err
}

// Invariant names of the append workload.
const (
	invAppendAcked    = "append: acknowledged id on every shard"
	invAppendAtomic   = "append: no id on only some shards"
	invAppendAborted  = "append: no failed id visible"
	invAppendOrder    = "append: same order on every shard"
	invAppendDup      = "append: no duplicate id"
	invAppendSnapshot = "append: snapshot reads see identical lists"
	invAppendPrefix   = "append: every read is a prefix of the final list"
	invAppendMarker   = "append: markers agree with the lists"

	invAppendScanSnapshot = "append: scans see identical lists in each group"
	invAppendScanPrefix   = "append: every list a scan reads is a prefix of the final list"
	invAppendScanRecent   = "append: a scan sees every append acknowledged before it began"
)

// Check reads every group and checks the history against it.
func (a *Append) Check(ctx context.Context, cl *client.Client, ops []Op, r *Report) error {
	final := make([][][]string, len(a.groups)) // group → shard → list
	for g, keys := range a.groups {
		cctx, cancel := opCtx(ctx)
		kvs, _, err := cl.Snapshot(cctx, bkeys(keys)...)
		cancel()
		if err != nil {
			return fmt.Errorf("chaos: final append read of group %d: %w", g, err)
		}
		for _, kv := range kvs {
			final[g] = append(final[g], parseList(string(kv.Value)))
		}
	}
	a.checkHistory(final, ops, r)
	return nil
}

// checkHistory checks the history against the final lists (group → shard → ids).
func (a *Append) checkHistory(final [][][]string, ops []Op, r *Report) {
	for _, inv := range []string{invAppendAcked, invAppendAtomic, invAppendAborted, invAppendOrder, invAppendDup, invAppendSnapshot, invAppendPrefix, invAppendMarker,
		invAppendScanSnapshot, invAppendScanPrefix, invAppendScanRecent, invScanKeys} {
		r.invariant(inv)
	}
	// Where each id is, per group and shard.
	type where struct {
		group  int
		shards map[int]int // shard → position
	}
	seen := map[string]*where{}
	for g, lists := range final {
		for s, list := range lists {
			for pos, id := range list {
				w := seen[id]
				if w == nil {
					w = &where{group: g, shards: map[int]int{}}
					seen[id] = w
				}
				if _, dup := w.shards[s]; dup || w.group != g {
					r.violate(invAppendDup, fmt.Sprintf("id %s twice (group %d shard %d)", id, g, s))
					continue
				}
				w.shards[s] = pos
			}
		}
		// Same order: the relative order of common ids agrees between every two shards.
		for s := 1; s < len(lists); s++ {
			if d := orderConflict(lists[0], lists[s]); d != "" {
				r.violate(invAppendOrder, fmt.Sprintf("group %d shards 0 and %d: %s", g, s, d))
			}
		}
		nshards := len(lists)
		for id, w := range seen {
			if w.group == g && len(w.shards) != nshards {
				r.violate(invAppendAtomic, fmt.Sprintf("id %s in group %d is on %d of %d shards", id, g, len(w.shards), nshards))
			}
		}
	}
	for _, op := range ops {
		if op.Workload != "append" {
			continue
		}
		switch {
		case op.Kind == "append":
			id := op.In[0]
			w := seen[id]
			present := w != nil
			switch op.Status {
			case OK:
				if !present || len(w.shards) != len(final[op.Group]) {
					r.violate(invAppendAcked, fmt.Sprintf("acknowledged append %d (txn at %s) missing from group %d", op.ID, op.Return.Format("15:04:05.000"), op.Group))
				}
			case Failed:
				if present {
					r.violate(invAppendAborted, fmt.Sprintf("append %d failed (%s: %s) but is in group %d", op.ID, op.Reason, op.Err, op.Group))
				}
			}
			if op.Status != Invoked && present != op.Applied {
				r.violate(invAppendMarker, fmt.Sprintf("append %d (%s): in lists=%v, markers=%v", op.ID, op.Status, present, op.Applied))
			}
		case op.Kind == "read" && op.Status == OK:
			lists := make([][]string, len(op.Out))
			for i, v := range op.Out {
				lists[i] = parseList(v)
			}
			for s := 1; s < len(lists); s++ {
				if !slices.Equal(lists[0], lists[s]) {
					r.violate(invAppendSnapshot, fmt.Sprintf("read %d of group %d: shard 0 has %d ids, shard %d has %d (%s)", op.ID, op.Group, len(lists[0]), s, len(lists[s]), firstDiff(lists[0], lists[s])))
					break
				}
			}
			for s, l := range lists {
				f := final[op.Group][s]
				if len(l) > len(f) || !slices.Equal(l, f[:len(l)]) {
					r.violate(invAppendPrefix, fmt.Sprintf("read %d of group %d shard %d (%d ids) is not a prefix of the final list (%d ids): %s", op.ID, op.Group, s, len(l), len(f), firstDiff(l, f)))
				}
			}
		}
	}
	a.checkScans(final, ops, r)
	total := 0
	for _, lists := range final {
		if len(lists) > 0 {
			total += len(lists[0])
		}
	}
	r.Notes = append(r.Notes, fmt.Sprintf("append: %d ids in %d groups at the end", total, len(a.groups)))
}

// checkScans checks every scan of the groups against the final lists (group → shard → ids):
// within a group every shard's list is the same (the pages are at one version, so never half
// of an append), each is a prefix of the final one, and each holds every append to its group
// acknowledged before the scan was invoked (a scan reads at a fresh version, above every
// commit acknowledged by then).
func (a *Append) checkScans(final [][][]string, ops []Op, r *Report) {
	where := map[string][2]int{} // key → group, shard
	for g, keys := range a.groups {
		for s, k := range keys {
			where[k] = [2]int{g, s}
		}
	}
	var acked []Op // acknowledged appends, in the order they returned
	for _, op := range ops {
		if op.Workload == "append" && op.Kind == "append" && op.Status == OK {
			acked = append(acked, op)
		}
	}
	slices.SortFunc(acked, func(x, y Op) int { return x.Return.Compare(y.Return) })
	for _, op := range ops {
		if op.Workload != "append" || op.Kind != "scan" || op.Status != OK {
			continue
		}
		if d := checkScanKeys(op.Keys, appendPrefix, prefixEnd(appendPrefix)); d != "" {
			r.violate(invScanKeys, fmt.Sprintf("append scan %d: %s", op.ID, d))
		}
		lists := make([][][]string, len(a.groups)) // a key the scan did not return is empty
		for g, keys := range a.groups {
			lists[g] = make([][]string, len(keys))
		}
		for i, k := range op.Keys {
			w, ok := where[k]
			if !ok {
				r.violate(invAppendScanSnapshot, fmt.Sprintf("scan %d read %s=%q, which is in no group", op.ID, k, op.Out[i]))
				continue
			}
			lists[w[0]][w[1]] = parseList(op.Out[i])
		}
		for g, gl := range lists {
			for s := 1; s < len(gl); s++ {
				if !slices.Equal(gl[0], gl[s]) {
					r.violate(invAppendScanSnapshot, fmt.Sprintf("scan %d, group %d: shard 0 has %d ids, shard %d has %d (%s)", op.ID, g, len(gl[0]), s, len(gl[s]), firstDiff(gl[0], gl[s])))
					break
				}
			}
			for s, l := range gl {
				f := final[g][s]
				if len(l) > len(f) || !slices.Equal(l, f[:len(l)]) {
					r.violate(invAppendScanPrefix, fmt.Sprintf("scan %d, group %d shard %d (%d ids) is not a prefix of the final list (%d ids): %s", op.ID, g, s, len(l), len(f), firstDiff(l, f)))
				}
			}
		}
		seen := make([][]map[string]bool, len(lists))
		for g, gl := range lists {
			for _, l := range gl {
				m := make(map[string]bool, len(l))
				for _, id := range l {
					m[id] = true
				}
				seen[g] = append(seen[g], m)
			}
		}
		for _, ap := range acked {
			if !ap.Return.Before(op.Invoke) {
				break
			}
			for s, m := range seen[ap.Group] {
				if !m[ap.In[0]] {
					r.violate(invAppendScanRecent, fmt.Sprintf("scan %d (invoked %s) misses append %d to group %d on shard %d, acknowledged at %s", op.ID, op.Invoke.Format("15:04:05.000"), ap.ID, ap.Group, s, ap.Return.Format("15:04:05.000")))
					break
				}
			}
		}
	}
}

// orderConflict returns a description of two ids that a and b order differently, or "".
func orderConflict(a, b []string) string {
	pos := map[string]int{}
	for i, id := range a {
		pos[id] = i
	}
	last, lastID := -1, ""
	for _, id := range b {
		p, ok := pos[id]
		if !ok {
			continue
		}
		if p < last {
			return fmt.Sprintf("%s and %s in opposite orders", lastID, id)
		}
		last, lastID = p, id
	}
	return ""
}

func firstDiff(a, b []string) string {
	for i := 0; i < min(len(a), len(b)); i++ {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at %d: %s vs %s", i, a[i], b[i])
		}
	}
	return fmt.Sprintf("one is %d ids longer", max(len(a), len(b))-min(len(a), len(b)))
}
