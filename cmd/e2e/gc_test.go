package e2e

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kvtx/kvtx/cmd/internal/cluster"
	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/client"
)

// With a GC retention of a second, a read at a version older than that soon fails with a clear
// "compacted" error, from kvctl and from the Go client, while reads of the present go on; the
// nodes keep their safe point across a restart.
func TestVersionsOlderThanTheRetentionAreCompacted(t *testing.T) {
	c := prepare(t, cluster.Config{Nodes: 2, GC: txn.GC{Retention: time.Second}})
	c.startAll()
	cl := c.client()
	ctx := stepCtx(t)
	first, err := cl.Put(ctx, []byte("gc/k"), []byte("v1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Put(ctx, []byte("gc/k"), []byte("v2")); err != nil {
		t.Fatal(err)
	}
	at := strconv.FormatUint(first.CommitTS, 10)
	waitFor(t, 20*time.Second, "a read at the first version refused as compacted", func() (bool, string) {
		out, errOut, code := c.kvctl("get", "--at", at, "gc/k")
		return code == 4 && strings.Contains(errOut, "compacted") && strings.Contains(errOut, "GC safe point"),
			fmt.Sprintf("exit %d, stdout %q, stderr %q", code, out, errOut)
	})
	if _, err := cl.ReadAt(ctx, first.CommitTS, []byte("gc/k")); !errors.Is(err, client.ErrCompacted) {
		t.Fatalf("client read below the safe point: %v, want ErrCompacted", err)
	}
	if out, errOut, code := c.kvctl("get", "gc/k"); code != 0 || strings.TrimSpace(out) != "v2" {
		t.Fatalf("read of the present: exit %d, %q, %q", code, out, errOut)
	}
	for _, name := range []string{"master", "node1", "node2"} {
		if v := safePointMetric(t, c.MetricsAddr(name)); v <= first.CommitTS {
			t.Fatalf("%s exports kvtx_gc_safe_point %d, want above the compacted version %d", name, v, first.CommitTS)
		}
	}
	if age := metricValue(t, c.MetricsAddr("master"), "kvtx_gc_safe_point_age_seconds"); age < 1 {
		t.Fatalf("kvtx_gc_safe_point_age_seconds %v, want at least the retention (1s)", age)
	}
	procs, state := nodeStatus(c) // kvctl status -o json
	for _, name := range []string{"node1", "node2"} {
		if p := procs[name]; p.SafePoint <= first.CommitTS {
			t.Fatalf("kvctl status reports %s's safe point %d, want above %d: %s", name, p.SafePoint, first.CommitTS, state)
		}
	}
	// A node keeps its safe point durably: asked directly after a restart, it still refuses.
	c.stop("node1")
	c.stop("node2")
	c.start("node1")
	c.start("node2")
	c.stop("master")
	c.start("master")
	cl = c.client()
	if _, err := cl.ReadAt(ctx, first.CommitTS, []byte("gc/k")); !errors.Is(err, client.ErrCompacted) {
		t.Fatalf("read below the safe point after every process restarted: %v, want ErrCompacted", err)
	}
}

// safePointMetric scrapes kvtx_gc_safe_point from a process's metrics endpoint.
func safePointMetric(t *testing.T, addr string) uint64 {
	t.Helper()
	return uint64(metricValue(t, addr, "kvtx_gc_safe_point"))
}

// metricValue scrapes an unlabelled gauge from a process's metrics endpoint.
func metricValue(t *testing.T, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s %q: %v", name, v, err)
			}
			return f
		}
	}
	t.Fatalf("%s exports no %s", addr, name)
	return 0
}
