package txn

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kvtx/kvtx/kv"
	"github.com/kvtx/kvtx/wire"
)

// newParallelTestCluster is newTestCluster with a master of the parallel commit protocol.
func newParallelTestCluster(t *testing.T, n int) *testCluster {
	c := newTestCluster(t, n)
	c.crashMaster()
	c.parallel = true
	c.startMaster()
	return c
}

// A lost yes vote does not abort under the parallel protocol: the master asks the participant
// what its record says, hears "prepared", and the transaction is committed, as every yes vote
// was durable.
func TestParallelLostVoteIsSettledFromTheRecord(t *testing.T) {
	c := newParallelTestCluster(t, 2)
	k := c.keys("a")
	c.tr.SetFault(func(from, to string, req wire.Message) Fault {
		if _, ok := req.(*wire.PrepareRequest); ok && to == "node2" {
			return DropReply
		}
		return Deliver
	})
	rep, err := c.txn(nil, put(k[0], "a"), put(k[1], "b"))
	if err != nil {
		t.Fatalf("a lost yes vote: %v, want committed", err)
	}
	c.tr.SetFault(nil)
	c.waitAcked()
	for _, v := range c.read(k...) {
		if !v.Found || v.Version != rep.CommitTS {
			t.Fatalf("committed at %d, read %+v", rep.CommitTS, v)
		}
	}
}

// A no vote aborts, and the refusing node records it: a prepare of the same transaction that
// reaches it later (late, duplicated, after a restart) is refused, so the yes votes can never
// all exist.
func TestParallelNoVoteIsRecordedByTheRefusingNode(t *testing.T) {
	c := newParallelTestCluster(t, 2)
	k := c.keys("a")
	_, err := c.txn([]wire.Compare{{Kind: wire.CmpExists, Key: k[1]}}, put(k[0], "a"), put(k[1], "b"))
	var werr *wire.Error
	if !errors.As(err, &werr) || werr.Code != wire.CodeCompareFailed {
		t.Fatalf("want the compare failure, got %v", err)
	}
	c.resolveAll()
	c.crashNode("node2")
	c.startNode("node2")
	_, err = c.nodes["node2"].store.Prepare(context.Background(), kv.PrepareRecord{TxnID: werr.TxnID, StartTS: werr.TxnID,
		Ops: []kv.Op{{Kind: kv.OpPut, Key: k[1], Value: []byte("late")}}, Participants: c.shards.Names(), Parallel: true}, nil)
	if !errors.Is(err, kv.ErrAborted) {
		t.Fatalf("a late prepare at the node that voted no, after its restart: %v, want refused", err)
	}
	for _, v := range c.read(k...) {
		if v.Found {
			t.Fatalf("aborted write visible: %+v", v)
		}
	}
}

// With the master gone for good after every yes vote, the participants settle the transaction
// by asking each other, and it is committed on every shard at one timestamp.
func TestParallelParticipantsSettleWithoutTheMaster(t *testing.T) {
	c := newParallelTestCluster(t, 2)
	k := c.keys("a")
	c.tr.SetFault(func(from, to string, req wire.Message) Fault {
		if from == MasterName {
			if _, ok := req.(*wire.PrepareRequest); !ok {
				return DropRequest // the master dies after the votes: nothing else leaves it
			}
		}
		return Deliver
	})
	if _, err := c.txn(nil, put(k[0], "a"), put(k[1], "b")); err != nil {
		t.Fatal(err)
	}
	c.crashMaster()
	c.tr.SetFault(nil)
	c.resolveAll()
	var versions []uint64
	for _, n := range c.shards.Names() {
		vals, err := c.nodes[n].store.Get(context.Background(), [][]byte{k[c.shards.Shard(k[0])], k[c.shards.Shard(k[1])]}, 1<<40)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vals {
			if v.Found {
				versions = append(versions, v.Version)
			}
		}
	}
	if len(versions) != 2 || versions[0] != versions[1] {
		t.Fatalf("after the participants settled it: versions %v, want one commit on both shards", versions)
	}
}

// A restarted master starts its oracle above every node's highest timestamp.
func TestLearnTimestampsStartsTheOracleAboveEveryNode(t *testing.T) {
	c := newParallelTestCluster(t, 2)
	high := uint64(50_000_000)
	if _, err := c.nodes["node2"].store.Get(context.Background(), [][]byte{[]byte("x")}, high); err != nil {
		t.Fatal(err)
	}
	if missing := c.coord.LearnTimestamps(context.Background()); len(missing) != 0 {
		t.Fatalf("nodes that did not answer: %v", missing)
	}
	if ts, err := c.coord.oracle.Next(context.Background()); err != nil || ts <= high {
		t.Fatalf("next timestamp %d, %v; want above node2's %d", ts, err, high)
	}
}

// A prepare whose participant list the termination rule could not rest on (this node missing,
// a name twice or outside the shard map) is refused, and nothing is prepared.
func TestAPrepareWithABadParticipantListIsRefused(t *testing.T) {
	c := newParallelTestCluster(t, 2)
	k := c.keys("a")
	node := ownerOf(c.shards, k[0])
	other := ownerOf(c.shards, k[1])
	for _, names := range [][]string{nil, {other}, {node, node}, {node, "node9"}} {
		req := &wire.PrepareRequest{TxnID: 77, StartTS: 77, Ops: []wire.Op{put(k[0], "x")}, Participants: names, Parallel: true}
		var rep wire.PrepareReply
		if err := c.tr.Call(context.Background(), node, req, &rep); codeOf(err) != wire.CodeBadRequest {
			t.Fatalf("participants %v: %v, want bad_request", names, err)
		}
	}
	if n := len(c.nodes[node].store.Prepared()); n != 0 {
		t.Fatalf("%d transactions prepared after refused prepares", n)
	}
}

// A prepare of the parallel protocol older than LateBound is refused, so that an aborted
// transaction's markers can go after it; one without a send time is refused too.
func TestAParallelPrepareOlderThanTheLateBoundIsRefused(t *testing.T) {
	c := newParallelTestCluster(t, 2)
	k := c.keys("a")
	node := ownerOf(c.shards, k[0])
	now := c.nodeRT.Now()
	for _, tc := range []struct {
		sentAt time.Time
		code   wire.Code
	}{
		{time.Time{}, wire.CodeBadRequest},
		{now.Add(-LateBound(c.timeouts) - time.Second), wire.CodeAborted},
		{now.Add(LateBound(c.timeouts) + time.Second), wire.CodeAborted},
	} {
		sent := uint64(0)
		if !tc.sentAt.IsZero() {
			sent = uint64(tc.sentAt.UnixNano())
		}
		req := &wire.PrepareRequest{TxnID: 77, StartTS: 77, Ops: []wire.Op{put(k[0], "x")}, Participants: c.shards.Names(), Parallel: true, SentAt: sent}
		var rep wire.PrepareReply
		if err := c.tr.Call(context.Background(), node, req, &rep); codeOf(err) != tc.code {
			t.Fatalf("prepare sent at %v (now %v): %v, want %s", tc.sentAt, now, err, tc.code)
		}
	}
	if n := len(c.nodes[node].store.Prepared()); n != 0 {
		t.Fatalf("%d transactions prepared after refused prepares", n)
	}
	req := &wire.PrepareRequest{TxnID: 78, StartTS: 78, Ops: []wire.Op{put(k[0], "x")}, Participants: c.shards.Names(), Parallel: true, SentAt: uint64(now.UnixNano())}
	var rep wire.PrepareReply
	if err := c.tr.Call(context.Background(), node, req, &rep); err != nil {
		t.Fatalf("a prepare sent now: %v", err)
	}
}

// Below the GC safe point, reads are refused by the master and by the nodes, with "compacted";
// at or above it they see what they always saw.
func TestReadsBelowTheSafePointAreCompacted(t *testing.T) {
	c := newParallelTestCluster(t, 2)
	k := c.keys("a")
	old, err := c.txn(nil, put(k[0], "v1"), put(k[1], "v1"))
	if err != nil {
		t.Fatal(err)
	}
	cur, err := c.txn(nil, put(k[0], "v2"), put(k[1], "v2"))
	if err != nil {
		t.Fatal(err)
	}
	c.waitAcked()
	c.coord.setSafePoint(context.Background(), cur.CommitTS)
	for _, n := range c.shards.Names() {
		if got := c.nodes[n].store.SafePoint(); got != cur.CommitTS {
			t.Fatalf("%s safe point %d, want %d", n, got, cur.CommitTS)
		}
	}
	ctx := context.Background()
	if _, err := c.coord.Get(ctx, &wire.GetRequest{Keys: k, ReadTS: old.CommitTS}); codeOf(err) != wire.CodeCompacted {
		t.Fatalf("read at %d below the safe point %d: %v, want compacted", old.CommitTS, cur.CommitTS, err)
	}
	var rep wire.GetReply
	node := ownerOf(c.shards, k[0])
	if err := c.tr.Call(ctx, node, &wire.GetRequest{Keys: [][]byte{k[0]}, ReadTS: old.CommitTS}, &rep); codeOf(err) != wire.CodeCompacted {
		t.Fatalf("node read below the safe point: %v, want compacted", err)
	}
	got, err := c.coord.Get(ctx, &wire.GetRequest{Keys: k, ReadTS: cur.CommitTS})
	if err != nil || string(got.Values[0].Value) != "v2" || string(got.Values[1].Value) != "v2" {
		t.Fatalf("read at the safe point: %+v, %v", got, err)
	}
}
