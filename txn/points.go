package txn

// The protocol's named points: instants of a transaction's life at which Hooks.AtPoint is
// called, so that a test or a crashpoints build (KVTX_CRASH_AT=POINT[:N]) can stop or kill
// the process there.
const (
	// PointMasterBeforePrepare: a cross-shard transaction has its id, no prepare sent.
	PointMasterBeforePrepare = "master.before-prepare"
	// PointMasterAfterVotes: every participant voted yes, no decision record yet.
	PointMasterAfterVotes = "master.after-votes"
	// PointMasterAfterDecision: the commit decision is durable, no phase-2 message sent (parallel
	// protocol: every vote is yes and the commit timestamp observed, the reply not sent).
	PointMasterAfterDecision = "master.after-decision"
	// PointMasterBeforePhase2: the transaction is committed and its reply handed back to the
	// client's connection (which may or may not have written it yet); no phase-2 message sent.
	PointMasterBeforePhase2 = "master.before-phase2"
	// PointMasterAfterFirstCommit: one participant acknowledged its commit, and the master has
	// recorded no acknowledgement yet. The other participants' commits went out at the same
	// time and may have landed too.
	PointMasterAfterFirstCommit = "master.after-first-commit"
	// PointNodeBeforePrepareRecord: the node got a prepare, has written nothing.
	PointNodeBeforePrepareRecord = "node.before-prepare-record"
	// PointNodeAfterPrepareRecord: the prepare record is durable, the vote not sent.
	PointNodeAfterPrepareRecord = "node.after-prepare-record"
	// PointNodeAfterRefusalRecord: asked about a transaction it never prepared (parallel
	// protocol), the node has durably recorded it aborted and not answered yet.
	PointNodeAfterRefusalRecord = "node.after-refusal-record"
	// PointNodeBeforeCommitApply: the node got a commit, has applied nothing.
	PointNodeBeforeCommitApply = "node.before-commit-apply"
	// PointNodeAfterCommitApply: the commit is applied (durable at the node's next sync), not
	// acknowledged.
	PointNodeAfterCommitApply = "node.after-commit-apply"
)

// CrashPoints lists every named point, master's first.
var CrashPoints = []string{
	PointMasterBeforePrepare, PointMasterAfterVotes, PointMasterAfterDecision, PointMasterBeforePhase2, PointMasterAfterFirstCommit,
	PointNodeBeforePrepareRecord, PointNodeAfterPrepareRecord, PointNodeAfterRefusalRecord, PointNodeBeforeCommitApply, PointNodeAfterCommitApply,
}

// Hooks are testing knobs, passed in CoordinatorConfig and ParticipantConfig: optional
// functions that the protocol calls at its named points. The protocol runs the same code
// whether they are set or not; the zero Hooks calls nothing.
type Hooks struct {
	// AtPoint, if set, is called each time the protocol reaches one of the Point* instants,
	// with the point's name, on the goroutine that reached it and with no lock held. It may
	// block, which holds up only that goroutine's work, or end the process.
	AtPoint func(point string)
}

// at calls AtPoint, if set.
func (h Hooks) at(point string) {
	if h.AtPoint != nil {
		h.AtPoint(point)
	}
}
