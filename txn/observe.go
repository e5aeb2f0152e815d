package txn

import (
	"time"

	"github.com/kvtx/kvtx/wire"
)

// CoordinatorMetrics receives the coordinator's measurements (txn/server records them in
// Prometheus). Its methods are called on the protocol's paths, so they must be cheap and safe
// for concurrent use. A nil CoordinatorConfig.Metrics records nothing.
type CoordinatorMetrics interface {
	// TxnDone records a finished write transaction: its path ("1pc" or "2pc"), its outcome
	// ("committed", "aborted" or "unknown") and its latency at the master.
	TxnDone(path, outcome string, d time.Duration)
	// PhaseDone records the latency of one phase of a two-phase commit: "prepare" (every
	// vote), "decision" (the durable record) or "commit" (every acknowledgement).
	PhaseDone(phase string, d time.Duration)
	// Recovered records one recovery action: "redrive_commit", a committed transaction whose
	// phase 2 a restarted master drives again.
	Recovered(kind string)
	// CommitNotPrepared records a commit that node refused because it never prepared the
	// transaction (it lost the prepare record), so that its shard misses the writes.
	CommitNotPrepared(node string)
}

// ParticipantMetrics receives a participant's measurements, under the same rules as
// CoordinatorMetrics. A nil ParticipantConfig.Metrics records nothing.
type ParticipantMetrics interface {
	// Step records one step of a transaction on this node ("apply", "prepare", "commit" or
	// "abort") with the code of its reply.
	Step(step string, code wire.Code)
	// Recovered records one recovery action: "commit" or "abort", a prepared transaction
	// resolved by asking the master.
	Recovered(kind string)
	// InDoubt reports how many prepared transactions are in doubt after a resolve round.
	InDoubt(n int)
}

// noMetrics records nothing.
type noMetrics struct{}

var (
	_ CoordinatorMetrics = noMetrics{}
	_ ParticipantMetrics = noMetrics{}
)

func (noMetrics) TxnDone(string, string, time.Duration) {}
func (noMetrics) PhaseDone(string, time.Duration)       {}
func (noMetrics) Recovered(string)                      {}
func (noMetrics) CommitNotPrepared(string)              {}
func (noMetrics) Step(string, wire.Code)                {}
func (noMetrics) InDoubt(int)                           {}

// TxnLog receives one event per protocol step of a transaction (prepare, vote, decision,
// commit, abort, recovered), so that an operator can follow one transaction across the
// processes' logs; txn/server writes them to a file in the data directory. Event is called on
// the protocol's paths, so it must be cheap and safe for concurrent use. A nil
// CoordinatorConfig.TxnLog or ParticipantConfig.TxnLog records nothing.
type TxnLog interface {
	// Event records that transaction txnID reached event, with the shards involved and
	// optional key=value details.
	Event(txnID uint64, event string, shards []string, details ...string)
}

// noTxnLog records nothing.
type noTxnLog struct{}

func (noTxnLog) Event(uint64, string, []string, ...string) {}
