package txn

import (
	"slices"
	"testing"
	"time"

	"github.com/kvtx/kvtx/wire"
)

var allTxnPhases = []txnPhase{phasePreparing, phaseCommitted, phaseAborting, phaseUnknown, phaseApplied, phaseForgotten, phaseAborted}

// The master moves a transaction only along the documented transitions, panics on any other,
// closes done exactly when the transaction's keys are free (applied or aborted), and never
// answers "aborted" for a phase that may still commit.
func TestTxnPhasesMoveOnlyAlongTheDocumentedTransitions(t *testing.T) {
	allowed := map[[2]txnPhase]bool{
		{phasePreparing, phaseCommitted}: true, {phasePreparing, phaseAborting}: true, {phasePreparing, phaseUnknown}: true,
		{phaseCommitted, phaseApplied}: true, {phaseApplied, phaseForgotten}: true, {phaseAborting, phaseAborted}: true,
	}
	c := &Coordinator{}
	for _, from := range allTxnPhases {
		for _, to := range allTxnPhases {
			st := newTxnState(1, nil, from, time.Time{})
			panicked := func() (p bool) {
				defer func() { p = recover() != nil }()
				c.becomeLocked(st, to)
				return false
			}()
			if panicked == allowed[[2]txnPhase{from, to}] {
				t.Errorf("%s → %s: panicked %v, want %v", from, to, panicked, !allowed[[2]txnPhase{from, to}])
				continue
			}
			if panicked {
				continue
			}
			closed := false
			select {
			case <-st.done:
				closed = true
			default:
			}
			if want := to == phaseApplied || to == phaseAborted; closed != want {
				t.Errorf("%s → %s: done closed %v, want %v", from, to, closed, want)
			}
		}
	}
	for _, ph := range []txnPhase{phasePreparing, phaseUnknown, phaseCommitted, phaseApplied} {
		if ph.outcome() == wire.OutcomeAborted {
			t.Errorf("a transaction %s is reported aborted", ph)
		}
	}
	var names []string
	for _, ph := range allTxnPhases {
		names = append(names, ph.String())
	}
	want := []string{"preparing", "committed", "aborting", "unknown", "applied", "forgotten", "aborted"}
	if !slices.Equal(names, want) || txnPhase(99).String() != "phase(99)" {
		t.Errorf("phase names %v, %s; want %v, phase(99)", names, txnPhase(99), want)
	}
}

// The master's status report carries each transaction's phase and what it waits for.
func TestMasterStatusNamesEachTransactionsPhase(t *testing.T) {
	for _, ph := range []txnPhase{phasePreparing, phaseCommitted, phaseUnknown, phaseApplied} {
		info := statusInfo(wire.TxnInfo{TxnID: 7}, &txnState{phase: ph})
		if info.State != ph.String() || info.Waiting != ph.waitingFor() || info.Waiting == "" || info.TxnID != 7 {
			t.Errorf("%s reported as %+v", ph, info)
		}
	}
	// A parallel transaction has no decision record to forget once applied.
	if info := statusInfo(wire.TxnInfo{}, &txnState{phase: phaseApplied, parallel: true}); info.Waiting != "participants' sync" {
		t.Errorf("an applied parallel transaction waits for %q", info.Waiting)
	}
}
