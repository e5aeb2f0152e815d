package txn

import (
	"context"
	"errors"
	"fmt"

	"github.com/kvtx/kvtx/wire"
)

// Get reads keys as one atomic snapshot at a fresh read timestamp: each shard reads at the same
// timestamp and waits for older prepare locks, so the result never holds half a transaction.
func (c *Coordinator) Get(ctx context.Context, req *wire.GetRequest) (*wire.GetReply, error) {
	if err := checkRead(c.cfg.Limits, req.Keys); err != nil {
		return nil, err
	}
	ts, err := c.readTS(ctx, req.ReadTS)
	if err != nil {
		return nil, err
	}
	// Group the keys by shard, remembering each key's place in the request.
	type shardKeys struct {
		keys [][]byte
		pos  []int
	}
	groups := make([]shardKeys, c.cfg.Shards.Len())
	var first map[string]int // a key's first place in the request, when there are several
	if len(req.Keys) > 1 {
		first = make(map[string]int, len(req.Keys))
	}
	var dups [][2]int // a repeated key's place and its first place: each key is read once
	for i, k := range req.Keys {
		if j, ok := first[string(k)]; ok {
			dups = append(dups, [2]int{i, j})
			continue
		} else if first != nil {
			first[string(k)] = i
		}
		s := c.cfg.Shards.Shard(k)
		groups[s].keys = append(groups[s].keys, k)
		groups[s].pos = append(groups[s].pos, i)
	}
	out := make([]wire.KeyValue, len(req.Keys))
	names := c.cfg.Shards.Names()
	errs := make([]error, len(groups))
	var busy []int // the shards holding any of the keys
	for s := range groups {
		if len(groups[s].keys) > 0 {
			busy = append(busy, s)
		}
	}
	fanOut(c.cfg.Runtime, len(busy), func(i int) {
		s := busy[i]
		var rep wire.GetReply
		err := c.call(ctx, names[s], &wire.GetRequest{Keys: groups[s].keys, ReadTS: ts, Committed: c.committedOn(groups[s].keys)}, &rep)
		if err == nil && len(rep.Values) != len(groups[s].keys) {
			err = wire.Errorf(wire.CodeInternal, "%s returned %d values for %d keys", names[s], len(rep.Values), len(groups[s].keys))
		}
		if err != nil {
			errs[s] = readError(names[s], err)
			return
		}
		for j, v := range rep.Values {
			out[groups[s].pos[j]] = v
		}
	})
	if err := firstError(errs); err != nil {
		return nil, err
	}
	for _, d := range dups {
		out[d[0]] = out[d[1]]
	}
	if err := checkReplySize(c.cfg.Limits, out); err != nil {
		return nil, err
	}
	return &wire.GetReply{Values: out, ReadTS: ts}, nil
}

// checkReplySize refuses a read whose reply would not fit in a frame (a key listed many times
// shares its value in memory, but not on the wire), before it is encoded.
func checkReplySize(l Limits, vals []wire.KeyValue) error {
	total := 0
	for _, v := range vals {
		total += len(v.Key) + len(v.Value) + 32 // the fields' names and lengths
	}
	if max := l.MaxFrameBytes - 64<<10; total > max {
		return wire.Errorf(wire.CodeTooLarge, "reply too large: %d values of %d bytes exceed the frame limit of %d bytes (max_frame_bytes); read fewer keys at a time", len(vals), total, l.MaxFrameBytes)
	}
	return nil
}

// readError turns a failed read on a node into the error the client gets: reads change
// nothing, so any failure to reach a node is "unavailable" (safe to retry).
func readError(node string, err error) error {
	var werr *wire.Error
	if errors.As(err, &werr) {
		return werr
	}
	return wire.Errorf(wire.CodeUnavailable, "node %s unavailable: %v", node, err)
}

func firstError(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// shardTxn is the part of a transaction that one shard executes.
type shardTxn struct {
	node   string
	cmps   []wire.Compare
	cmpIdx []int // index of each compare in the client's request
	ops    []wire.Op
}

// split groups a transaction's compares and operations by shard, in shard order.
func (c *Coordinator) split(req *wire.TxnRequest) []shardTxn {
	names := c.cfg.Shards.Names()
	parts := make([]*shardTxn, len(names))
	get := func(k []byte) *shardTxn {
		s := c.cfg.Shards.Shard(k)
		if parts[s] == nil {
			parts[s] = &shardTxn{node: names[s]}
		}
		return parts[s]
	}
	for i, cmp := range req.Compares {
		p := get(cmp.Key)
		p.cmps = append(p.cmps, cmp)
		p.cmpIdx = append(p.cmpIdx, i)
	}
	for _, op := range req.Ops {
		p := get(op.Key)
		p.ops = append(p.ops, op)
	}
	var out []shardTxn
	for _, p := range parts {
		if p != nil {
			out = append(out, *p)
		}
	}
	return out
}

// Txn executes a write transaction atomically across shards. The error, if any, is a
// *wire.Error whose code tells the client the outcome: CodeCompareFailed, CodeConflict,
// CodeUnavailable and CodeAborted mean nothing was written (safe to retry);
// CodeUnknownOutcome means it may have committed; other codes reject the request itself.
func (c *Coordinator) Txn(ctx context.Context, req *wire.TxnRequest) (*wire.TxnReply, error) {
	if err := checkTxn(c.cfg.Limits, req.Compares, req.Ops); err != nil {
		return nil, err
	}
	parts := c.split(req)
	if len(parts) == 1 {
		return c.onePhase(ctx, parts[0])
	}
	return c.twoPhase(ctx, parts)
}

// onePhase has the one node of a single-shard transaction apply it in one durable step: no
// prepare, no decision record.
func (c *Coordinator) onePhase(ctx context.Context, p shardTxn) (*wire.TxnReply, error) {
	start := c.cfg.Runtime.Now()
	ts, err := c.oracle.Next(ctx)
	if err != nil {
		return nil, wire.Errorf(wire.CodeInternal, "allocate timestamp: %v", err)
	}
	var rep wire.ApplyReply
	err = c.call(ctx, p.node, &wire.ApplyRequest{TxnID: ts, TS: ts, Compares: p.cmps, Ops: p.ops, Committed: c.committedOn(partKeys(p))}, &rep)
	if err != nil {
		werr := c.voteError(ts, p, err, true)
		c.cfg.Metrics.TxnDone("1pc", outcomeOf(werr), c.since(start))
		return nil, werr
	}
	if err := c.oracle.Observe(ctx, rep.CommitTS); err != nil {
		// The write is durable on its node; only the oracle's mark failed. Report unknown
		// rather than committed: a later read might not be ordered after it.
		c.cfg.Metrics.TxnDone("1pc", "unknown", c.since(start))
		return nil, &wire.Error{Code: wire.CodeUnknownOutcome, TxnID: ts, Message: fmt.Sprintf("transaction %d applied on %s, but the oracle failed: %v", ts, p.node, err)}
	}
	c.cfg.Metrics.TxnDone("1pc", "committed", c.since(start))
	return &wire.TxnReply{TxnID: ts, CommitTS: rep.CommitTS, Path: "1pc"}, nil
}

func outcomeOf(err error) string {
	if wire.CodeOf(err) == wire.CodeUnknownOutcome {
		return "unknown"
	}
	return "aborted"
}

// voteError turns a participant's refusal or a transport failure into the client's error.
// For a one-phase apply a lost reply means the outcome is unknown; for a prepare it only means
// the vote is missing, and the master aborts.
func (c *Coordinator) voteError(txnID uint64, p shardTxn, err error, onePhase bool) *wire.Error {
	var werr *wire.Error
	if errors.As(err, &werr) {
		out := *werr
		out.TxnID = txnID
		switch werr.Code {
		case wire.CodeCompareFailed:
			if werr.Index >= 0 && werr.Index < len(p.cmpIdx) {
				out.Index = p.cmpIdx[werr.Index]
			}
			out.Message = fmt.Sprintf("compare %d failed: %s", out.Index, werr.Message)
		case wire.CodeLocked:
			out.Code = wire.CodeConflict
		case wire.CodeShuttingDown, wire.CodeVersionMismatch:
			out.Code = wire.CodeUnavailable
			out.Message = fmt.Sprintf("node %s unavailable: %s", p.node, werr.Message)
		case wire.CodeInternal, wire.CodeTimeout:
			if onePhase {
				out.Code = wire.CodeUnknownOutcome
				out.Message = fmt.Sprintf("node %s failed while applying: %s", p.node, werr.Message)
			} else {
				out.Code = wire.CodeAborted
				out.Message = fmt.Sprintf("node %s could not prepare: %s", p.node, werr.Message)
			}
		}
		return &out
	}
	if errors.Is(err, ErrNotDelivered) {
		return &wire.Error{Code: wire.CodeUnavailable, TxnID: txnID, Message: fmt.Sprintf("node %s unavailable: %v", p.node, err)}
	}
	if onePhase {
		return &wire.Error{Code: wire.CodeUnknownOutcome, TxnID: txnID, Message: fmt.Sprintf("node %s did not answer, the write may have been applied: %v", p.node, err)}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &wire.Error{Code: wire.CodeUnavailable, TxnID: txnID, Message: fmt.Sprintf("node %s did not vote in time", p.node)}
	}
	return &wire.Error{Code: wire.CodeUnavailable, TxnID: txnID, Message: fmt.Sprintf("node %s unavailable: %v", p.node, err)}
}
