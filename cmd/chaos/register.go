package chaos

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/client"
)

// Register reads and writes a few groups of two keys (on two shards when there are two or more),
// one key or both at once, and checks the history for linearizability with porcupine, one
// partition per group. A write whose outcome is unknown may have happened at any time after
// it was invoked: its return time is the end of time.
type Register struct {
	ks     keyspace
	groups [][2]string
	// Timeout bounds porcupine's search (default 60s); past it the verdict is "unknown".
	Timeout time.Duration
	// Dir, if set, receives the HTML visualization when the history is not linearizable.
	Dir string
}

// NewRegister makes groups of two keys.
func NewRegister(sm *txn.ShardMap, groups int) *Register {
	r := &Register{ks: keyspace{sm}, Timeout: 60 * time.Second}
	used := map[string]bool{}
	for g := 0; g < groups; g++ {
		a := r.ks.onShard(fmt.Sprintf("reg/g%d/k", g), 0, used)
		b := r.ks.onShard(fmt.Sprintf("reg/g%d/k", g), 1%sm.Len(), used)
		r.groups = append(r.groups, [2]string{a, b})
	}
	return r
}

// Name returns "register".
func (r *Register) Name() string { return "register" }

// Setup writes nothing: a missing key reads as "".
func (r *Register) Setup(ctx context.Context, cl *client.Client) error { return nil }

// Step reads or writes one key or both keys of a random group.
func (r *Register) Step(ctx context.Context, cl *client.Client, rng *rand.Rand, id int, rec *Recorder) error {
	g := rng.IntN(len(r.groups))
	var keys []string
	switch rng.IntN(3) {
	case 0:
		keys = []string{r.groups[g][0]}
	case 1:
		keys = []string{r.groups[g][1]}
	default:
		keys = r.groups[g][:]
	}
	cctx, cancel := opCtx(ctx)
	defer cancel()
	if rng.IntN(2) == 0 {
		op := rec.Invoke(&Op{Workload: "register", Client: id, Kind: "read", Group: g, Keys: keys, Shards: r.ks.shards(keys)})
		kvs, _, err := cl.Snapshot(cctx, bkeys(keys)...)
		if err == nil {
			op.Out, op.Found = values(kvs)
		}
		rec.Complete(op, err)
		return err
	}
	op := &Op{Workload: "register", Client: id, Kind: "write", Write: true, Group: g, Keys: keys, Shards: r.ks.shards(keys)}
	rec.Invoke(op)
	op.Markers = r.ks.markers(op.ID, op.Shards)
	var ops []client.Op
	for range keys {
		op.In = append(op.In, "v"+strconv.FormatInt(op.ID, 10))
	}
	for i, k := range keys {
		ops = append(ops, client.Put([]byte(k), []byte(op.In[i])))
	}
	ops = append(ops, markerPuts(op)...)
	_, err := cl.Txn(cctx, nil, ops...)
	rec.Complete(op, err)
	return err
}

// regInput is a porcupine input: which of the group's two keys, and the values written.
type regInput struct {
	write bool
	use   [2]bool
	vals  [2]string
	id    int64
}

// regModel is the sequential specification of a group: two registers, read and written
// together or alone.
var regModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byGroup := map[int][]porcupine.Operation{}
		for _, op := range history {
			g := op.Metadata.(int)
			byGroup[g] = append(byGroup[g], op)
		}
		groups := make([]int, 0, len(byGroup))
		for g := range byGroup {
			groups = append(groups, g)
		}
		sort.Ints(groups)
		var out [][]porcupine.Operation
		for _, g := range groups {
			out = append(out, byGroup[g])
		}
		return out
	},
	Init: func() interface{} { return [2]string{} },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		st := state.([2]string)
		in := input.(regInput)
		if in.write {
			for i := range 2 {
				if in.use[i] {
					st[i] = in.vals[i]
				}
			}
			return true, st
		}
		out := output.([2]string)
		for i := range 2 {
			if in.use[i] && out[i] != st[i] {
				return false, state
			}
		}
		return true, state
	},
	DescribeOperation: func(input, output interface{}) string {
		in := input.(regInput)
		name := func(i int) string { return [2]string{"a", "b"}[i] }
		s := ""
		for i := range 2 {
			if !in.use[i] {
				continue
			}
			if s != "" {
				s += " "
			}
			if in.write {
				s += fmt.Sprintf("put(%s,%q)", name(i), in.vals[i])
			} else {
				s += fmt.Sprintf("get(%s)=%q", name(i), output.([2]string)[i])
			}
		}
		if in.id < 0 {
			return "final " + s // the read after healing
		}
		return fmt.Sprintf("#%d %s", in.id, s)
	},
	DescribeState: func(state interface{}) string {
		st := state.([2]string)
		return fmt.Sprintf("a=%q b=%q", st[0], st[1])
	},
	DescribeOperationMetadata: func(info interface{}) string { return fmt.Sprintf("group %d", info) },
}

// Invariant name of the register workload.
const invLinearizable = "register: linearizable (porcupine)"

// Check reads every group once more through cl (the cluster is healed), so that a write lost
// after its acknowledgment (by a power cut, say) shows even when no read followed it, and runs
// porcupine on the history with these final reads (none when cl is nil). Failed operations are
// left out (nothing happened); unknown writes return at the end of time.
func (r *Register) Check(ctx context.Context, cl *client.Client, ops []Op, rep *Report) error {
	if cl != nil {
		finals, err := r.finalReads(ctx, cl, ops)
		if err != nil {
			return err
		}
		ops = slices.Concat(ops, finals)
	}
	r.checkHistory(ops, rep)
	return nil
}

// finalReads reads both keys of every group in one snapshot each, as operations of a client
// after every workload client, with negative ids.
func (r *Register) finalReads(ctx context.Context, cl *client.Client, ops []Op) ([]Op, error) {
	id := 0
	for _, op := range ops {
		if op.Workload == "register" {
			id = max(id, op.Client+1)
		}
	}
	var out []Op
	for g, keys := range r.groups {
		op := Op{ID: -1 - int64(g), Workload: "register", Client: id, Kind: "read", Group: g, Keys: keys[:], Shards: r.ks.shards(keys[:]), Invoke: time.Now()}
		cctx, cancel := opCtx(ctx)
		kvs, _, err := cl.Snapshot(cctx, bkeys(op.Keys)...)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("chaos: final register read of group %d: %w", g, err)
		}
		op.Out, op.Found = values(kvs)
		op.Return, op.Status = time.Now(), OK
		out = append(out, op)
	}
	return out, nil
}

// checkHistory runs porcupine on the register operations of ops.
func (r *Register) checkHistory(ops []Op, rep *Report) {
	rep.invariant(invLinearizable)
	var hist []porcupine.Operation
	var t0 time.Time
	for _, op := range ops {
		if op.Workload == "register" && (t0.IsZero() || op.Invoke.Before(t0)) {
			t0 = op.Invoke
		}
	}
	for _, op := range ops {
		if op.Workload != "register" || op.Status == Failed {
			continue
		}
		in := regInput{write: op.Write, id: op.ID}
		for i, k := range op.Keys {
			slot := 0
			if k == r.groups[op.Group][1] {
				slot = 1
			}
			in.use[slot] = true
			if op.Write {
				in.vals[slot] = op.In[i]
			}
		}
		var out [2]string
		ret := int64(math.MaxInt64)
		switch op.Status {
		case OK:
			ret = op.Return.Sub(t0).Nanoseconds()
			if !op.Write {
				for i, k := range op.Keys {
					slot := 0
					if k == r.groups[op.Group][1] {
						slot = 1
					}
					out[slot] = op.Out[i]
				}
			}
		case Unknown, Invoked:
			if !op.Write {
				continue
			}
		}
		hist = append(hist, porcupine.Operation{ClientId: op.Client, Input: in, Output: out, Call: op.Invoke.Sub(t0).Nanoseconds(), Return: ret, Metadata: op.Group})
	}
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(regModel, hist, r.Timeout)
	rep.Porcupine = fmt.Sprintf("%s (%d operations, %s)", res, len(hist), time.Since(start).Round(time.Millisecond))
	switch res {
	case porcupine.Illegal:
		detail := "history is not linearizable"
		if r.Dir != "" {
			path := filepath.Join(r.Dir, "register-porcupine.html")
			if err := os.MkdirAll(r.Dir, 0o755); err == nil {
				if err := porcupine.VisualizePath(regModel, info, path); err == nil {
					detail += "; visualization: " + path
					rep.Files = append(rep.Files, path)
				}
			}
		}
		rep.violate(invLinearizable, detail)
	case porcupine.Unknown:
		rep.Notes = append(rep.Notes, "porcupine timed out: linearizability not decided")
	}
}
