package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/kvtx/kvtx/cmd/internal/cluster"
	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/client"
)

// Under the parallel commit protocol a transaction in doubt waits for its participants, never
// for the master: with the master killed for good right after the votes and one participant
// killed too, the other stays in doubt (it cannot know whether that participant voted) until
// that participant returns, and then both settle it, the master still down, with one outcome on
// every shard: committed, since every yes vote was durable.
func TestParallelCommitWaitsForTheParticipantsNotTheMaster(t *testing.T) {
	timeouts := cluster.ShortTimeouts()
	timeouts.InDoubt = 2 * time.Second // long enough to kill node2 before node1 asks it
	c := prepare(t, cluster.Config{Nodes: 2, CommitProtocol: txn.ProtocolParallel, Timeouts: timeouts})
	c.start("node1")
	c.start("node2")
	c.startArmed("master", txn.PointMasterAfterVotes)
	keys := c.keysOnEveryShard("settle")
	cl := c.client()
	ctx := stepCtx(t)
	for _, k := range keys {
		if _, err := cl.Put(ctx, []byte(k), []byte("old")); err != nil {
			t.Fatal(err)
		}
	}
	_, err := cl.Txn(ctx, nil, client.Put([]byte(keys[0]), []byte("new")), client.Put([]byte(keys[1]), []byte("new")))
	if err == nil {
		t.Fatal("the master replied although it died at master.after-votes")
	}
	c.waitExit("master", 10*time.Second)
	c.Kill("node2")
	c.waitExit("node2", 10*time.Second)

	// node1 asks node2, finds it down, and keeps the transaction in doubt.
	waitFor(t, 10*time.Second, "node1 in doubt about the transaction while node2 is down", func() (bool, string) {
		procs, state := nodeStatus(c)
		n1 := procs["node1"]
		return n1.Up && len(n1.Prepared) == 1 && n1.Prepared[0].InDoubt, state
	})
	procs, state := nodeStatus(c)
	if n1 := procs["node1"]; len(n1.Prepared) != 1 || n1.LocksHeld != 1 {
		t.Fatalf("node1 settled the transaction without hearing from node2: %s", state)
	}

	c.start("node2")
	waitNothingPreparedWithoutMaster(t, c, "node1", "node2")

	c.start("master")
	cl = c.client()
	kvs := snapshot(t, cl, keys)
	for _, kv := range kvs {
		if string(kv.Value) != "new" {
			t.Fatalf("after the participants settled it: %s, want \"new\" on every shard", describeKVs(kvs))
		}
	}
	if kvs[0].Version != kvs[1].Version {
		t.Fatalf("one transaction, two versions: %s", describeKVs(kvs))
	}
	// The restarted master hands out timestamps above the commit it never saw.
	res, err := cl.Put(context.Background(), []byte(keys[0]), []byte("later"))
	if err != nil || res.CommitTS <= kvs[0].Version {
		t.Fatalf("a write after the restart: %+v, %v; want a version above %d", res, err, kvs[0].Version)
	}
}
