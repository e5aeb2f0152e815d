package txn

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/kvtx/kvtx/wire"
)

// restartMasterWithSyncBacklog replaces the master with one whose SyncBacklog is n.
func (c *testCluster) restartMasterWithSyncBacklog(n int) {
	c.t.Helper()
	c.crashMaster()
	coord, err := NewCoordinator(context.Background(), CoordinatorConfig{
		Shards: c.shards, Transport: c.tr.From(MasterName), Decisions: c.decisions, Timeouts: c.timeouts, Logger: quiet,
		Metrics: c.metrics, Hooks: c.hooks, Runtime: c.masterRT, Parallel: c.parallel, SyncBacklog: n,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := coord.Recover(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	c.coord = coord
	c.tr.Register(MasterName, coord)
}

// syncLog records the SyncRequests the master sends, and loses every one to the nodes in
// unsynced (the master retries them until they get through).
type syncLog struct {
	mu       sync.Mutex
	unsynced map[string]bool
	listed   map[string]map[uint64]bool // node → transactions a Sync to it listed
	batches  map[string]map[string]bool // node → distinct Syncs sent to it (their commit lists)
}

func newSyncLog(unsynced ...string) *syncLog {
	l := &syncLog{unsynced: map[string]bool{}, listed: map[string]map[uint64]bool{}, batches: map[string]map[string]bool{}}
	for _, n := range unsynced {
		l.unsynced[n] = true
	}
	return l
}

func (l *syncLog) fault(from, to string, req wire.Message) Fault {
	sr, ok := req.(*wire.SyncRequest)
	if !ok || from != MasterName {
		return Deliver
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.listed[to] == nil {
		l.listed[to], l.batches[to] = map[uint64]bool{}, map[string]bool{}
	}
	ids := make([]string, len(sr.Commits))
	for i, cr := range sr.Commits {
		l.listed[to][cr.TxnID] = true
		ids[i] = fmt.Sprint(cr.TxnID)
	}
	l.batches[to][strings.Join(ids, ",")] = true
	if l.unsynced[to] {
		return DropRequest
	}
	return Deliver
}

// sawSync reports whether a Sync to node listed txnID.
func (l *syncLog) sawSync(node string, txnID uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.listed[node][txnID]
}

// distinctSyncs counts the different Syncs sent to node, retries not counted.
func (l *syncLog) distinctSyncs(node string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.batches[node])
}

// held reports whether the master still holds txnID (applied, waiting for syncs) and, under
// classic, whether its decision record is still in the log.
func (c *testCluster) held(txnID uint64) (inMemory, recorded bool) {
	c.coord.mu.Lock()
	inMemory = c.coord.mu.txns[txnID] != nil
	c.coord.mu.Unlock()
	ds, _ := c.decisions.Load()
	for _, d := range ds {
		recorded = recorded || d.TxnID == txnID
	}
	return inMemory, recorded
}

// While a node does not answer its Syncs, the master retries one Sync to it, and the
// transactions acknowledged meanwhile queue for the next one: one goroutine and one request in
// flight per node, not one per batch of forgotten decisions. The master keeps every one of
// those transactions (it may not forget a commit a participant has not synced), and forgets
// them all once the node answers.
func TestANodeThatDoesNotAnswerItsSyncsGetsOneSyncAtATime(t *testing.T) {
	for _, parallel := range []bool{false, true} {
		t.Run(fmt.Sprintf("parallel=%v", parallel), func(t *testing.T) {
			c := newTestCluster(t, 2)
			if parallel {
				c.parallel = true
				c.crashMaster()
				c.startMaster()
			}
			log := newSyncLog("node2")
			c.tr.SetFault(log.fault)
			k := c.keys("f")
			const txns = 20
			var ids []uint64
			for i := range txns {
				rep, err := c.txn(nil, put(k[0], fmt.Sprint(i)), put(k[1], fmt.Sprint(i)))
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, rep.TxnID)
				// node1 syncs each transaction on its own schedule: the batches are distinct.
				waitFor(t, func() (bool, string) {
					return log.sawSync("node1", rep.TxnID), fmt.Sprintf("no Sync to node1 lists transaction %d", rep.TxnID)
				})
			}
			if n := log.distinctSyncs("node2"); n != 1 {
				t.Errorf("%d different Syncs went to node2, which answers none; want 1, retried, the rest queued", n)
			}
			if n := c.coord.syncBacklog("node2"); n != txns {
				t.Errorf("node2's sync backlog is %d, want %d", n, txns)
			}
			for _, id := range ids {
				if inMemory, recorded := c.held(id); !inMemory || recorded == parallel {
					t.Errorf("transaction %d not synced by node2: held in memory %v, decision recorded %v; want true, %v", id, inMemory, recorded, !parallel)
				}
			}

			c.tr.SetFault(nil)
			waitFor(t, func() (bool, string) {
				left := 0
				for _, id := range ids {
					if inMemory, recorded := c.held(id); inMemory || recorded {
						left++
					}
				}
				return left == 0, fmt.Sprintf("%d of %d transactions not forgotten after node2 answered", left, txns)
			})
		})
	}
}

// A node that does not answer its Syncs holds up the forgetting of its own transactions only:
// one committed at the same time on the other nodes is forgotten.
func TestANodeThatDoesNotSyncHoldsUpOnlyItsOwnTransactions(t *testing.T) {
	c := newTestCluster(t, 3)
	log := newSyncLog("node2")
	// Both transactions' commits reach node1 at once, so that they are acknowledged together.
	hold := make(chan struct{})
	c.tr.SetFault(func(from, to string, req wire.Message) Fault {
		switch req.(type) {
		case *wire.CommitRequest, *wire.CommitBatchRequest:
			if to == "node1" {
				<-hold
			}
		}
		return log.fault(from, to, req)
	})
	k := c.keys("g")
	stuck, err := c.txn(nil, put(k[0], "a"), put(k[1], "a")) // node1, node2
	if err != nil {
		t.Fatal(err)
	}
	free, err := c.txn(nil, put(k[0], "b"), put(k[2], "b")) // node1, node3
	if err != nil {
		t.Fatal(err)
	}
	close(hold)
	waitFor(t, func() (bool, string) {
		inMemory, recorded := c.held(free.TxnID)
		return !inMemory && !recorded, fmt.Sprintf("transaction %d on node1 and node3: held in memory %v, decision recorded %v", free.TxnID, inMemory, recorded)
	})
	if inMemory, recorded := c.held(stuck.TxnID); !inMemory || !recorded {
		t.Fatalf("transaction %d, which node2 has not synced, was forgotten (in memory %v, recorded %v)", stuck.TxnID, inMemory, recorded)
	}
}

// Once SyncBacklog transactions wait for a node's sync, new cross-shard transactions on that
// node are refused as unavailable, naming it, and nothing of them is written; other writes
// go on, and once the node syncs it takes cross-shard transactions again.
func TestAFullSyncBacklogRefusesCrossShardTransactionsOnThatNode(t *testing.T) {
	c := newTestCluster(t, 2)
	c.restartMasterWithSyncBacklog(3)
	log := newSyncLog("node2")
	c.tr.SetFault(log.fault)
	k := c.keys("h")
	for i := range 3 {
		if _, err := c.txn(nil, put(k[0], fmt.Sprint(i)), put(k[1], fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() (bool, string) {
			n1, n2 := c.coord.syncBacklog("node1"), c.coord.syncBacklog("node2")
			return n1 == 0 && n2 == i+1, fmt.Sprintf("sync backlogs: node1 %d, node2 %d; want 0 and %d", n1, n2, i+1)
		})
	}
	before := c.read(k...)
	_, err := c.txn(nil, put(k[0], "refused"), put(k[1], "refused"))
	if codeOf(err) != wire.CodeUnavailable || !strings.Contains(err.Error(), "node node2 unavailable") || !strings.Contains(err.Error(), "limit 3") {
		t.Fatalf("a cross-shard transaction on node2 with its sync backlog full: %v, want unavailable naming node2 and the limit", err)
	}
	if after := c.read(k...); after[0].Version != before[0].Version || after[1].Version != before[1].Version {
		t.Fatalf("the refused transaction wrote: %+v, then %+v", before, after)
	}
	if _, err := c.txn(nil, put(k[1], "one-phase")); err != nil {
		t.Fatalf("a single-shard write on node2: %v", err)
	}

	c.tr.SetFault(nil)
	waitFor(t, func() (bool, string) {
		n := c.coord.syncBacklog("node2")
		return n == 0, fmt.Sprintf("node2's sync backlog %d after it answered", n)
	})
	if _, err := c.txn(nil, put(k[0], "again"), put(k[1], "again")); err != nil {
		t.Fatalf("after node2 synced: %v", err)
	}
}
