package txn

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/kvtx/kvtx/wire"
)

// The parallel commit protocol (CoordinatorConfig.Parallel). A cross-shard transaction is
// committed exactly when every participant holds a durable yes vote: a prepare record that
// names every participant and fixes that participant's minimum commit timestamp. Its commit
// timestamp is the largest of those minimums. It is aborted exactly when some participant
// durably refused it: it recorded "aborted" for a transaction it never prepared (kv's Resolve,
// or an Abort), or aborted its prepared record after learning that the transaction cannot
// commit. There is no decision record, so the critical path is one round trip to the
// participants and their prepare fsync.
//
// The master answers "committed" once every vote is yes, after observing the commit timestamp
// in its oracle, and sends phase 2 lazily, as in the classic protocol. Anything short of all
// yes votes (a no vote, a timeout, a lost connection) is settled from the participants'
// records, never presumed: the master asks each participant that did not vote yes what it
// knows (an OutcomeRequest; a participant that never prepared the transaction records
// "aborted" before it answers, so that its prepare can never succeed later). One "aborted"
// answer aborts the transaction; "committed at T", or "prepared" from every one of them,
// commits it. A participant whose prepare certainly never reached it (the transport says so)
// will never vote yes, since prepares are not sent twice: the master then aborts the others,
// and tells the client "aborted" once one of them has recorded it. Otherwise the outcome is
// unknown to the client, and the participants settle it among themselves when they can talk
// (Participant.ResolveOnce), without the master.
//
// Why no transaction is both committed and aborted: a participant records "aborted" only for a
// transaction it never voted yes on (then the set of yes votes can never be complete), or when
// its holder of the information knew that some participant had recorded "aborted" or could
// never vote. A participant commits only after seeing every yes vote, or a commit elsewhere.

// finishParallel settles a transaction whose votes are in (minTS[i] and errs[i] are
// participant i's vote) under the parallel protocol.
func (c *Coordinator) finishParallel(ctx context.Context, st *txnState, parts []shardTxn, keys []string, minTS []uint64, errs []error) (*wire.TxnReply, error) {
	if firstError(errs) == nil {
		c.cfg.Hooks.at(PointMasterAfterVotes)
		return c.commitParallel(ctx, st, keys, slices.Max(minTS))
	}
	var refusal *wire.Error
	for i, err := range errs {
		if err == nil {
			continue
		}
		werr := c.voteError(st.id, parts[i], err, false)
		if refusal == nil || votePriority(werr.Code) < votePriority(refusal.Code) {
			refusal = werr
		}
	}
	// Ask each participant that did not vote yes what its record says (every participant that
	// did holds a durable yes vote: once prepared, a record goes only with an outcome).
	answers := make([]wire.OutcomeReply, len(parts))
	qerrs := make([]error, len(parts))
	qctx, cancel := c.cfg.Runtime.WithTimeout(context.WithoutCancel(ctx), c.cfg.Timeouts.Request)
	fanOut(c.cfg.Runtime, len(parts), func(i int) {
		if errs[i] == nil {
			answers[i] = wire.OutcomeReply{State: wire.OutcomePrepared, MinCommitTS: minTS[i]}
			return
		}
		qerrs[i] = c.askOutcome(qctx, parts[i].node, st.id, &answers[i])
	})
	cancel()
	out := combineOutcomes(answers, qerrs)
	switch out.State {
	case wire.OutcomeCommitted:
		c.log.Info("transaction committed by the participants' records although a vote failed", "txn", st.id, "vote_error", refusal.Message)
		return c.commitParallel(ctx, st, keys, out.CommitTS)
	case wire.OutcomeAborted:
		c.abort(st, keys, refusal)
		c.cfg.Metrics.TxnDone("2pc", "aborted", c.since(st.started))
		return nil, refusal
	}
	// Some participant could not be asked. If one of them certainly never got its prepare, the
	// transaction can never commit: abort it at the others, and let the client know once one
	// has recorded that, or at once if no prepare reached anyone (then none is in flight, and
	// there is nothing to record).
	undelivered := 0
	for i, err := range errs {
		if err != nil && qerrs[i] != nil && errors.Is(err, ErrNotDelivered) {
			undelivered++
		}
	}
	if undelivered == len(parts) || undelivered > 0 && c.abortRecorded(st, parts) {
		c.abort(st, keys, refusal)
		c.cfg.Metrics.TxnDone("2pc", "aborted", c.since(st.started))
		return nil, refusal
	}
	c.mu.Lock()
	c.becomeLocked(st, phaseUnknown)
	delete(c.mu.txns, st.id) // the participants settle it; nobody asks the master
	c.mu.Unlock()
	c.cfg.TxnLog.Event(st.id, "decision", st.participants, "outcome=unknown", fmt.Sprintf("error=%q", refusal.Message))
	c.cfg.Metrics.TxnDone("2pc", "unknown", c.since(st.started))
	return nil, &wire.Error{Code: wire.CodeUnknownOutcome, TxnID: st.id,
		Message: fmt.Sprintf("a participant could not be reached to settle the outcome (%s); the participants settle it when they can talk", refusal.Message)}
}

// askOutcome asks node about txnID, a few times while the request is lost on the way.
func (c *Coordinator) askOutcome(ctx context.Context, node string, txnID uint64, rep *wire.OutcomeReply) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = c.cfg.Transport.Call(ctx, node, &wire.OutcomeRequest{TxnID: txnID, From: MasterName}, rep); err == nil || ctx.Err() != nil {
			return err
		}
		if c.cfg.Runtime.Sleep(ctx, time.Duration(attempt+1)*10*time.Millisecond) != nil {
			return err
		}
	}
	return err
}

// combineOutcomes reduces the participants' answers about one transaction: aborted if any says
// aborted, committed at T if any says committed at T, committed at the largest minimum if every
// one is prepared, and pending otherwise (some answer is missing).
func combineOutcomes(answers []wire.OutcomeReply, errs []error) wire.OutcomeReply {
	out := wire.OutcomeReply{State: wire.OutcomeCommitted}
	missing := false
	for i, a := range answers {
		switch {
		case errs[i] != nil:
			missing = true
		case a.State == wire.OutcomeAborted:
			return wire.OutcomeReply{State: wire.OutcomeAborted}
		case a.State == wire.OutcomeCommitted:
			return wire.OutcomeReply{State: wire.OutcomeCommitted, CommitTS: a.CommitTS}
		case a.State == wire.OutcomePrepared:
			out.CommitTS = max(out.CommitTS, a.MinCommitTS)
		default:
			missing = true
		}
	}
	if missing {
		return wire.OutcomeReply{State: wire.OutcomePending}
	}
	return out
}

// abortRecorded sends Abort to every participant, for a transaction that can never commit,
// and reports whether at least one acknowledged it (an acknowledged Abort is durable).
func (c *Coordinator) abortRecorded(st *txnState, parts []shardTxn) bool {
	acked := make([]bool, len(parts))
	fanOut(c.cfg.Runtime, len(parts), func(i int) {
		var ack wire.Ack
		acked[i] = c.call(c.ctx, parts[i].node, &wire.AbortRequest{TxnID: st.id}, &ack) == nil
	})
	return slices.Contains(acked, true)
}

// commitParallel reports a transaction committed at commitTS, which every participant's yes
// vote fixed, and starts its phase 2.
func (c *Coordinator) commitParallel(ctx context.Context, st *txnState, keys []string, commitTS uint64) (*wire.TxnReply, error) {
	// Every later timestamp must exceed commitTS, so that every read the client makes after
	// the reply sees the transaction.
	obsErr := c.oracle.Observe(context.WithoutCancel(ctx), commitTS)
	c.mu.Lock()
	st.commitTS, st.keys, st.parallel = commitTS, keys, true
	c.becomeLocked(st, phaseCommitted)
	for _, k := range keys {
		c.mu.unacked[k] = st
	}
	c.mu.Unlock()
	c.cfg.Hooks.at(PointMasterAfterDecision)
	c.cfg.TxnLog.Event(st.id, "decision", st.participants, "outcome=committed", fmt.Sprintf("commit_ts=%d", commitTS), "protocol=parallel")
	c.phase2AfterReply(st)
	if obsErr != nil {
		// Committed, but a later read could be given a timestamp below its commit.
		c.log.Error("committed transaction's timestamp could not be observed", "txn", st.id, "commit_ts", commitTS, "err", obsErr)
		c.cfg.Metrics.TxnDone("2pc", "unknown", c.since(st.started))
		return nil, &wire.Error{Code: wire.CodeUnknownOutcome, TxnID: st.id, Message: fmt.Sprintf("committed at %d, but the timestamp oracle failed: %v", commitTS, obsErr)}
	}
	c.cfg.Metrics.TxnDone("2pc", "committed", c.since(st.started))
	return &wire.TxnReply{TxnID: st.id, CommitTS: commitTS, Path: "2pc"}, nil
}
