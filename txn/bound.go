package txn

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/kvtx/kvtx/wire"
)

// A node takes no timestamp that no master could have issued. Every timestamp the master sends
// (a read, apply or start timestamp, a commit timestamp, a safe point, a backup's) is one its
// oracle handed out or observed first, so it is at most the oracle's persisted mark
// (Oracle.Bound). The node learns that bound from the master itself, over its own link to the
// master (whose certificate it checks), when a request carries a timestamp above the bound it
// knows plus TimestampSlack; a timestamp still above it is refused with a *TimestampError
// (CodeBadRequest) before anything is read or written, so that it cannot raise the node's
// maxTS. That holds whoever sent the request: a wrong timestamp forwarded by a master, or a
// request that got past the permission checks. A restarted node knows no bound: it asks before
// it serves its first request with a timestamp.

// TimestampSlack is how far above the oracle bound it has learned a node takes a timestamp
// without asking the master for the bound again. It is also the most a timestamp may raise a
// node's maxTS above what the master had reserved: one oracle batch, nothing against 2^64.
const TimestampSlack = OracleBatch

// ErrTimestampBeyondOracle is wrapped by every TimestampError.
var ErrTimestampBeyondOracle = errors.New("txn: timestamp beyond the oracle's bound")

// TimestampError is a node's refusal of a request that carries a timestamp above the bound
// of the master's oracle plus TimestampSlack: no master handed it out. Nothing was read or
// written. It unwraps to ErrTimestampBeyondOracle and to a *wire.Error with CodeBadRequest,
// which is what crosses the wire.
type TimestampError struct {
	Node  string // the refusing node
	Field string // which timestamp: "read timestamp", "commit timestamp", ...
	TS    uint64 // the timestamp refused
	Bound uint64 // the oracle's bound the node learned from the master
}

func (e *TimestampError) message() string {
	return fmt.Sprintf("node %s: %s %d is beyond the timestamp oracle's bound %d (+%d slack): no master issued it",
		e.Node, e.Field, e.TS, e.Bound, uint64(TimestampSlack))
}

// Error returns "txn: node N: read timestamp T is beyond the timestamp oracle's bound B ...".
func (e *TimestampError) Error() string { return "txn: " + e.message() }

// Unwrap returns ErrTimestampBeyondOracle and the refusal as a *wire.Error (CodeBadRequest).
func (e *TimestampError) Unwrap() []error {
	return []error{ErrTimestampBeyondOracle, &wire.Error{Code: wire.CodeBadRequest, Message: e.message()}}
}

// oracleBound is the highest bound of the master's oracle that a participant has learned.
type oracleBound struct {
	learned atomic.Uint64
}

// raise makes b at least v.
func (b *oracleBound) raise(v uint64) {
	for {
		cur := b.learned.Load()
		if v <= cur || b.learned.CompareAndSwap(cur, v) {
			return
		}
	}
}

// within reports whether ts is at most the learned bound plus TimestampSlack.
func (b *oracleBound) within(ts uint64) bool {
	l := b.learned.Load()
	return ts <= l || ts-l <= TimestampSlack
}

// checkTS refuses ts, the request's timestamp named what, when it is above the oracle's bound
// plus TimestampSlack: it asks the master for the bound first when ts is above the one it knows.
// A master that cannot be asked makes it refuse with CodeUnavailable (nothing was done; the
// master retries what it must).
func (p *Participant) checkTS(ctx context.Context, what string, ts uint64) error {
	if p.bound.within(ts) {
		return nil
	}
	actx, cancel := p.cfg.Runtime.WithTimeout(ctx, p.cfg.Timeouts.Request)
	defer cancel()
	var rep wire.OracleBoundReply
	if err := p.cfg.Master.Call(actx, MasterName, &wire.OracleBoundRequest{From: p.cfg.Name}, &rep); err != nil {
		return wire.Errorf(wire.CodeUnavailable, "node %s: cannot check %s %d against the timestamp oracle's bound: %v", p.cfg.Name, what, ts, err)
	}
	p.bound.raise(rep.Bound)
	if p.bound.within(ts) {
		return nil
	}
	p.log.Warn("refused a timestamp beyond the oracle's bound", "field", what, "ts", ts, "bound", rep.Bound)
	return &TimestampError{Node: p.cfg.Name, Field: what, TS: ts, Bound: p.bound.learned.Load()}
}

// checkCommitTSs checks the commit timestamps of commits (carried along with a request, or of
// a Sync or CommitBatch) as checkTS does.
func (p *Participant) checkCommitTSs(ctx context.Context, commits []wire.CommitRequest) error {
	var hi uint64
	for _, c := range commits {
		hi = max(hi, c.CommitTS)
	}
	if hi == 0 {
		return nil
	}
	return p.checkTS(ctx, "commit timestamp", hi)
}

// OracleBound returns the highest bound of the master's oracle this node has learned (0 until
// it first needed one).
func (p *Participant) OracleBound() uint64 { return p.bound.learned.Load() }
