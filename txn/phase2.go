package txn

import (
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/kvtx/kvtx/wire"
)

// startPhase2 sends Commit to every participant until each acknowledges, then forgets the
// decision. It runs in the background until done or until Close.
func (c *Coordinator) startPhase2(st *txnState) {
	c.mu.Lock()
	st.acksLeft, st.phase2Start = len(st.participants), c.cfg.Runtime.Now()
	c.mu.Unlock()
	for _, n := range st.participants {
		c.queueCommit(n, st)
	}
}

// phase2AfterReply starts st's phase 2 on its own goroutine, so that the reply to the client
// goes out first; PointMasterBeforePhase2 is reached there.
func (c *Coordinator) phase2AfterReply(st *txnState) {
	c.wg.Add(1)
	c.cfg.Runtime.Go(func() {
		defer c.wg.Done()
		c.cfg.Hooks.at(PointMasterBeforePhase2)
		c.startPhase2(st)
	})
}

// committer sends the phase-2 commits of one participant. Commits decided while a request is
// in flight queue up and go out together in the next one: under load, one request, one reply
// and one dispatch at the node carry many transactions; when idle, nothing waits.
type committer struct {
	mu      sync.Mutex
	queue   []*txnState
	running bool // a drainCommits is sending
}

// maxCommitBatch bounds the commits in one request, far below the frame limit.
const maxCommitBatch = 1024

// queueCommit queues st's commit for node and starts a sender if none is running.
func (c *Coordinator) queueCommit(node string, st *txnState) {
	c.mu.Lock()
	cm := c.mu.committers[node]
	if cm == nil {
		cm = &committer{}
		c.mu.committers[node] = cm
	}
	c.mu.Unlock()
	cm.mu.Lock()
	cm.queue = append(cm.queue, st)
	start := !cm.running
	cm.running = true
	cm.mu.Unlock()
	if start {
		c.wg.Add(1)
		c.cfg.Runtime.Go(func() { c.drainCommits(node, cm) })
	}
}

// drainCommits sends cm's queued commits to node, a batch per request, each until it is
// acknowledged, and returns when the queue is empty or the coordinator closes (the next
// Recover drives the rest again).
func (c *Coordinator) drainCommits(node string, cm *committer) {
	defer c.wg.Done()
	for {
		cm.mu.Lock()
		n := min(len(cm.queue), maxCommitBatch)
		if n == 0 {
			cm.running = false
			cm.mu.Unlock()
			return
		}
		batch := slices.Clone(cm.queue[:n])
		cm.queue = slices.Delete(cm.queue, 0, n)
		cm.mu.Unlock()
		var req wire.Message
		if len(batch) == 1 {
			req = &wire.CommitRequest{TxnID: batch[0].id, CommitTS: batch[0].commitTS}
		} else {
			commits := make([]wire.CommitRequest, len(batch))
			for i, st := range batch {
				commits[i] = wire.CommitRequest{TxnID: st.id, CommitTS: st.commitTS}
			}
			req = &wire.CommitBatchRequest{Commits: commits}
		}
		if !c.sendCommits(node, req, batch) {
			return
		}
	}
}

// sendCommits sends req, the commits of batch, to node until it is acknowledged, and records
// the acknowledgements. If node refuses it (an error other than a connection failure, which
// only a bug causes), each commit is retried on its own, in the background, so that the refused
// one does not hold up the others or those queued behind them. It reports false only when the
// coordinator closes.
func (c *Coordinator) sendCommits(node string, req wire.Message, batch []*txnState) bool {
	acked, err := c.retryUnless(node, req, 0, refused)
	switch {
	case acked:
		for _, st := range batch {
			c.commitAcked(st)
		}
	case err != nil:
		c.log.Warn("commit refused: retrying each commit alone", "node", node, "commits", len(batch), "err", err)
		for _, st := range batch {
			c.wg.Add(1)
			c.cfg.Runtime.Go(func() {
				defer c.wg.Done()
				acked, err := c.retryUnless(node, &wire.CommitRequest{TxnID: st.id, CommitTS: st.commitTS}, 0, notPrepared)
				if err != nil {
					// Retrying cannot help: the node has no record of the transaction to commit.
					c.log.Error("commit refused: the node never prepared this transaction; its shard misses the transaction's writes",
						"node", node, "txn", st.id, "commit_ts", st.commitTS, "err", err)
					c.cfg.Metrics.CommitNotPrepared(node)
					acked = true
				}
				if acked {
					c.commitAcked(st)
				}
			})
		}
	default:
		return false // closing
	}
	return true
}

// refused reports whether err is a node's refusal of a request, rather than a sign that it
// could not serve it now (unreachable, timed out, shutting down), after which a retry may
// succeed.
func refused(err error) bool {
	var werr *wire.Error
	return errors.As(err, &werr) && !transientCode(werr.Code)
}

// notPrepared reports whether err is a node's answer that it never prepared the transaction
// it was asked to commit.
func notPrepared(err error) bool {
	var werr *wire.Error
	return errors.As(err, &werr) && werr.Code == wire.CodeNotFound
}

// transientCode reports whether a node's error code says it could not serve the request now
// (a retry may succeed) rather than that it refuses it.
func transientCode(code wire.Code) bool {
	switch code {
	case wire.CodeUnavailable, wire.CodeTimeout, wire.CodeShuttingDown:
		return true
	}
	return false
}

// commitAcked records one participant's acknowledgement of st's commit; after the last one
// the transaction is applied: its keys are free for later writers, and its decision is
// forgotten after the participants' next sync (forget.go).
//
// The first acknowledgement reaches PointMasterAfterFirstCommit before it is recorded: while a
// hook blocks there, the transaction cannot be applied.
func (c *Coordinator) commitAcked(st *txnState) {
	c.mu.Lock()
	st.acksReceived++
	first := st.acksReceived == 1
	c.mu.Unlock()
	if first {
		c.cfg.Hooks.at(PointMasterAfterFirstCommit)
	}
	c.mu.Lock()
	st.acksLeft--
	if st.acksLeft > 0 {
		c.mu.Unlock()
		return
	}
	c.becomeLocked(st, phaseApplied)
	c.mu.Unlock()
	c.cfg.TxnLog.Event(st.id, "acknowledged", st.participants)
	c.releaseKeys(st)
	c.mu.Lock()
	st.keys = nil // an applied transaction waiting for its syncs costs no more than its ids
	c.mu.Unlock()
	c.cfg.Metrics.PhaseDone("commit", c.since(st.phase2Start))
	c.queueSyncs(st)
}

// retry sends req to node until it is acknowledged, the coordinator closes, or (with
// attempts > 0) the attempts run out. It reports whether node acknowledged.
func (c *Coordinator) retry(node string, req wire.Message, attempts int) bool {
	acked, _ := c.retryUnless(node, req, attempts, nil)
	return acked
}

// retryUnless is retry that also stops at an error for which stop (if not nil) is true,
// returning it.
func (c *Coordinator) retryUnless(node string, req wire.Message, attempts int, stop func(error) bool) (bool, error) {
	backoff := 5 * time.Millisecond
	for i := 0; attempts == 0 || i < attempts; i++ {
		var ack wire.Ack
		err := c.call(c.ctx, node, req, &ack)
		if err == nil {
			return true, nil
		}
		if c.ctx.Err() != nil {
			return false, nil
		}
		if stop != nil && stop(err) {
			return false, err
		}
		c.log.Debug("phase 2 retry", "node", node, "msg", req.MsgType(), "err", err)
		if c.cfg.Runtime.Sleep(c.ctx, backoff) != nil {
			return false, nil
		}
		backoff = min(backoff*2, time.Second)
	}
	return false, nil
}
