package txn

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kvtx/kvtx/wire"
)

// hostileTS is the timestamp of the poisoning attack: one read at it once raised a node's maxTS
// for good, so that the next cross-shard commit took 2^64-1 and the master's counter wrapped.
const hostileTS = 1<<64 - 2

// Requests that reach a node with a timestamp no master issued (straight to the node, past any
// permission check: the in-memory transport has none) are refused with bad_request before they
// touch the shard: the node's maxTS and safe point stay where they were, and the cluster goes
// on committing at timestamps from its oracle, also after the node restarts.
func TestANodeRefusesTimestampsNoMasterIssued(t *testing.T) {
	c := newTestCluster(t, 2)
	k := c.keys("ts")
	node := ownerOf(c.shards, k[0])
	if _, err := c.txn(nil, put(k[0], "1"), put(k[1], "1")); err != nil {
		t.Fatal(err)
	}
	c.waitAcked()
	// A transaction prepared on the node, so that a hostile Commit has something to commit.
	prep := wire.PrepareRequest{TxnID: 5, StartTS: 5, Ops: []wire.Op{put(k[0], "2")}, Participants: []string{node}}
	asMaster := c.tr.From(MasterName)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := asMaster.Call(ctx, node, &prep, &wire.PrepareReply{}); err != nil {
		t.Fatal(err)
	}
	before := c.nodes[node].store.Stats()

	commit := wire.CommitRequest{TxnID: 5, CommitTS: hostileTS}
	hostile := []wire.Message{
		&wire.GetRequest{Keys: [][]byte{k[0]}, ReadTS: hostileTS},
		&wire.GetRequest{Keys: [][]byte{k[0]}, ReadTS: 10, Committed: []wire.CommitRequest{commit}},
		&wire.ScanRequest{ReadTS: hostileTS},
		&wire.ApplyRequest{TxnID: hostileTS, TS: hostileTS, Ops: []wire.Op{put(k[0], "x")}},
		&wire.PrepareRequest{TxnID: hostileTS, StartTS: hostileTS, Ops: []wire.Op{put(k[0], "y")}, Participants: []string{node}},
		&commit,
		&wire.CommitBatchRequest{Commits: []wire.CommitRequest{commit}},
		&wire.SyncRequest{Commits: []wire.CommitRequest{commit}},
		&wire.SafePointRequest{SafePoint: hostileTS},
		// Just past the slack above the master's bound.
		&wire.GetRequest{Keys: [][]byte{k[0]}, ReadTS: c.coord.oracle.Bound() + TimestampSlack + 1},
	}
	for _, req := range hostile {
		err := asMaster.Call(ctx, node, req, replyTo(req))
		if wire.CodeOf(err) != wire.CodeBadRequest || !strings.Contains(err.Error(), "beyond the timestamp oracle's bound") {
			t.Errorf("%s%s sent to %s: %v, want bad_request: beyond the oracle's bound", req.MsgType(), briefMsg(req), node, err)
		}
	}
	// The node's own error says what it is.
	_, err := c.nodes[node].part.Handle(ctx, hostile[0])
	var te *TimestampError
	if !errors.Is(err, ErrTimestampBeyondOracle) || !errors.As(err, &te) || te.TS != hostileTS || te.Bound != c.coord.oracle.Bound() {
		t.Errorf("the participant's refusal: %v, want a TimestampError for %d above bound %d", err, uint64(hostileTS), c.coord.oracle.Bound())
	}
	after := c.nodes[node].store.Stats()
	if after.MaxTS != before.MaxTS || after.SafePoint != before.SafePoint {
		t.Fatalf("%s: maxTS %d and safe point %d after the hostile requests, want %d and %d", node, after.MaxTS, after.SafePoint, before.MaxTS, before.SafePoint)
	}
	if pr := c.nodes[node].store.Prepared(); len(pr) != 1 || pr[0].TxnID != 5 {
		t.Fatalf("prepared after the hostile requests: %+v, want transaction 5 alone", pr)
	}
	if err := asMaster.Call(ctx, node, &wire.AbortRequest{TxnID: 5}, &wire.Ack{}); err != nil {
		t.Fatal(err)
	}

	// The cluster goes on: one-phase and cross-shard writes commit at the oracle's timestamps,
	// also after the node restarts and has to learn the bound again.
	check := func(v string) {
		t.Helper()
		for _, ops := range [][]wire.Op{{put(k[0], v)}, {put(k[0], v), put(k[1], v)}} {
			rep, err := c.txn(nil, ops...)
			if err != nil || rep.CommitTS > c.coord.oracle.Bound() {
				t.Fatalf("write of %d keys after the hostile requests: %+v, %v", len(ops), rep, err)
			}
		}
		if got := c.read(k...); string(got[0].Value) != v || string(got[1].Value) != v {
			t.Fatalf("read %+v, want %q on both shards", got, v)
		}
	}
	check("2")
	c.crashNode(node)
	c.startNode(node)
	if b := c.nodes[node].part.OracleBound(); b != 0 {
		t.Fatalf("a restarted node knows bound %d before it asked", b)
	}
	if err := asMaster.Call(ctx, node, hostile[0], replyTo(hostile[0])); wire.CodeOf(err) != wire.CodeBadRequest {
		t.Fatalf("a hostile read after the restart: %v, want bad_request", err)
	}
	if b := c.nodes[node].part.OracleBound(); b != c.coord.oracle.Bound() {
		t.Fatalf("the restarted node learned bound %d, want the oracle's %d", b, c.coord.oracle.Bound())
	}
	check("3")
	c.resolveAll()
}

// A node that cannot ask the master for the bound refuses a timestamp above the one it knows as
// unavailable (retryable), and takes it once the master answers again.
func TestANodeThatCannotLearnTheBoundRefusesAsUnavailable(t *testing.T) {
	c := newTestCluster(t, 2)
	k := c.keys("ub")
	node := ownerOf(c.shards, k[0])
	// Timestamps past the slack above what a fresh node knows (0), as after a long uptime.
	if err := c.coord.oracle.Observe(context.Background(), 3*TimestampSlack); err != nil {
		t.Fatal(err)
	}
	c.tr.SetFault(func(from, to string, req wire.Message) Fault {
		if _, ok := req.(*wire.OracleBoundRequest); ok {
			return DropRequest
		}
		return Deliver
	})
	if _, err := c.txn(nil, put(k[0], "1")); codeOf(err) != wire.CodeUnavailable || !strings.Contains(err.Error(), "oracle's bound") {
		t.Fatalf("a write while %s cannot reach the master: %v, want unavailable", node, err)
	}
	c.tr.SetFault(nil)
	if _, err := c.txn(nil, put(k[0], "1")); err != nil {
		t.Fatal(err)
	}
}

// replyTo returns an empty reply of the type that answers req.
func replyTo(req wire.Message) wire.Message {
	switch req.(type) {
	case *wire.CommitRequest, *wire.CommitBatchRequest, *wire.SyncRequest, *wire.SafePointRequest, *wire.AbortRequest:
		return &wire.Ack{}
	}
	return wire.NewMessage(req.MsgType() + 1)
}
