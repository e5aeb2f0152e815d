package txn

// Crash points: the named instants of the protocol where a crashpoints build can kill itself
// (KVTX_CRASH_AT=POINT[:N]).
const (
	// PointMasterBeforePrepare: a cross-shard transaction has its id, no prepare sent.
	PointMasterBeforePrepare = "master.before-prepare"
	// PointMasterAfterVotes: every participant voted yes, no decision record yet.
	PointMasterAfterVotes = "master.after-votes"
	// PointMasterAfterDecision: the commit decision is durable, no phase-2 message sent.
	PointMasterAfterDecision = "master.after-decision"
	// PointMasterAfterFirstCommit: phase 2 reached one participant only.
	PointMasterAfterFirstCommit = "master.after-first-commit"
	// PointNodeBeforePrepareRecord: the node got a prepare, has written nothing.
	PointNodeBeforePrepareRecord = "node.before-prepare-record"
	// PointNodeAfterPrepareRecord: the prepare record is durable, the vote not sent.
	PointNodeAfterPrepareRecord = "node.after-prepare-record"
	// PointNodeBeforeCommitApply: the node got a commit, has applied nothing.
	PointNodeBeforeCommitApply = "node.before-commit-apply"
	// PointNodeAfterCommitApply: the commit is applied (durable at the node's next sync), not
	// acknowledged.
	PointNodeAfterCommitApply = "node.after-commit-apply"
)

// CrashPoints lists every crash point, master's first.
var CrashPoints = []string{
	PointMasterBeforePrepare, PointMasterAfterVotes, PointMasterAfterDecision, PointMasterAfterFirstCommit,
	PointNodeBeforePrepareRecord, PointNodeAfterPrepareRecord, PointNodeBeforeCommitApply, PointNodeAfterCommitApply,
}
