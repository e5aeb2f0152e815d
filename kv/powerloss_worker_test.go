package kv

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The power-loss test runs the store in a child process (this test binary, re-executed with
// powerLossEnv set), so that it can be SIGKILLed at any instant and its disk then made to
// forget every write that was not synced. The child reports every call it starts and every
// result it gets as one JSON line on stdout (plEvent), written before the call starts and
// after it returns, so the parent knows which calls may have happened and which replies a
// client was given.

const (
	powerLossEnv     = "KVTX_KV_POWERLOSS_DIR" // the store's directory; set only in the child
	powerLossSeedEnv = "KVTX_KV_POWERLOSS_SEED"
	powerLossBaseEnv = "KVTX_KV_POWERLOSS_BASE" // first transaction id of this child
	powerLossRedoEnv = "KVTX_KV_POWERLOSS_REDO" // a file of decisions to send again (plHistory.writeRedo)
)

// plStoreOptions are the store options of the child and of the parent's checks: small
// memtables and value-log files, so that a short run rotates and flushes both.
func plStoreOptions(dir string) Options {
	return Options{
		Dir:              dir,
		LockWait:         100 * time.Millisecond,
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
		MemTableSize:     16 << 20,
		ValueLogFileSize: 4 << 20,
	}
}

// plOp is one write of a logged call; the value is plValue(id, key, size).
type plOp struct {
	Key  string `json:"k"`
	Del  bool   `json:"d,omitempty"`
	Size int    `json:"n,omitempty"`
}

// plCmp is one compare of a logged call; a value compare is by digest.
type plCmp struct {
	Kind    CompareKind `json:"t"`
	Key     string      `json:"k"`
	Digest  string      `json:"v,omitempty"`
	Version uint64      `json:"ver,omitempty"`
}

// plRead is a state of a key that a reply reported: a Get's value or a failed compare's.
type plRead struct {
	Key     string `json:"k"`
	Found   bool   `json:"f,omitempty"`
	Version uint64 `json:"ver,omitempty"`
	Digest  string `json:"v,omitempty"`
}

// plEvent is one line of the child's log: Begin before a call, its result after it.
type plEvent struct {
	Begin bool     `json:"b,omitempty"`
	ID    uint64   `json:"id"`              // transaction id (for get and sync: a call id)
	Call  string   `json:"c"`               // apply, prepare, commit, commitnosync, abort, sync, get
	TS    uint64   `json:"ts,omitempty"`    // Apply's ts, Prepare's start, Commit's commit ts, Get's ts
	Ops   []plOp   `json:"ops,omitempty"`   // apply, prepare
	Cmps  []plCmp  `json:"cmps,omitempty"`  // apply, prepare
	Keys  []string `json:"keys,omitempty"`  // get
	Err   string   `json:"err,omitempty"`   // result: "" (ok), cmp, conflict, aborted, locked, other
	Msg   string   `json:"msg,omitempty"`   // result: the error's text
	Res   uint64   `json:"res,omitempty"`   // result: commit ts (apply), minimum commit ts (prepare)
	Reads []plRead `json:"reads,omitempty"` // result: a get's values, a failed compare's actual
}

// plValue is the value that transaction id writes to key: a header naming both, then filler,
// size bytes in all (at least the header).
func plValue(id uint64, key string, size int) []byte {
	v := fmt.Appendf(nil, "%d/%s/", id, key)
	for len(v) < size {
		v = binary.BigEndian.AppendUint64(v, id*0x9E3779B97F4A7C15+uint64(len(v)))
	}
	return v[:max(size, len(fmt.Sprintf("%d/%s/", id, key)))]
}

// plDigest identifies a value in the log without carrying it.
func plDigest(v []byte) string {
	h := sha256.Sum256(v)
	return hex.EncodeToString(h[:8])
}

// plValueID returns the transaction id named by a value's header.
func plValueID(v []byte) (uint64, bool) {
	for i, c := range v {
		if c == '/' {
			id, err := strconv.ParseUint(string(v[:i]), 10, 64)
			return id, err == nil
		}
	}
	return 0, false
}

// powerLossChild runs random calls from several goroutines until it is killed.
func powerLossChild() int {
	dir := os.Getenv(powerLossEnv)
	seed, _ := strconv.ParseUint(os.Getenv(powerLossSeedEnv), 10, 64)
	base, _ := strconv.ParseUint(os.Getenv(powerLossBaseEnv), 10, 64)
	s, err := Open(plStoreOptions(dir))
	if err != nil {
		fmt.Fprintln(os.Stderr, "power-loss child: open:", err)
		return 2
	}
	w := &plWorker{s: s, out: bufio.NewWriter(os.Stdout)}
	w.nextID.Store(base)
	w.ts.Store(s.Stats().MaxTS)
	w.known = map[string]plRead{}
	// Transactions left prepared by the previous run are finished first: as the coordinator
	// decided, if a Commit or Abort had begun, else one way or the other.
	rng := rand.New(rand.NewPCG(seed, 0))
	redo := map[uint64]plEvent{}
	if data, err := os.ReadFile(os.Getenv(powerLossRedoEnv)); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var e plEvent
			if _, err := fmt.Sscanf(line, "%d %s %d", &e.ID, &e.Call, &e.TS); err == nil {
				redo[e.ID] = e
			}
		}
	}
	for _, p := range s.Prepared() {
		if e, ok := redo[p.TxnID]; ok {
			w.finishAs(e)
		} else {
			w.finish(rng, p.TxnID, p.StartTS+1)
		}
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() { w.loop(rand.New(rand.NewPCG(seed, uint64(g)+1))) })
	}
	wg.Wait() // never: the parent kills this process
	return 0
}

type plWorker struct {
	s      *Store
	nextID atomic.Uint64
	ts     atomic.Uint64 // the oracle: every timestamp used is above every one seen

	mu    sync.Mutex
	out   *bufio.Writer
	known map[string]plRead // the latest state of each key this process has seen
}

func (w *plWorker) emit(e plEvent) {
	line, err := json.Marshal(e)
	if err != nil {
		panic(err)
	}
	w.mu.Lock()
	w.out.Write(line)
	w.out.WriteByte('\n')
	w.out.Flush() // before the call starts, or before the next one: the parent must see it
	if !e.Begin {
		for _, r := range e.Reads {
			w.known[r.Key] = r
		}
	}
	w.mu.Unlock()
}

func (w *plWorker) nextTS() uint64 { return w.ts.Add(1) }

func (w *plWorker) observe(ts uint64) {
	for {
		cur := w.ts.Load()
		if ts <= cur || w.ts.CompareAndSwap(cur, ts) {
			return
		}
	}
}

const plKeys = 24

func plKey(rng *rand.Rand) string { return fmt.Sprintf("k%02d", rng.IntN(plKeys)) }

// plSize picks a value size: mostly small, some over a page, some at Badger's value-log
// threshold (1 MiB, kept in the value log) or just below it.
func plSize(rng *rand.Rand) int {
	switch r := rng.IntN(100); {
	case r < 70:
		return 8 + rng.IntN(200)
	case r < 90:
		return 1<<10 + rng.IntN(63<<10)
	case r < 95:
		return valueThreshold
	default:
		return valueThreshold - 1 - rng.IntN(256<<10)
	}
}

// plWrites returns 1-3 ops with at least one put, on distinct keys.
func plWrites(rng *rand.Rand) []plOp {
	n := 1 + rng.IntN(3)
	seen := map[string]bool{}
	var ops []plOp
	for len(ops) < n {
		k := plKey(rng)
		if seen[k] {
			continue
		}
		seen[k] = true
		if len(ops) > 0 && rng.IntN(5) == 0 {
			ops = append(ops, plOp{Key: k, Del: true})
		} else {
			ops = append(ops, plOp{Key: k, Size: plSize(rng)})
		}
	}
	return ops
}

// plCompares returns up to n compares, most of them built from what this process has seen,
// so that some hold and some fail.
func (w *plWorker) plCompares(rng *rand.Rand, n int, values map[string][]byte) []plCmp {
	var cmps []plCmp
	for range n {
		k := plKey(rng)
		w.mu.Lock()
		r, ok := w.known[k]
		w.mu.Unlock()
		switch rng.IntN(6) {
		case 0:
			if ok && r.Found && values[r.Digest] != nil {
				cmps = append(cmps, plCmp{Kind: CmpValueEqual, Key: k, Digest: r.Digest})
			} else {
				cmps = append(cmps, plCmp{Kind: CmpMissing, Key: k})
			}
		case 1:
			cmps = append(cmps, plCmp{Kind: CmpVersionEqual, Key: k, Version: r.Version})
		case 2:
			cmps = append(cmps, plCmp{Kind: CmpVersionGreater, Key: k, Version: r.Version})
		case 3:
			cmps = append(cmps, plCmp{Kind: CmpVersionLess, Key: k, Version: r.Version + 1})
		case 4:
			cmps = append(cmps, plCmp{Kind: CmpExists, Key: k})
		default:
			cmps = append(cmps, plCmp{Kind: CmpMissing, Key: k})
		}
	}
	return cmps
}

// compares turns logged compares into the store's, with the values their digests name.
func compares(cmps []plCmp, values map[string][]byte) []Compare {
	out := make([]Compare, len(cmps))
	for i, c := range cmps {
		out[i] = Compare{Kind: c.Kind, Key: []byte(c.Key), Version: c.Version}
		if c.Kind == CmpValueEqual {
			out[i].Value = values[c.Digest]
		}
	}
	return out
}

func storeOps(id uint64, ops []plOp) []Op {
	out := make([]Op, len(ops))
	for i, op := range ops {
		if op.Del {
			out[i] = Op{Kind: OpDelete, Key: []byte(op.Key)}
		} else {
			out[i] = Op{Kind: OpPut, Key: []byte(op.Key), Value: plValue(id, op.Key, op.Size)}
		}
	}
	return out
}

// plResult fills e's result fields from err.
func plResult(e *plEvent, err error) {
	var cf *CompareFailedError
	switch {
	case err == nil:
	case errors.As(err, &cf):
		e.Err = "cmp"
		r := plRead{Key: string(cf.Actual.Key), Found: cf.Actual.Found, Version: cf.Actual.Version}
		if r.Found {
			r.Digest = plDigest(cf.Actual.Value)
		}
		e.Reads = []plRead{r}
	case errors.Is(err, ErrConflict):
		e.Err = "conflict"
	case errors.Is(err, ErrAborted):
		e.Err = "aborted"
	case errors.Is(err, ErrLocked):
		e.Err = "locked"
	default:
		e.Err = "other"
	}
	if err != nil {
		e.Msg = err.Error()
	}
}

func (w *plWorker) loop(rng *rand.Rand) {
	ctx := context.Background()
	var mine []uint64 // this goroutine's prepared transactions
	values := map[string][]byte{}
	remember := func(v []byte) {
		if len(values) > 64 {
			clear(values)
		}
		values[plDigest(v)] = v
	}
	for {
		id := w.nextID.Add(1)
		switch r := rng.IntN(100); {
		case r < 35, r < 45: // an Apply; from 35, compare-only
			e := plEvent{ID: id, Call: "apply", TS: w.nextTS(), Cmps: w.plCompares(rng, rng.IntN(3), values)}
			if r < 35 {
				e.Ops = plWrites(rng)
			} else if len(e.Cmps) == 0 {
				e.Cmps = w.plCompares(rng, 1, values)
			}
			w.begin(e)
			cts, err := w.s.Apply(ctx, id, e.TS, compares(e.Cmps, values), storeOps(id, e.Ops))
			if err == nil {
				w.observe(cts)
				e.Res = cts
				for _, op := range e.Ops {
					rd := plRead{Key: op.Key, Version: cts}
					if !op.Del {
						v := plValue(id, op.Key, op.Size)
						rd.Found, rd.Digest = true, plDigest(v)
						remember(v)
					}
					e.Reads = append(e.Reads, rd)
				}
			}
			plResult(&e, err)
			w.end(e)
		case r < 65:
			e := plEvent{ID: id, Call: "prepare", TS: w.nextTS(), Ops: plWrites(rng), Cmps: w.plCompares(rng, rng.IntN(2), values)}
			w.begin(e)
			min, err := w.s.Prepare(ctx, PrepareRecord{TxnID: id, StartTS: e.TS, Ops: storeOps(id, e.Ops)}, compares(e.Cmps, values))
			if err == nil {
				e.Res = min
				mine = append(mine, id)
			}
			plResult(&e, err)
			w.end(e)
		case r < 85:
			if len(mine) == 0 {
				continue
			}
			i := rng.IntN(len(mine))
			w.finish(rng, mine[i], 0)
			mine = append(mine[:i], mine[i+1:]...)
		case r < 90:
			e := plEvent{ID: id, Call: "sync"}
			w.begin(e)
			plResult(&e, w.s.Sync(ctx))
			w.end(e)
		default:
			e := plEvent{ID: id, Call: "get", TS: w.nextTS()}
			keys := make([][]byte, 1+rng.IntN(3))
			for i := range keys {
				keys[i] = []byte(plKey(rng))
				e.Keys = append(e.Keys, string(keys[i]))
			}
			w.begin(e)
			vals, err := w.s.Get(ctx, keys, e.TS)
			for _, v := range vals {
				rd := plRead{Key: string(v.Key), Found: v.Found, Version: v.Version}
				if v.Found {
					rd.Digest = plDigest(v.Value)
					remember(v.Value)
				}
				e.Reads = append(e.Reads, rd)
			}
			plResult(&e, err)
			w.end(e)
		}
	}
}

// finish commits (with or without a sync) or aborts prepared transaction id; min is its
// least commit timestamp if the caller knows it (0: take a fresh one, retrying above the
// store's minimum if it refuses).
func (w *plWorker) finish(rng *rand.Rand, id, min uint64) {
	ctx := context.Background()
	calls := []string{"commit", "commitnosync", "abort"}
	e := plEvent{ID: id, Call: calls[rng.IntN(len(calls))]}
	if e.Call != "abort" {
		e.TS = max(w.nextTS(), min)
		w.observe(e.TS)
	}
	w.begin(e)
	var err error
	switch e.Call {
	case "commit":
		err = w.s.Commit(ctx, id, e.TS)
	case "commitnosync":
		err = w.s.CommitNoSync(ctx, id, e.TS)
	default:
		err = w.s.Abort(ctx, id)
	}
	plResult(&e, err)
	w.end(e)
}

// finishAs sends a decision again: e's call, at e's commit timestamp.
func (w *plWorker) finishAs(e plEvent) {
	ctx := context.Background()
	w.observe(e.TS)
	w.begin(e)
	var err error
	switch e.Call {
	case "commit":
		err = w.s.Commit(ctx, e.ID, e.TS)
	case "commitnosync":
		err = w.s.CommitNoSync(ctx, e.ID, e.TS)
	default:
		err = w.s.Abort(ctx, e.ID)
	}
	plResult(&e, err)
	w.end(e)
}

func (w *plWorker) begin(e plEvent) {
	e.Begin = true
	w.emit(e)
}

func (w *plWorker) end(e plEvent) { w.emit(e) }
