package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvtx/kvtx/cmd/internal/cluster"
	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/client"
	"github.com/kvtx/kvtx/wire"
)

// A client that sends more than the master may hold in flight (limits.max_inflight_bytes)
// gets "busy" for what does not fit, and such a request writes nothing; the master's memory
// for requests stays within the budget; and once there is room, requests go through again.
// Here the budget is two 900 KiB writes, and the writes hold it because their node is paused.
func TestRequestsPastTheMastersInFlightBudgetAreRefusedAsBusy(t *testing.T) {
	c := prepare(t, cluster.Config{Nodes: 2, Limits: txn.Limits{MaxTxnBytes: 1 << 20, MaxFrameBytes: 2 << 20, MaxInFlightBytes: 2 << 20}})
	c.startAll()
	ctx := stepCtx(t)
	shards := c.Config().ShardMap()
	node := shards.Names()[0]
	var keys []string
	for i := 0; len(keys) < 8; i++ {
		if k := fmt.Sprintf("busy/%d", i); shards.Shard([]byte(k)) == 0 {
			keys = append(keys, k)
		}
	}
	value := bytes.Repeat([]byte{'b'}, 900<<10)

	c.Pause(node)
	codes := make([]wire.Code, len(keys))
	var wg sync.WaitGroup
	for i, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := c.dialAs(ctx, "client", "client", txn.MasterName, wire.DialOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			var rep wire.TxnReply
			err = conn.Call(ctx, &wire.TxnRequest{Ops: []wire.Op{{Kind: wire.OpPut, Key: []byte(k), Value: value}}}, &rep)
			codes[i] = wire.CodeOf(err)
			if codes[i] == wire.CodeBusy && !strings.Contains(err.Error(), "retry shortly") {
				t.Errorf("busy refusal says %q", err)
			}
		}()
	}
	// The master holds at most its budget while the writes wait for the paused node.
	var peak float64
	for done := waitGroupDone(&wg); ; {
		peak = max(peak, metricValue(t, c.MetricsAddr(txn.MasterName), "kvtx_inflight_request_bytes"))
		select {
		case <-done:
		case <-time.After(20 * time.Millisecond):
			continue
		}
		break
	}
	c.Resume(node)
	if peak > 2<<20 {
		t.Errorf("the master held %.0f bytes of requests, over its 2 MiB budget", peak)
	}
	busy := 0
	for _, code := range codes {
		if code == wire.CodeBusy {
			busy++
		}
	}
	if busy == 0 {
		t.Fatalf("no request was refused as busy: %v", codes)
	}

	cl := c.client()
	for i, k := range keys {
		kv, err := cl.Get(ctx, []byte(k))
		switch {
		case codes[i] == wire.CodeBusy && !errors.Is(err, client.ErrNotFound):
			t.Errorf("%s was refused as busy but reads %d bytes, %v", k, len(kv.Value), err)
		case codes[i] == wire.CodeOK && (err != nil || !bytes.Equal(kv.Value, value)):
			t.Errorf("%s was committed but reads %d bytes, %v", k, len(kv.Value), err)
		}
	}
	// With room again, the same writes go through, through the client's retries too.
	if _, err := cl.Put(ctx, []byte(keys[0]), value); err != nil {
		t.Fatalf("a write once the node is back: %v", err)
	}
	if n := metricValue(t, c.MetricsAddr(txn.MasterName), "kvtx_inflight_request_bytes"); n != 0 {
		t.Errorf("the master holds %.0f bytes of requests with none in flight", n)
	}
	t.Logf("%d of %d writes refused as busy; the master held at most %.0f KiB", busy, len(keys), peak/1024)
}

// waitGroupDone returns a channel closed once wg is done.
func waitGroupDone(wg *sync.WaitGroup) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}
