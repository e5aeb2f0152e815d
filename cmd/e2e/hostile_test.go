package e2e

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/kvtx/kvtx/bench"
	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/client"
	"github.com/kvtx/kvtx/wire"
)

// One Get of 1,024 copies of a key holding 1 MiB once took a node from 18 MB to 3.7 GB, four
// at once to 8 GB. Through the master, and sent straight to the node, it is now refused with
// "reply too large" while the node reads the value once: its peak memory stays where it was.
func TestAGetOfOneBigKeyListedManyTimesIsRefusedCheaply(t *testing.T) {
	c := newCluster(t, 2)
	cl := c.client()
	ctx := stepCtx(t)
	big := bytes.Repeat([]byte{'v'}, 1<<20)
	key := []byte(c.keysOnEveryShard("hostile")[0]) // on the first shard
	node := c.Config().ShardMap().Names()[0]
	put, err := cl.Put(ctx, key, big)
	if err != nil {
		t.Fatal(err)
	}
	before := peakRSS(t, c.PID(node))
	keys := make([][]byte, 1024)
	for i := range keys {
		keys[i] = key
	}
	for range 4 {
		_, _, err := cl.Snapshot(ctx, keys...)
		if !errors.Is(err, client.ErrInvalid) || !strings.Contains(err.Error(), "reply too large") {
			t.Fatalf("a get of 1,024 copies of a 1 MiB key through the master: %v, want reply too large", err)
		}
	}
	conn, err := c.dialAs(ctx, txn.MasterName, "master", node, wire.DialOptions{ClusterID: c.Config().ShardMap().ID()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var rep wire.GetReply
	err = conn.Call(ctx, &wire.GetRequest{Keys: keys, ReadTS: put.CommitTS}, &rep)
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeTooLarge {
		t.Fatalf("the same get sent straight to %s: %v, want too large", node, err)
	}
	if after := peakRSS(t, c.PID(node)); after > before+64<<20 {
		t.Fatalf("%s's peak RSS went from %d MiB to %d MiB answering the gets", node, before>>20, after>>20)
	}
	if vals, _, err := cl.Snapshot(ctx, key, key); err != nil || len(vals) != 2 || !bytes.Equal(vals[1].Value, big) {
		t.Fatalf("a get of the key twice: %v", err)
	}
}

// peakRSS is bench.PeakRSS, failing the test on an error.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	n, err := bench.PeakRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// One Get sent to a node at read timestamp 2^64-2 once raised its maxTS for good: one-phase
// writes then failed with "timestamps exhausted", a cross-shard commit took 2^64-1 and the
// master's counter wrapped. Sent now with the master's own certificate (past every permission
// check), it and its Apply, Prepare, Commit and safe-point companions are refused with
// bad_request because no master issued the timestamp; the node's maxTS stays, and writes on
// one shard and across shards go on committing, also after the node restarts.
func TestATimestampNoMasterIssuedCannotPoisonANode(t *testing.T) {
	c := newCluster(t, 2)
	cl := c.client()
	ctx := stepCtx(t)
	keys := c.keysOnEveryShard("poison")
	node := c.Config().ShardMap().Names()[0]
	const hostile = 1<<64 - 2
	ops := []wire.Op{{Kind: wire.OpPut, Key: []byte(keys[0]), Value: []byte("hostile")}}
	requests := []wire.Message{
		&wire.GetRequest{Keys: [][]byte{[]byte(keys[0])}, ReadTS: hostile},
		&wire.ApplyRequest{TxnID: hostile, TS: hostile, Ops: ops},
		&wire.PrepareRequest{TxnID: hostile, StartTS: hostile, Ops: ops, Participants: []string{node}},
		&wire.CommitRequest{TxnID: 1, CommitTS: hostile},
		&wire.SafePointRequest{SafePoint: hostile},
	}
	check := func(round string) {
		t.Helper()
		conn, err := c.dialAs(ctx, txn.MasterName, "master", node, wire.DialOptions{ClusterID: c.Config().ShardMap().ID()})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		maxTS := func() uint64 {
			var st wire.StatusReply
			if err := conn.Call(ctx, &wire.StatusRequest{}, &st); err != nil || len(st.Processes) != 1 {
				t.Fatalf("status of %s: %v", node, err)
			}
			return st.Processes[0].MaxTS
		}
		before := maxTS()
		for _, req := range requests {
			err := conn.Call(ctx, req, nil)
			var we *wire.Error
			if !errors.As(err, &we) || we.Code != wire.CodeBadRequest || !strings.Contains(we.Message, "beyond the timestamp oracle's bound") {
				t.Errorf("%s: %s at %d from the master's certificate: %v, want bad_request: beyond the oracle's bound", round, req.MsgType(), uint64(hostile), err)
			}
		}
		if after := maxTS(); after != before {
			t.Fatalf("%s: %s's maxTS went from %d to %d", round, node, before, after)
		}
		for _, ks := range [][]string{keys[:1], keys} {
			var tx []wire.Op
			for _, k := range ks {
				tx = append(tx, wire.Op{Kind: wire.OpPut, Key: []byte(k), Value: []byte(round)})
			}
			rep, err := cl.Txn(ctx, nil, tx...)
			if err != nil || rep.CommitTS >= 1<<63 {
				t.Fatalf("%s: a write of %d keys after the hostile requests: %+v, %v", round, len(ks), rep, err)
			}
		}
		for _, kv := range snapshot(t, cl, keys) {
			if string(kv.Value) != round {
				t.Fatalf("%s: %q = %q, want %q", round, kv.Key, kv.Value, round)
			}
		}
	}
	check("first")
	c.stop(node)
	c.start(node)
	check("after restart")
}
