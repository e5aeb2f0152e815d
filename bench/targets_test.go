package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/certs"
	"github.com/kvtx/kvtx/txn/server"
)

// freePorts returns n distinct free TCP ports on 127.0.0.1 (free when it returns: another
// process could take one before the test listens on it, which tests accept).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close() // held until all are chosen, so that none comes up twice
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// startCluster runs a master and two nodes in this process on free ports, over mutual TLS with
// certificates made for them, and returns how a client reaches the master.
func startCluster(t *testing.T) TargetConfig { return startClusterWith(t, false) }

// startClusterWith is startCluster, or with insecure a plaintext cluster (--insecure), reached
// as the kvtx-plain target.
func startClusterWith(t *testing.T, insecure bool) TargetConfig {
	t.Helper()
	dir := t.TempDir()
	ports := freePorts(t, 3)
	cfg := txn.Config{Master: txn.Process{Listen: fmt.Sprintf("127.0.0.1:%d", ports[0]), DataDir: filepath.Join(dir, "master")}}
	for i := 1; i <= 2; i++ {
		cfg.Nodes = append(cfg.Nodes, txn.Process{Name: fmt.Sprintf("node%d", i), Listen: fmt.Sprintf("127.0.0.1:%d", ports[i]), DataDir: filepath.Join(dir, fmt.Sprintf("node%d", i))})
	}
	cfg.TLS.Dir = filepath.Join(dir, "certs")
	cfg = cfg.WithDefaults()
	opts := server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Insecure: insecure}
	tc := TargetConfig{Kind: TargetKvtxPlain, Endpoint: cfg.Master.Listen}
	if !insecure {
		if err := certs.Init(cfg.TLS.Dir, cfg, certs.Options{}); err != nil {
			t.Fatal(err)
		}
		cl, err := certs.NewLoader(certs.FilesFor(cfg.TLS.Dir, certs.DefaultClient), certs.LoaderOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tc.Kind, tc.TLS = TargetKvtx, cl.ClientConfig(txn.MasterName)
	}
	ctx := context.Background()
	for _, n := range cfg.Nodes {
		node, err := server.StartNode(ctx, cfg, n.Name, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { node.Shutdown(context.Background()) })
	}
	m, err := server.StartMaster(ctx, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown(context.Background()) })
	return tc
}

// checkEveryWorkload runs every workload briefly against t (scans of 20 of the 40 keys),
// checks that nothing failed but aborts (a scan that reads fewer keys than its range holds
// fails), and that the cas transfers kept the total balance.
func checkEveryWorkload(t *testing.T, tg Target) {
	t.Helper()
	ctx := context.Background()
	for _, w := range Workloads {
		cfg := quick(w, 4, 120)
		cfg.Keys, cfg.ScanKeys = 40, 20
		r, err := Run(ctx, tg, cfg)
		if err != nil {
			t.Fatalf("%s: %v", w, err)
		}
		if r.ErrorCount() != 0 || r.Unknown != 0 || r.Ops == 0 || r.Attempts != 120 {
			t.Errorf("%s on %s: %d ok of %d, aborts %v, unknown %d, errors %v %v", w, tg.Name(), r.Ops, r.Attempts, r.Aborts, r.Unknown, r.Errors, r.ErrorSamples)
		}
		for reason := range r.Aborts {
			if w != WorkloadCAS && w != WorkloadTxn {
				t.Errorf("%s on %s aborted (%s): only transactions may abort here", w, tg.Name(), reason)
			}
		}
	}
	// The bank: every transfer moved one unit between two of the 40 accounts, or nothing.
	ks, err := newKeySpace(WorkloadCAS.keyPrefix(), 40, shardsOf(tg), Uniform, 0.99)
	if err != nil {
		t.Fatal(err)
	}
	keys := make([][]byte, ks.n)
	for i := range keys {
		keys[i] = ks.key(i)
	}
	sess, err := tg.NewSession(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	vs, err := sess.Snapshot(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, v := range vs {
		total += balance(v)
	}
	if total != 40*initialBalance {
		t.Errorf("%s: total balance %d, want %d", tg.Name(), total, 40*initialBalance)
	}
}

func shardsOf(t Target) *txn.ShardMap {
	if m := t.Shards(); m != nil {
		return m
	}
	return defaultShards()
}

func TestBadgerTargetRunsEveryWorkload(t *testing.T) {
	tg, err := OpenTarget(context.Background(), TargetConfig{Kind: TargetBadger, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	checkEveryWorkload(t, tg)
}

func TestKvtxTargetRunsEveryWorkloadAgainstACluster(t *testing.T) {
	tc := startCluster(t)
	tc.Conns = 2
	tg, err := OpenTarget(context.Background(), tc)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if m := tg.Shards(); m == nil || strings.Join(m.Names(), ",") != "node1,node2" {
		t.Fatalf("shard map %v, want node1,node2 from the master's status", m)
	}
	checkEveryWorkload(t, tg)
}

// suiteTestWindow is each run's measured window in the suite tests: long enough that every run
// completes operations on a loaded machine (in CI, one 100 ms run of one client over TLS
// completed none, most likely its one put still waiting for an fsync).
const suiteTestWindow = 500 * time.Millisecond

func TestSuiteComparesTargetsAndRecordsPeakRSS(t *testing.T) {
	tc := startCluster(t)
	base := DefaultConfig()
	base.Duration, base.Warmup, base.Keys = suiteTestWindow, 50*time.Millisecond, 100
	var log bytes.Buffer
	rep, err := RunSuite(context.Background(), SuiteConfig{
		Base:      base,
		Runs:      []SuiteRun{{WorkloadPut, 1}, {WorkloadGet, 2}},
		Targets:   []TargetConfig{tc, {Kind: TargetBadger, DataDir: t.TempDir()}},
		Processes: map[string]int{"self": os.Getpid()},
		Commit:    "test",
		Log:       &log,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 4 || strings.Join(rep.Targets, ",") != "kvtx,badger" {
		t.Fatalf("%d results for targets %v, want 2 runs on kvtx and badger", len(rep.Results), rep.Targets)
	}
	for _, r := range rep.Results {
		if r.ErrorCount() != 0 || r.Ops == 0 {
			t.Errorf("%s %s: %d ops, errors %v %v", r.Target, r.Workload, r.Ops, r.Errors, r.ErrorSamples)
		}
	}
	if rep.PeakRSS["self"] <= 0 {
		t.Errorf("peak RSS %v, want this process's", rep.PeakRSS)
	}
	words := strings.Join(strings.Fields(log.String()), " ") // the log pads its columns
	for _, want := range []string{"preloaded 100 key keys on kvtx", "preloaded 100 acct keys on badger", "badger get 2 clients"} {
		if !strings.Contains(words, want) {
			t.Errorf("suite log lacks %q:\n%s", want, log.String())
		}
	}
	var out bytes.Buffer
	if err := rep.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "KVTX/BADGER") {
		t.Errorf("report lacks the ratio column:\n%s", out.String())
	}
}

func TestSuiteComparesTLSWithInsecure(t *testing.T) {
	secure, plain := startCluster(t), startClusterWith(t, true)
	var log bytes.Buffer
	if _, err := OpenTarget(context.Background(), TargetConfig{Kind: TargetKvtxPlain, Endpoint: plain.Endpoint, TLS: secure.TLS}); err == nil {
		t.Fatal("a kvtx-plain target with TLS opened: it must be refused")
	}
	base := DefaultConfig()
	base.Duration, base.Warmup, base.Keys = suiteTestWindow, 50*time.Millisecond, 100
	rep, err := RunSuite(context.Background(), SuiteConfig{
		Base:           base,
		Runs:           []SuiteRun{{WorkloadPut, 1}, {WorkloadTxn, 4}, {WorkloadPut, 4}},
		Targets:        []TargetConfig{secure, plain},
		Processes:      map[string]int{"self": os.Getpid()},
		PlainProcesses: map[string]int{"self": os.Getpid()},
		Log:            &log,
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rep.Targets, ",") != "kvtx,kvtx-plain" || len(rep.Results) != 6 {
		t.Fatalf("targets %v, %d results: want kvtx and kvtx-plain, 3 runs each", rep.Targets, len(rep.Results))
	}
	for _, r := range rep.Results {
		if r.ErrorCount() != 0 || r.Ops == 0 {
			t.Errorf("%s %s: %d ops, errors %v %v", r.Target, r.Workload, r.Ops, r.Errors, r.ErrorSamples)
		}
	}
	// Each run at the most clients is measured again, kvtx-plain first, for the TLS verdict.
	var order []string
	for _, l := range strings.Split(log.String(), "\n") {
		if f := strings.Fields(l); len(f) > 2 && (f[1] == "put" || f[1] == "txn") {
			order = append(order, f[0]+" "+f[1]+" "+f[2])
		}
	}
	want := "kvtx put 1, kvtx-plain put 1, kvtx txn 4, kvtx-plain txn 4, kvtx-plain txn 4, kvtx txn 4, " +
		"kvtx put 4, kvtx-plain put 4, kvtx-plain put 4, kvtx put 4"
	if got := strings.Join(order, ", "); got != want {
		t.Errorf("runs in the order %s, want %s", got, want)
	}
	c := rep.TLS
	if c == nil || c.Clients != 4 || len(c.Runs) != 2 || c.Runs[0].Workload != "txn" || c.Runs[1].Workload != "put" {
		t.Fatalf("TLS comparison %+v: want txn and put at 4 clients", c)
	}
	k, p, put := rep.result(WorkloadPut, 4, TargetKvtx), rep.result(WorkloadPut, 4, TargetKvtxPlain), c.Runs[1]
	if put.Kvtx[0] != k.Throughput || put.Plain[0] != p.Throughput || put.Kvtx[1] <= 0 || put.Plain[1] <= 0 {
		t.Errorf("put windows %+v: want the suite's own runs (%v, %v ops/s) first, then a second of each", put, k.Throughput, p.Throughput)
	}
	if got, want := put.Ratio, (put.Kvtx[0]+put.Kvtx[1])/(put.Plain[0]+put.Plain[1]); got != want {
		t.Errorf("put ratio %v, want %v", got, want)
	}
	if rep.PeakRSS["kvtx-plain self"] <= 0 {
		t.Errorf("peak RSS %v lacks the plain cluster's processes", rep.PeakRSS)
	}
	var out bytes.Buffer
	if err := rep.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"KVTX/KVTX-PLAIN", "TLS vs --insecure at 4 clients", "TLS goal (at most 15% lower throughput at 4 clients): "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestEtcdTargetRunsEveryWorkloadAndSurvivesARestart(t *testing.T) {
	if _, err := exec.LookPath("etcd"); err != nil {
		t.Fatal("the etcd binary is required (Debian package etcd-server; .ci/run installs it)")
	}
	ports := freePorts(t, 2)
	dir := t.TempDir()
	srv := &EtcdServer{DataDir: filepath.Join(dir, "data"), ClientAddr: fmt.Sprintf("127.0.0.1:%d", ports[0]), PeerAddr: fmt.Sprintf("127.0.0.1:%d", ports[1])}
	ctx := context.Background()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	tc := TargetConfig{Kind: TargetEtcd, EtcdEndpoint: srv.ClientAddr}
	tg, err := OpenTarget(ctx, tc)
	if err != nil {
		t.Fatal(err)
	}
	checkEveryWorkload(t, tg)
	tg.Close()

	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := EtcdVersion(ctx, srv.ClientAddr); err != nil || v == "" {
		t.Errorf("etcd version after restart: %q, %v", v, err)
	}
	tg, err = OpenTarget(ctx, tc)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	cfg := quick(WorkloadGet, 2, 50)
	cfg.Keys, cfg.Preload = 40, false
	r, err := Run(ctx, tg, cfg)
	if err != nil || r.Ops != 50 {
		t.Errorf("gets after the restart: %v, %+v: want the preloaded keys still there", err, r)
	}
	if srv.PeakRSS() <= 0 {
		t.Errorf("no peak RSS for etcd")
	}
}

func TestPeakRSSReadsVmHWM(t *testing.T) {
	rss, err := PeakRSS(os.Getpid())
	if err != nil || rss < 1<<20 {
		t.Errorf("PeakRSS(self) = %d, %v: want at least a MiB", rss, err)
	}
	if _, err := PeakRSS(1 << 30); err == nil || !strings.HasPrefix(err.Error(), "bench: ") {
		t.Errorf("PeakRSS of no process: %v, want a bench: error", err)
	}
}
