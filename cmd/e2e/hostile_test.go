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
