package txn

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/kvtx/kvtx/kv"
	"github.com/kvtx/kvtx/wire"
)

// LateBound is how old a prepare of the parallel protocol may be when it reaches a node
// (PrepareRequest.SentAt, on the master's clock): the master's vote wait plus one request.
// Past it the node refuses the prepare, so that once every participant has finished a
// transaction, no prepare of it can succeed after LateBound: what lets its "aborted" markers go.
func LateBound(t Timeouts) time.Duration { return t.Prepare + t.Request }

// checkAge refuses a parallel prepare sent longer than LateBound ago, or as far in the future
// (a clock that far off breaks the bound).
func (p *Participant) checkAge(sentAt uint64) error {
	if sentAt == 0 || sentAt > math.MaxInt64 {
		return wire.Errorf(wire.CodeBadRequest, "a prepare of the parallel protocol needs the time it was sent")
	}
	age := p.cfg.Runtime.Now().Sub(time.Unix(0, int64(sentAt)))
	if bound := LateBound(p.cfg.Timeouts); age > bound || age < -bound {
		return wire.Errorf(wire.CodeAborted, "prepare sent %v ago, past the late bound of %v (prepare + request timeouts); clocks may disagree", age.Round(time.Millisecond), bound)
	}
	return nil
}

// outcome answers another participant's or the master's termination query about a transaction
// of the parallel protocol, from this node's durable state (kv.Store.Resolve): prepared with
// its minimum commit timestamp, committed at T, or aborted. A node that never prepared the
// transaction records "aborted" before it answers, so its prepare can never succeed later.
func (p *Participant) outcome(ctx context.Context, req *wire.OutcomeRequest) (*wire.OutcomeReply, error) {
	r, err := p.cfg.Store.Resolve(context.WithoutCancel(ctx), req.TxnID)
	if err = p.stepDone("outcome", err); err != nil {
		return nil, err
	}
	if r.Refused {
		p.cfg.Hooks.at(PointNodeAfterRefusalRecord)
		p.cfg.TxnLog.Event(req.TxnID, "refuse", nil, fmt.Sprintf("asked_by=%s", req.From))
	}
	switch r.State {
	case kv.ResolvedPrepared:
		return &wire.OutcomeReply{State: wire.OutcomePrepared, MinCommitTS: r.MinCommitTS}, nil
	case kv.ResolvedCommitted:
		return &wire.OutcomeReply{State: wire.OutcomeCommitted, CommitTS: r.CommitTS}, nil
	default:
		return &wire.OutcomeReply{State: wire.OutcomeAborted}, nil
	}
}

// askPeers settles a transaction of the parallel protocol that t holds prepared here, by
// asking every other participant named in its record (never the master): committed if every
// one is prepared (at the largest minimum, this node's included) or one committed, aborted if
// one aborted. It returns OutcomePending with an error naming a participant it could not ask.
func (p *Participant) askPeers(ctx context.Context, t kv.PreparedTxn) (wire.OutcomeReply, error) {
	peers := slices.DeleteFunc(slices.Clone(t.Participants), func(n string) bool { return n == p.cfg.Name })
	answers := make([]wire.OutcomeReply, len(peers)+1)
	errs := make([]error, len(peers)+1)
	answers[len(peers)] = wire.OutcomeReply{State: wire.OutcomePrepared, MinCommitTS: t.MinCommitTS}
	fanOut(p.cfg.Runtime, len(peers), func(i int) {
		errs[i] = p.cfg.Peers.Call(ctx, peers[i], &wire.OutcomeRequest{TxnID: t.TxnID, From: p.cfg.Name}, &answers[i])
	})
	out := combineOutcomes(answers, errs)
	if out.State == wire.OutcomePending {
		for i, err := range errs {
			if err != nil {
				return out, fmt.Errorf("participant %s unreachable: %w", peers[i], err)
			}
		}
		return out, fmt.Errorf("a participant gave no answer")
	}
	return out, nil
}
