package txn

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/kvtx/kvtx/wire"
)

// Recover loads every durable commit decision and drives its phase 2 again in the background,
// until every participant acknowledges. It must run before the master answers any Outcome
// request, or a committed transaction could be reported aborted.
func (c *Coordinator) Recover(ctx context.Context) (int, error) {
	decisions, err := c.cfg.Decisions.Load()
	if err != nil {
		return 0, fmt.Errorf("txn: load decisions: %w", err)
	}
	// Register every decision before driving any: a participant that asks about one of them
	// meanwhile must hear "committed", never the presumed "aborted".
	states := make([]*txnState, len(decisions))
	for i, d := range decisions {
		if err := c.oracle.Observe(ctx, d.CommitTS); err != nil {
			return 0, err
		}
		states[i] = newTxnState(d.TxnID, d.Participants, phaseCommitted, c.cfg.Runtime.Now())
		states[i].commitTS = d.CommitTS
		c.mu.Lock()
		c.mu.txns[d.TxnID] = states[i]
		c.mu.Unlock()
	}
	for i, d := range decisions {
		c.cfg.TxnLog.Event(d.TxnID, "recovered", d.Participants, "outcome=committed", fmt.Sprintf("commit_ts=%d", d.CommitTS))
		c.cfg.Metrics.Recovered("redrive_commit")
		c.log.Info("re-driving committed transaction", "txn", d.TxnID, "commit_ts", d.CommitTS, "participants", d.Participants)
		c.startPhase2(states[i])
	}
	return len(decisions), nil
}

// LearnTimestamps makes the oracle observe every node's highest timestamp (Status), so that
// the master hands out timestamps above every commit the participants settled without it
// (parallel protocol). It asks every node in parallel, again while some do not answer, until
// each has answered or ctx ends, and returns the nodes that never answered.
func (c *Coordinator) LearnTimestamps(ctx context.Context) []string {
	names := c.cfg.Shards.Names()
	done := make([]bool, len(names))
	backoff := 10 * time.Millisecond
	for {
		fanOut(c.cfg.Runtime, len(names), func(i int) {
			if done[i] {
				return
			}
			sctx, cancel := c.cfg.Runtime.WithTimeout(ctx, statusTimeout)
			defer cancel()
			var rep wire.StatusReply
			if c.cfg.Transport.Call(sctx, names[i], &wire.StatusRequest{}, &rep) != nil || len(rep.Processes) == 0 {
				return
			}
			if ts := rep.Processes[0].MaxTS; ts > 0 && ts < math.MaxUint64 {
				if c.oracle.Observe(ctx, ts+1) != nil {
					return
				}
			}
			done[i] = true
		})
		var missing []string
		for i, ok := range done {
			if !ok {
				missing = append(missing, names[i])
			}
		}
		if len(missing) == 0 || c.cfg.Runtime.Sleep(ctx, backoff) != nil {
			return missing
		}
		backoff = min(2*backoff, time.Second)
	}
}

// Outcome answers a participant that asks about a transaction it prepared. It never says
// "aborted" for a transaction the master may still commit: a transaction being prepared, or
// whose decision record could not be confirmed, is "pending".
func (c *Coordinator) Outcome(req *wire.OutcomeRequest) *wire.OutcomeReply {
	rep := wire.OutcomeReply{State: wire.OutcomeAborted}
	phase := "none"
	c.mu.Lock()
	if st := c.mu.txns[req.TxnID]; st != nil {
		rep.State, phase = st.phase.outcome(), st.phase.String()
		if rep.State == wire.OutcomeCommitted {
			rep.CommitTS = st.commitTS
		}
	}
	c.mu.Unlock()
	c.log.Debug("outcome asked", "txn", req.TxnID, "from", req.From, "phase", phase, "answer", rep.State)
	return &rep
}
