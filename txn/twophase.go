package txn

import (
	"context"
	"fmt"
	"slices"

	"github.com/kvtx/kvtx/wire"
)

// twoPhase runs two-phase commit over parts: it returns once the outcome is durable (or, under
// the classic protocol, the transaction aborted), and phase 2 goes on in the background. The
// classic protocol is presumed abort with the master's decision record as the commit point;
// the parallel one has no decision record (parallel.go).
func (c *Coordinator) twoPhase(ctx context.Context, parts []shardTxn) (*wire.TxnReply, error) {
	start := c.cfg.Runtime.Now()
	txnID, err := c.oracle.Next(ctx)
	if err != nil {
		return nil, wire.Errorf(wire.CodeInternal, "allocate timestamp: %v", err)
	}
	names := make([]string, len(parts))
	for i, p := range parts {
		names[i] = p.node
	}
	if werr := c.checkSyncBacklog(txnID, names); werr != nil {
		c.cfg.Metrics.TxnDone("2pc", "aborted", c.since(start))
		return nil, werr
	}
	keys := txnKeys(parts)
	c.waitUnacked(ctx, keys)
	st := newTxnState(txnID, names, phasePreparing, start)
	c.mu.Lock()
	c.mu.txns[txnID] = st
	c.mu.Unlock()
	c.cfg.Hooks.at(PointMasterBeforePrepare)
	c.cfg.TxnLog.Event(txnID, "prepare", names)

	// Phase 1: every participant in parallel, bounded by the prepare timeout.
	prepCtx, cancel := c.cfg.Runtime.WithTimeout(ctx, c.cfg.Timeouts.Prepare)
	minTS := make([]uint64, len(parts))
	errs := make([]error, len(parts))
	fanOut(c.cfg.Runtime, len(parts), func(i int) {
		p := parts[i]
		var rep wire.PrepareReply
		err := c.call(prepCtx, p.node, &wire.PrepareRequest{TxnID: txnID, StartTS: txnID, Compares: p.cmps, Ops: p.ops, Participants: names,
			Parallel: c.cfg.Parallel, Committed: c.committedOn(partKeys(p)), SentAt: uint64(max(start.UnixNano(), 0))}, &rep)
		minTS[i], errs[i] = rep.MinCommitTS, err
	})
	cancel()
	c.cfg.Metrics.PhaseDone("prepare", c.since(start))
	if c.cfg.Parallel {
		return c.finishParallel(ctx, st, parts, keys, minTS, errs)
	}

	var refusal *wire.Error
	for i, err := range errs {
		if err == nil {
			continue
		}
		werr := c.voteError(txnID, parts[i], err, false)
		if refusal == nil || votePriority(werr.Code) < votePriority(refusal.Code) {
			refusal = werr
		}
	}
	if refusal == nil && ctx.Err() != nil {
		refusal = &wire.Error{Code: wire.CodeAborted, TxnID: txnID, Message: "the client gave up before the decision"}
	}
	if refusal != nil {
		c.abort(st, keys, refusal)
		c.cfg.Metrics.TxnDone("2pc", "aborted", c.since(start))
		return nil, refusal
	}
	c.cfg.Hooks.at(PointMasterAfterVotes)

	// Decision: the commit timestamp is above every participant's served reads (MinCommitTS)
	// and above every timestamp handed out so far.
	decStart := c.cfg.Runtime.Now()
	commitTS, err := c.oracle.Next(ctx)
	if err == nil {
		commitTS = max(commitTS, slices.Max(minTS))
		err = c.oracle.Observe(ctx, commitTS)
	}
	if err != nil {
		werr := &wire.Error{Code: wire.CodeAborted, TxnID: txnID, Message: fmt.Sprintf("allocate commit timestamp: %v", err)}
		c.abort(st, keys, werr)
		c.cfg.Metrics.TxnDone("2pc", "aborted", c.since(start))
		return nil, werr
	}
	// The record must become durable even if the client goes away meanwhile.
	if err := c.cfg.Decisions.Record(context.WithoutCancel(ctx), Decision{TxnID: txnID, CommitTS: commitTS, Participants: names}); err != nil {
		// The record may or may not be on disk: only a restart can tell. Until then the
		// transaction stays pending for participants that ask, which keep their locks.
		c.mu.Lock()
		c.becomeLocked(st, phaseUnknown)
		c.mu.Unlock()
		c.log.Error("decision record failed: outcome unknown until the master restarts", "txn", txnID, "err", err)
		c.cfg.TxnLog.Event(txnID, "decision", names, "outcome=unknown", fmt.Sprintf("error=%q", err.Error()))
		c.cfg.Metrics.TxnDone("2pc", "unknown", c.since(start))
		return nil, &wire.Error{Code: wire.CodeUnknownOutcome, TxnID: txnID, Message: fmt.Sprintf("the decision record could not be written: %v", err)}
	}
	c.mu.Lock()
	st.commitTS, st.keys = commitTS, keys
	c.becomeLocked(st, phaseCommitted)
	for _, k := range keys {
		c.mu.unacked[k] = st
	}
	c.mu.Unlock()
	c.cfg.Metrics.PhaseDone("decision", c.since(decStart))
	c.cfg.Hooks.at(PointMasterAfterDecision)
	c.cfg.TxnLog.Event(txnID, "decision", names, "outcome=committed", fmt.Sprintf("commit_ts=%d", commitTS))

	// The decision is durable: the transaction is committed. Phase 2 runs in the background;
	// later reads and writes of its keys carry its commit (committedOn).
	c.phase2AfterReply(st)
	c.cfg.Metrics.TxnDone("2pc", "committed", c.since(start))
	return &wire.TxnReply{TxnID: txnID, CommitTS: commitTS, Path: "2pc"}, nil
}

// maxCarriedCommits bounds the commits one request carries (committedOn).
const maxCarriedCommits = 64

// committedOn returns the commits of the transactions the master knows are committed, with
// their phase 2 still under way, that hold any of keys: a request to the keys' node carries
// them, and the node applies them first, so that the request does not wait for (or, a
// prepare, conflict with) locks whose outcome is already known.
func (c *Coordinator) committedOn(keys [][]byte) []wire.CommitRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.mu.unacked) == 0 {
		return nil
	}
	var out []wire.CommitRequest
	for _, k := range keys {
		st := c.mu.unacked[string(k)]
		if st == nil || st.phase != phaseCommitted || len(out) >= maxCarriedCommits ||
			slices.ContainsFunc(out, func(cr wire.CommitRequest) bool { return cr.TxnID == st.id }) {
			continue
		}
		out = append(out, wire.CommitRequest{TxnID: st.id, CommitTS: st.commitTS})
	}
	return out
}

// partKeys returns the keys a shard's part of a transaction writes or compares.
func partKeys(p shardTxn) [][]byte {
	keys := make([][]byte, 0, len(p.ops)+len(p.cmps))
	for _, op := range p.ops {
		keys = append(keys, op.Key)
	}
	for _, cmp := range p.cmps {
		keys = append(keys, cmp.Key)
	}
	return keys
}

// votePriority orders refusals so that the client hears the most useful reason.
func votePriority(code wire.Code) int {
	switch code {
	case wire.CodeCompareFailed:
		return 0
	case wire.CodeConflict:
		return 1
	case wire.CodeUnavailable:
		return 3
	default:
		return 2
	}
}

// txnKeys returns the distinct keys a transaction writes or compares.
func txnKeys(parts []shardTxn) []string {
	seen := map[string]bool{}
	var keys []string
	add := func(k []byte) {
		if !seen[string(k)] {
			seen[string(k)] = true
			keys = append(keys, string(k))
		}
	}
	for _, p := range parts {
		for _, op := range p.ops {
			add(op.Key)
		}
		for _, cmp := range p.cmps {
			add(cmp.Key)
		}
	}
	return keys
}

// waitUnacked waits, up to CommitWait, until no key is held by an aborting transaction whose
// abort is still under way: its prepare locks would make this transaction's prepare conflict,
// although the outcome is already known. (A committed one's locks do not: the prepare carries
// its commit, committedOn.)
func (c *Coordinator) waitUnacked(ctx context.Context, keys []string) {
	deadline := c.cfg.Runtime.Now().Add(c.cfg.Timeouts.CommitWait)
	for {
		c.mu.Lock()
		var st *txnState
		for _, k := range keys {
			if st = c.mu.unacked[k]; st != nil && st.phase == phaseAborting {
				break
			}
			st = nil
		}
		c.mu.Unlock()
		if st == nil {
			return
		}
		left := deadline.Sub(c.cfg.Runtime.Now())
		if left <= 0 || !c.cfg.Runtime.Wait(ctx, st.done, left) {
			return // phase 2 is stuck (a node is down): let the prepare find out
		}
	}
}

// abort forgets a transaction that will never commit (presumed abort: no record) and tells
// the participants, best effort: one that misses the message asks later and hears "aborted".
//
// Until the participants have acknowledged the abort (or the attempts run out), its keys are
// registered as unacknowledged, so that the client's retry waits for the locks to go instead of
// meeting them.
func (c *Coordinator) abort(st *txnState, keys []string, reason *wire.Error) {
	txnID, names := st.id, st.participants
	c.mu.Lock()
	delete(c.mu.txns, txnID)
	c.becomeLocked(st, phaseAborting)
	st.keys = keys
	for _, k := range keys {
		c.mu.unacked[k] = st
	}
	c.mu.Unlock()
	c.cfg.TxnLog.Event(txnID, "abort", names, fmt.Sprintf("reason=%s", reason.Code), fmt.Sprintf("detail=%q", reason.Message))
	c.wg.Add(1)
	c.cfg.Runtime.Go(func() {
		defer c.wg.Done()
		fanOut(c.cfg.Runtime, len(names), func(i int) {
			c.retry(names[i], &wire.AbortRequest{TxnID: txnID}, 3)
		})
		c.releaseKeys(st)
		c.mu.Lock()
		c.becomeLocked(st, phaseAborted)
		c.mu.Unlock()
	})
}

// releaseKeys forgets st's keys as unacknowledged.
func (c *Coordinator) releaseKeys(st *txnState) {
	c.mu.Lock()
	for _, k := range st.keys {
		if c.mu.unacked[k] == st {
			delete(c.mu.unacked, k)
		}
	}
	c.mu.Unlock()
}
