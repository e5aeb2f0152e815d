package e2e

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kvtx/kvtx/cmd/internal/cluster"
	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/client"
)

// A node over its disk quota refuses new writes with a clear "space exceeded" (kvctl exits 5),
// one-shard and cross-shard alike, also after a restart, while reads and the other node's
// writes go on and the alarm shows in its metrics and in kvctl status. GC is off at first, so
// nothing can be freed; once the operator turns it on, the safe point passes the overwritten
// versions, the node reclaims their space by itself and accepts writes again.
func TestANodeOverItsQuotaRefusesWritesUntilTheGCFreesSpace(t *testing.T) {
	const quota = 16 << 20
	c := prepare(t, cluster.Config{Nodes: 2, GC: txn.GC{Off: true}, Storage: txn.StorageConfig{QuotaBytes: quota}})
	c.startAll()
	cl := c.client()
	ctx := stepCtx(t)
	sm := c.Config().ShardMap()
	var full []string // keys of node1, overwritten until it is full
	for i := 0; len(full) < 5; i++ {
		if k := fmt.Sprintf("quota/%d", i); sm.Shard([]byte(k)) == 0 {
			full = append(full, k)
		}
	}
	small, other := full[4], c.keysOnEveryShard("quota/other")[1]
	if _, err := cl.Put(ctx, []byte(small), []byte("small")); err != nil {
		t.Fatal(err)
	}

	rng := rand.New(rand.NewChaCha8([32]byte{2}))
	val := make([]byte, 256<<10)
	latest := map[string][]byte{}
	var refused error
	for i := 0; refused == nil; i++ {
		if i == 400 { // 100 MiB, six times the quota
			t.Fatalf("400 writes of 256 KiB to node1 accepted under a quota of %d bytes", quota)
		}
		for j := range val {
			val[j] = byte(rng.Uint32())
		}
		k := full[i%4]
		if _, err := cl.Put(ctx, []byte(k), val); errors.Is(err, client.ErrSpaceExceeded) {
			refused = err
		} else if err != nil {
			t.Fatalf("write %d: %v", i, err)
		} else {
			latest[k] = slices.Clone(val)
		}
	}
	if msg := refused.Error(); !strings.Contains(msg, "node node1: space exceeded") || !strings.Contains(msg, "storage.quota_bytes") {
		t.Fatalf("the refusal does not say which node is full and why: %v", refused)
	}
	var ce *client.Error
	if !errors.As(refused, &ce) || ce.Retryable() || errors.Is(refused, client.ErrAborted) {
		t.Fatalf("the refusal is %v, want a space_exceeded error that is not retryable at once", refused)
	}

	checkRefused := func(when string) {
		t.Helper()
		for _, args := range [][]string{{"put", full[0], "x"}, {"del", full[0]}} {
			out, errOut, code := c.kvctl(args...)
			if code != 5 || !strings.HasPrefix(errOut, "kvctl: space exceeded, nothing written") || !strings.Contains(errOut, "node node1") ||
				strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Fatalf("%s: kvctl %s: exit %d, stdout %q, stderr %q; want exit 5 and one line naming node1", when, args[0], code, out, errOut)
			}
		}
		if _, err := cl.Txn(ctx, nil, client.Put([]byte(full[0]), []byte("x")), client.Put([]byte(other), []byte("x"))); !errors.Is(err, client.ErrSpaceExceeded) {
			t.Fatalf("%s: a cross-shard write touching node1: %v, want ErrSpaceExceeded", when, err)
		}
		if out, errOut, code := c.kvctl("get", small); code != 0 || strings.TrimSpace(out) != "small" {
			t.Fatalf("%s: read from the full node: exit %d, %q, %q", when, code, out, errOut)
		}
		for k, v := range latest {
			kv, err := cl.Get(ctx, []byte(k))
			if err != nil || !slices.Equal(kv.Value, v) {
				t.Fatalf("%s: read of %s from the full node: %v (%d bytes), want the last value written", when, k, err, len(kv.Value))
			}
		}
		if kv, err := cl.Get(ctx, []byte(other)); !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("%s: the refused cross-shard transaction left %s = %q (%v) on node2", when, other, kv.Value, err)
		}
	}
	checkRefused("over the quota")
	if _, err := cl.Put(ctx, []byte(c.keysOnEveryShard("quota/node2")[1]), []byte("x")); err != nil {
		t.Fatalf("a write to node2 while node1 is full: %v", err)
	}

	if v := metricValue(t, c.MetricsAddr("node1"), `kvtx_storage_alarm{alarm="nospace"}`); v != 1 {
		t.Fatalf("node1 exports kvtx_storage_alarm %v, want 1", v)
	}
	if v := metricValue(t, c.MetricsAddr("node2"), `kvtx_storage_alarm{alarm="nospace"}`); v != 0 {
		t.Fatalf("node2 exports kvtx_storage_alarm %v, want 0", v)
	}
	if q, used := metricValue(t, c.MetricsAddr("node1"), "kvtx_storage_quota_bytes"), metricValue(t, c.MetricsAddr("node1"), "kvtx_storage_used_bytes"); q != quota || used < quota {
		t.Fatalf("node1 exports a quota of %v and %v bytes used, want %d and at least as much", q, used, quota)
	}
	procs, state := nodeStatus(c)
	if !slices.Equal(procs["node1"].Alarms, []string{txn.AlarmNoSpace}) || len(procs["node2"].Alarms) != 0 || procs["node1"].QuotaBytes != quota {
		t.Fatalf("kvctl status -o json: want the nospace alarm on node1 alone: %s", state)
	}
	if out, errOut, code := c.kvctl("status"); code != 0 || !strings.Contains(out, "node1: ALARM NOSPACE") || strings.Contains(out, "node2: ALARM") {
		t.Fatalf("kvctl status: exit %d, %q, %q; want the alarm of node1 shown", code, out, errOut)
	}

	// The alarm is not kept on disk; a restarted node measures itself before it serves.
	c.stop("node1")
	c.start("node1")
	ctx = stepCtx(t)
	checkRefused("after node1 restarted")

	// The operator turns GC on: the master's first safe point is above every version written,
	// so node1 may reclaim all but the newest of each key.
	cfg := c.Config()
	cfg.GC = txn.GC{Retention: time.Second}
	if err := cluster.WriteConfig(c.ConfigPath(), cfg); err != nil {
		t.Fatal(err)
	}
	c.stop("master")
	c.start("master")
	cl, ctx = c.client(), stepCtx(t)
	waitFor(t, 60*time.Second, "node1's space alarm cleared by the GC", func() (bool, string) {
		v := metricValue(t, c.MetricsAddr("node1"), `kvtx_storage_alarm{alarm="nospace"}`)
		used := metricValue(t, c.MetricsAddr("node1"), "kvtx_storage_used_bytes")
		return v == 0, fmt.Sprintf("alarm %v, %v bytes used of %d", v, used, quota)
	})
	if used := metricValue(t, c.MetricsAddr("node1"), "kvtx_storage_used_bytes"); used >= quota*0.95 {
		t.Fatalf("node1 takes %v bytes after its alarm cleared, want below 95%% of %d", used, quota)
	}
	for k, v := range latest {
		kv, err := cl.Get(ctx, []byte(k))
		if err != nil || !slices.Equal(kv.Value, v) {
			t.Fatalf("read of %s after the reclaim: %v (%d bytes), want the last value written", k, err, len(kv.Value))
		}
	}
	if out, errOut, code := c.kvctl("put", full[0], "accepted again"); code != 0 {
		t.Fatalf("write after the alarm cleared: exit %d, %q, %q", code, out, errOut)
	}
	if out, _, _ := c.kvctl("get", full[0]); strings.TrimSpace(out) != "accepted again" {
		t.Fatalf("read after the write: %q", out)
	}
}
