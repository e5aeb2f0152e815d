package txn

import (
	"fmt"
	"slices"
	"time"

	"github.com/kvtx/kvtx/wire"
)

// txnPhase is where a cross-shard transaction is in the master's memory. Every transition is
// made by becomeLocked and is one of txnTransitions:
//
//	preparing → committed   its decision record is durable (parallel: every vote is yes, or
//	                        the participants' records say so)
//	preparing → aborting    a participant voted no or did not vote, or the commit timestamp
//	                        could not be allocated: the master tells the participants
//	preparing → unknown     its decision record may or may not be durable; only a restart can
//	                        tell, so it stays unknown (Outcome: pending) until then (parallel:
//	                        a participant that did not vote cannot be reached; the
//	                        participants resolve it among themselves)
//	committed → applied     every participant acknowledged its commit
//	applied   → forgotten   every participant synced it, and the decision record is forgotten
//	                        (parallel: there is none; the sync keeps phase 2 as durable as
//	                        the classic one's, so no participant finds it prepared again)
//	aborting  → aborted     every participant acknowledged the abort, or the attempts ran out
//
// Recover registers every durable decision as committed. The coordinator holds a transaction
// in its txns map while it is preparing, committed, unknown or applied.
type txnPhase uint8

const (
	phasePreparing txnPhase = iota + 1
	phaseCommitted
	phaseAborting
	phaseUnknown
	phaseApplied
	phaseForgotten
	phaseAborted
)

// txnTransitions are the only transitions between phases.
var txnTransitions = map[txnPhase][]txnPhase{
	phasePreparing: {phaseCommitted, phaseAborting, phaseUnknown},
	phaseCommitted: {phaseApplied},
	phaseApplied:   {phaseForgotten},
	phaseAborting:  {phaseAborted},
}

var txnPhaseNames = [...]string{
	phasePreparing: "preparing", phaseCommitted: "committed", phaseAborting: "aborting", phaseUnknown: "unknown",
	phaseApplied: "applied", phaseForgotten: "forgotten", phaseAborted: "aborted",
}

// String returns the phase's name, as logs, Status and kvctl show it.
func (ph txnPhase) String() string {
	if int(ph) < len(txnPhaseNames) && txnPhaseNames[ph] != "" {
		return txnPhaseNames[ph]
	}
	return fmt.Sprintf("phase(%d)", uint8(ph))
}

// outcome is what Outcome answers about a transaction in this phase.
func (ph txnPhase) outcome() wire.OutcomeState {
	switch ph {
	case phaseCommitted, phaseApplied:
		return wire.OutcomeCommitted
	case phasePreparing, phaseUnknown:
		return wire.OutcomePending
	default:
		return wire.OutcomeAborted
	}
}

// waitingFor says what a transaction in this phase waits for, in a status report.
func (ph txnPhase) waitingFor() string {
	switch ph {
	case phasePreparing:
		return "votes"
	case phaseCommitted:
		return "commit acknowledgements"
	case phaseUnknown:
		return "decision record unconfirmed until restart"
	case phaseApplied:
		return "participants' sync, to forget the decision"
	default:
		return ""
	}
}

// txnState is the master's memory of a cross-shard transaction. Its fields are guarded by the
// coordinator's mutex, except those that never change after it is registered (id,
// participants, started, done).
type txnState struct {
	id           uint64 // the transaction id, which is also its start timestamp
	participants []string
	started      time.Time
	phase        txnPhase
	commitTS     uint64        // from committed on
	keys         []string      // written and compared keys, in c.mu.unacked from committed or aborting on
	done         chan struct{} // closed on entering applied or aborted: its keys are free
	phase2Start  time.Time     // when its first commit was queued
	acksLeft     int           // participants yet to acknowledge the commit, once phase 2 starts
	acksReceived int           // acknowledgements received, recorded or not
	syncsLeft    int           // participants yet to sync the commit, once applied
	parallel     bool          // committed by the parallel protocol: no decision record
}

func newTxnState(id uint64, participants []string, phase txnPhase, now time.Time) *txnState {
	return &txnState{id: id, participants: participants, started: now, phase: phase, done: make(chan struct{})}
}

// becomeLocked moves st to phase to, closing st.done on entering applied or aborted. c.mu
// must be held. A transition that txnTransitions does not list is a bug, and panics.
func (c *Coordinator) becomeLocked(st *txnState, to txnPhase) {
	if !slices.Contains(txnTransitions[st.phase], to) {
		panic(fmt.Sprintf("txn: transaction %d cannot go from %s to %s", st.id, st.phase, to))
	}
	st.phase = to
	if to == phaseApplied || to == phaseAborted {
		close(st.done)
	}
}

// statusInfo fills the phase and what it waits for into a transaction's line of the master's
// status report.
func statusInfo(info wire.TxnInfo, st *txnState) wire.TxnInfo {
	info.State, info.Waiting = st.phase.String(), st.phase.waitingFor()
	if st.parallel && st.phase == phaseApplied {
		info.Waiting = "participants' sync" // no decision record to forget
	}
	return info
}
