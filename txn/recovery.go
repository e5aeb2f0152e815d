package txn

import (
	"context"
	"fmt"

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
