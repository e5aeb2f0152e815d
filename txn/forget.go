package txn

import (
	"fmt"
	"slices"
	"time"

	"github.com/kvtx/kvtx/wire"
)

// Forgetting a decision. Participants apply commits without waiting for a sync, so until a
// participant has synced a commit, a crash of its machine could bring the transaction back
// prepared, and it would ask. So the master keeps an applied transaction (in memory, and its
// decision record under classic) until every participant has answered a SyncRequest listing
// it, sent after its acknowledgement; the SyncRequest re-applies any such commit before it
// syncs, so a restart between the acknowledgement and the sync is safe.
//
// Each participant has one syncer: at most one goroutine and one SyncRequest in flight per
// node, however long the node takes, and a node that does not answer holds up only the
// transactions it took part in. What queues while a Sync is in flight goes out in the next.
//
// Nothing here may be dropped to save memory. Under classic, the master answers a
// participant's question from memory, and a transaction it no longer holds is presumed
// aborted: forgetting one that some participant has not synced would tell that participant,
// if its machine crashed, to abort a committed transaction. Under parallel, the participants'
// "committed" markers would then stay on their disks for good. A forget that is merely late
// costs memory at the master (a few hundred bytes per transaction), a decision record that a
// master restart drives again (Commit is idempotent), and a marker of about 20 bytes on each
// participant. The backlog is bounded instead: once SyncBacklog transactions wait for one
// node's sync, new cross-shard transactions on that node are refused (unavailable) until it
// catches up, so a node that acknowledges commits but cannot sync them (a failing or stalled
// disk) cannot make the master's memory grow without bound.

// syncer holds one participant's applied transactions that wait for its sync. Its fields are
// guarded by the coordinator's mutex.
type syncer struct {
	queue   []*txnState // applied, not yet in a SyncRequest to this node
	pending int         // queued or in the SyncRequest in flight
	full    bool        // pending reached SyncBacklog; cleared (and logged) when it drains
	running bool        // a drainSyncs runs for this node
}

// ForgetDelay is how long a node's syncer gathers acknowledged commits before it sends them in
// one SyncRequest: one sync request per node per ForgetDelay at most.
const ForgetDelay = 50 * time.Millisecond

// maxSyncBatch bounds the commits one SyncRequest lists, far below the frame limit.
const maxSyncBatch = 10_000

// maxForgetMarkers bounds the commits a node's next Sync tells it to forget the markers of.
const maxForgetMarkers = 50_000

// DefaultSyncBacklog is CoordinatorConfig.SyncBacklog's default.
const DefaultSyncBacklog = 100_000

// queueSyncs queues st, just applied, for the sync of each of its participants, starting a
// node's syncer if none runs.
func (c *Coordinator) queueSyncs(st *txnState) {
	var start []string
	c.mu.Lock()
	st.syncsLeft = len(st.participants)
	for _, n := range st.participants {
		s := c.mu.syncers[n]
		if s == nil {
			s = &syncer{}
			c.mu.syncers[n] = s
		}
		s.queue = append(s.queue, st)
		s.pending++
		if !s.running {
			s.running = true
			start = append(start, n)
		}
	}
	c.mu.Unlock()
	for _, n := range start {
		c.wg.Add(1)
		c.cfg.Runtime.Go(func() { c.drainSyncs(n) })
	}
}

// drainSyncs sends node's queued transactions in SyncRequests, one at a time, each until it is
// acknowledged, and returns when the queue is empty or the coordinator closes (the decisions
// then stay in the log and are driven again after a restart).
func (c *Coordinator) drainSyncs(node string) {
	defer c.wg.Done()
	for {
		if c.cfg.Runtime.Sleep(c.ctx, ForgetDelay) != nil {
			return
		}
		c.mu.Lock()
		s := c.mu.syncers[node]
		n := min(len(s.queue), maxSyncBatch)
		if n == 0 {
			s.running = false
			c.mu.Unlock()
			return
		}
		batch := slices.Clone(s.queue[:n])
		s.queue = slices.Delete(s.queue, 0, n)
		commits := make([]wire.CommitRequest, n)
		for i, st := range batch {
			commits[i] = wire.CommitRequest{TxnID: st.id, CommitTS: st.commitTS}
		}
		// The commits an earlier Sync confirmed on every participant: their markers may go.
		forget := c.mu.forgetMarkers[node]
		c.mu.forgetMarkers[node] = nil
		c.mu.Unlock()
		if !c.retry(node, &wire.SyncRequest{Commits: commits, Forget: forget}, 0) {
			return
		}
		c.synced(node, batch)
	}
}

// synced records that node has synced the commits of batch, and forgets the transactions that
// every participant has now synced: their decision records, then their memory, and, with each
// participant's next Sync, its outcome markers.
func (c *Coordinator) synced(node string, batch []*txnState) {
	var done []*txnState
	var recorded []uint64 // the classic ones: the parallel protocol writes no decision record
	c.mu.Lock()
	s := c.mu.syncers[node]
	s.pending -= len(batch)
	if s.full && s.pending < c.cfg.SyncBacklog {
		s.full = false
		c.log.Info("node caught up with its syncs: cross-shard transactions on it are accepted again", "node", node, "backlog", s.pending)
	}
	for _, st := range batch {
		if st.syncsLeft--; st.syncsLeft == 0 {
			done = append(done, st)
			if !st.parallel {
				recorded = append(recorded, st.id)
			}
		}
	}
	c.mu.Unlock()
	if len(done) == 0 {
		return
	}
	if len(recorded) > 0 {
		if err := c.cfg.Decisions.Forget(recorded...); err != nil {
			c.log.Warn("forget decisions", "txns", len(recorded), "err", err)
		}
	}
	c.mu.Lock()
	for _, st := range done {
		for _, p := range st.participants {
			if len(c.mu.forgetMarkers[p]) < maxForgetMarkers { // past it, markers only stay longer
				c.mu.forgetMarkers[p] = append(c.mu.forgetMarkers[p], wire.CommitRequest{TxnID: st.id, CommitTS: st.commitTS})
			}
		}
		c.becomeLocked(st, phaseForgotten)
		delete(c.mu.txns, st.id)
	}
	c.mu.Unlock()
}

// checkSyncBacklog refuses a new cross-shard transaction on a participant whose sync backlog
// is full (see the top of this file).
func (c *Coordinator) checkSyncBacklog(txnID uint64, participants []string) *wire.Error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range participants {
		s := c.mu.syncers[n]
		if s == nil || s.pending < c.cfg.SyncBacklog {
			continue
		}
		if !s.full {
			s.full = true
			c.log.Warn("node has not synced its acknowledged commits: refusing cross-shard transactions on it until it does",
				"node", n, "backlog", s.pending, "limit", c.cfg.SyncBacklog)
		}
		return &wire.Error{Code: wire.CodeUnavailable, TxnID: txnID, Message: fmt.Sprintf(
			"node %s unavailable: %d committed transactions wait for it to sync (limit %d)", n, s.pending, c.cfg.SyncBacklog)}
	}
	return nil
}

// syncBacklog returns how many applied transactions wait for node's sync.
func (c *Coordinator) syncBacklog(node string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.mu.syncers[node]; s != nil {
		return s.pending
	}
	return 0
}
