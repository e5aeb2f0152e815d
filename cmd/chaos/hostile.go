package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kvtx/kvtx/cmd/internal/cluster"
	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/wire"
)

// The hostile client: valid requests, sent with the cluster's valid client certificate, that
// are chosen to cost the cluster most or to reach past what a client may do. Each request has
// the answers it must get (a refusal with its code, or for the valid but heavy ones success);
// an answer that a fault explains (unavailable, timeout, shutting down, a lost connection) is
// counted apart, and any other answer, a success where a refusal was due above all, breaks the
// invariant invHostile. Its keys are under hostilePrefix, which no workload reads, so the
// workloads' checks see only the load.

// hostileTS is a timestamp near 2^64 that no oracle of a live cluster has reached.
const hostileTS = 1<<64 - 2

// hostilePrefix holds every key the hostile client writes or reads.
const hostilePrefix = "hostile/"

// invHostile is the hostile client's invariant.
const invHostile = "hostile: every hostile request got its expected refusal (or, if valid, was served)"

// hostileNames are the hostile requests, in report order.
func hostileNames() []string {
	return []string{"dup-key-get", "over-max-keys-get", "max-keys-get", "future-read", "odd-version-txn",
		"over-max-txn", "txn-flood", "node-request", "master-node-request"}
}

// Hostile sends valid but hostile requests with the client certificate and checks the answers.
type Hostile struct {
	c      *cluster.Cluster
	limits txn.Limits
	mu     struct {
		sync.Mutex
		bigWritten bool           // hostile/big holds a value of max_value_bytes
		sent       map[string]int // by request name
		expected   map[string]int // answered as due
		transient  map[string]int // answered with an error a fault explains
		unexpected []string       // the first unexpected answers, described
		transErr   string         // the first answer counted in transient, described
		nUnexp     int
	}
}

// NewHostile returns a hostile client of c.
func NewHostile(c *cluster.Cluster) *Hostile {
	h := &Hostile{c: c, limits: c.Config().WithDefaults().Limits}
	h.mu.sent, h.mu.expected, h.mu.transient = map[string]int{}, map[string]int{}, map[string]int{}
	return h
}

// transientErr reports whether err is what a fault, not the request, explains.
func transientErr(err error) bool {
	var we *wire.Error
	if !errors.As(err, &we) {
		return true // dial failures, lost connections, deadlines: the network's
	}
	switch we.Code {
	case wire.CodeUnavailable, wire.CodeTimeout, wire.CodeShuttingDown, wire.CodeUnknownOutcome:
		return true
	}
	return false
}

// record counts one answer to the request name: err must have one of the codes want
// (wire.CodeOK: success), and contain says what its message must hold ("" for anything).
func (h *Hostile) record(name string, err error, contain string, want ...wire.Code) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.mu.sent[name]++
	code := wire.CodeOf(err)
	switch {
	case slices.Contains(want, code) && (err == nil || strings.Contains(err.Error(), contain)):
		h.mu.expected[name]++
	case err != nil && code != wire.CodeOK && transientErr(err) && !slices.Contains(want, code):
		h.mu.transient[name]++
		if h.mu.transErr == "" {
			h.mu.transErr = fmt.Sprintf("%s: %v", name, err)
		}
	default:
		h.mu.nUnexp++
		if len(h.mu.unexpected) < 20 {
			h.mu.unexpected = append(h.mu.unexpected, fmt.Sprintf("%s: got %v, want %v %q", name, err, want, contain))
		}
	}
}

// dial connects to the process named to with the client certificate.
func (h *Hostile) dial(ctx context.Context, to string) (*wire.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	opts := h.c.DialOptions(to)
	opts.ClusterID = h.c.Config().ShardMap().ID()
	return wire.Dial(dctx, h.c.Addr(to), opts)
}

// call sends req to the process named to on a connection of its own and returns the answer.
func (h *Hostile) call(ctx context.Context, to string, req, resp wire.Message) error {
	conn, err := h.dial(ctx, to)
	if err != nil {
		return err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, OpTimeout)
	defer cancel()
	return conn.Call(cctx, req, resp)
}

func hkey(parts ...any) []byte { return []byte(hostilePrefix + fmt.Sprint(parts...)) }

// Run sends hostile requests until ctx ends: readers, transactions, a flood of large valid
// transactions from several clients at once, and node-level requests sent straight to nodes.
func (h *Hostile) Run(ctx context.Context, seed uint64) {
	var wg sync.WaitGroup
	loop := func(w int, f func(rng *rand.Rand)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for ctx.Err() == nil {
				f(rng)
				time.Sleep(20 * time.Millisecond) // two cores: leave the workloads room
			}
		}()
	}
	loop(0, func(rng *rand.Rand) { h.reads(ctx, rng) })
	loop(1, func(rng *rand.Rand) { h.txns(ctx, rng) })
	for w := 2; w < 5; w++ {
		loop(w, func(rng *rand.Rand) { h.flood(ctx, w, rng) })
	}
	loop(5, func(rng *rand.Rand) { h.nodeRequests(ctx, rng) })
	wg.Wait()
}

// reads sends the oversized and far-future reads through the master.
func (h *Hostile) reads(ctx context.Context, rng *rand.Rand) {
	n := h.limits.MaxTxnOps
	switch rng.IntN(4) {
	case 0:
		// One key of max_value_bytes listed max_txn_ops times: the reply would be a gigabyte.
		if !h.writeBig(ctx) {
			return
		}
		keys := make([][]byte, n)
		for i := range keys {
			keys[i] = hkey("big")
		}
		err := h.call(ctx, txn.MasterName, &wire.GetRequest{Keys: keys}, &wire.GetReply{})
		h.record("dup-key-get", err, "reply too large", wire.CodeTooLarge)
	case 1:
		keys := make([][]byte, n+1)
		for i := range keys {
			keys[i] = hkey("k", i)
		}
		err := h.call(ctx, txn.MasterName, &wire.GetRequest{Keys: keys}, &wire.GetReply{})
		h.record("over-max-keys-get", err, "max_txn_ops", wire.CodeTooLarge)
		// The most keys a Get may name is a valid, if heavy, read.
		err = h.call(ctx, txn.MasterName, &wire.GetRequest{Keys: keys[:n]}, &wire.GetReply{})
		h.record("max-keys-get", err, "", wire.CodeOK)
	default:
		var req wire.Message = &wire.GetRequest{Keys: [][]byte{hkey("k", rng.IntN(n))}, ReadTS: hostileTS - uint64(rng.IntN(2))}
		var resp wire.Message = &wire.GetReply{}
		if rng.IntN(2) == 0 {
			req, resp = &wire.ScanRequest{Start: []byte(hostilePrefix), ReadTS: hostileTS}, &wire.ScanReply{}
		}
		err := h.call(ctx, txn.MasterName, req, resp)
		h.record("future-read", err, "in the future", wire.CodeBadRequest)
	}
}

// writeBig makes hostile/big hold a value of max_value_bytes, once.
func (h *Hostile) writeBig(ctx context.Context) bool {
	h.mu.Lock()
	done := h.mu.bigWritten
	h.mu.Unlock()
	if done {
		return true
	}
	big := bytes.Repeat([]byte{'h'}, h.limits.MaxValueBytes)
	err := h.call(ctx, txn.MasterName, &wire.TxnRequest{Ops: []wire.Op{{Kind: wire.OpPut, Key: hkey("big"), Value: big}}}, &wire.TxnReply{})
	h.mu.Lock()
	defer h.mu.Unlock()
	h.mu.bigWritten = h.mu.bigWritten || err == nil
	return h.mu.bigWritten
}

// txns sends transactions with compares on versions near 2^64 (they cannot hold) and ones
// over the operation limit.
func (h *Hostile) txns(ctx context.Context, rng *rand.Rand) {
	if rng.IntN(3) == 0 {
		ops := make([]wire.Op, h.limits.MaxTxnOps+1)
		for i := range ops {
			ops[i] = wire.Op{Kind: wire.OpPut, Key: hkey("over/", i), Value: []byte("x")}
		}
		err := h.call(ctx, txn.MasterName, &wire.TxnRequest{Ops: ops}, &wire.TxnReply{})
		h.record("over-max-txn", err, "max_txn_ops", wire.CodeTooLarge)
		return
	}
	// One shard or several (hostile/odd/0..3 spread over the shards): one-phase and 2PC.
	cmp := wire.Compare{Kind: wire.CmpVersionEqual, Key: hkey("odd/", rng.IntN(4)), Version: hostileTS}
	if rng.IntN(2) == 0 {
		cmp = wire.Compare{Kind: wire.CmpVersionGreater, Key: cmp.Key, Version: 1<<64 - 1}
	}
	var ops []wire.Op
	for i := range 1 + rng.IntN(4) {
		ops = append(ops, wire.Op{Kind: wire.OpPut, Key: hkey("odd/", i), Value: []byte("never")})
	}
	err := h.call(ctx, txn.MasterName, &wire.TxnRequest{Compares: []wire.Compare{cmp}, Ops: ops}, &wire.TxnReply{})
	h.record("odd-version-txn", err, "", wire.CodeCompareFailed)
}

// flood sends large valid transactions over every shard, one after the other, from worker w's
// own keys: any outcome of a valid transaction is fine except a refusal of the request.
func (h *Hostile) flood(ctx context.Context, w int, rng *rand.Rand) {
	ops := make([]wire.Op, 128)
	val := bytes.Repeat([]byte{byte('a' + rng.IntN(26))}, 2<<10)
	for i := range ops {
		ops[i] = wire.Op{Kind: wire.OpPut, Key: hkey("flood/", w, "/", i), Value: val}
	}
	err := h.call(ctx, txn.MasterName, &wire.TxnRequest{Ops: ops}, &wire.TxnReply{})
	h.record("txn-flood", err, "", wire.CodeOK, wire.CodeConflict, wire.CodeAborted, wire.CodeLocked)
}

// nodeRequests sends the requests only the master may send straight to a node, and those only
// nodes may send to the master, with the client certificate: each must be refused with
// permission_denied (nothing done), whatever its timestamps.
func (h *Hostile) nodeRequests(ctx context.Context, rng *rand.Rand) {
	names := h.c.Config().ShardMap().Names()
	node := names[rng.IntN(len(names))]
	if rng.IntN(4) == 0 {
		reqs := []wire.Message{&wire.OracleBoundRequest{From: node}, &wire.OutcomeRequest{TxnID: rng.Uint64N(1 << 20), From: node}}
		err := h.call(ctx, txn.MasterName, reqs[rng.IntN(len(reqs))], nil)
		h.record("master-node-request", err, "may not send", wire.CodePermissionDenied)
		return
	}
	id := hostileTS - rng.Uint64N(1<<20)
	ops := []wire.Op{{Kind: wire.OpPut, Key: hkey("node/", rng.IntN(8)), Value: []byte("hijacked")}}
	commit := wire.CommitRequest{TxnID: id, CommitTS: hostileTS}
	reqs := []wire.Message{
		&wire.PrepareRequest{TxnID: id, StartTS: id, Ops: ops, Participants: names},
		&wire.ApplyRequest{TxnID: id, TS: hostileTS, Ops: ops},
		&wire.AbortRequest{TxnID: rng.Uint64N(1 << 30)},
		&commit,
		&wire.CommitBatchRequest{Commits: []wire.CommitRequest{commit}},
		&wire.SyncRequest{Commits: []wire.CommitRequest{commit}},
		&wire.GetRequest{Keys: [][]byte{ops[0].Key}, ReadTS: hostileTS},
		&wire.SafePointRequest{SafePoint: hostileTS},
	}
	err := h.call(ctx, node, reqs[rng.IntN(len(reqs))], nil)
	h.record("node-request", err, "may not send", wire.CodePermissionDenied)
}

// check records invHostile and its violations in rep.
func (h *Hostile) check(rep *Report) {
	h.mu.Lock()
	defer h.mu.Unlock()
	rep.invariant(invHostile)
	for _, u := range h.mu.unexpected {
		rep.violate(invHostile, u)
	}
	if more := h.mu.nUnexp - len(h.mu.unexpected); more > 0 {
		rep.violate(invHostile, fmt.Sprintf("and %d more unexpected answers", more))
	}
}

// Summary lists, per hostile request, how many were sent, answered as due, and answered with
// an error a fault explains: "dup-key-get=12/12" or "node-request=40/38+2".
func (h *Hostile) Summary() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var parts []string
	for _, n := range hostileNames() {
		if h.mu.sent[n] == 0 {
			continue
		}
		s := fmt.Sprintf("%s=%d/%d", n, h.mu.sent[n], h.mu.expected[n])
		if t := h.mu.transient[n]; t > 0 {
			s += fmt.Sprintf("+%d", t)
		}
		parts = append(parts, s)
	}
	if h.mu.transErr != "" {
		parts = append(parts, "(first failed by a fault: "+h.mu.transErr+")")
	}
	return strings.Join(parts, " ")
}
