package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// quick returns a config for short deterministic runs: a fixed number of operations, no
// warm-up, a fixed seed.
func quick(w Workload, clients int, ops int64) Config {
	cfg := DefaultConfig()
	cfg.Workload, cfg.Clients, cfg.Ops, cfg.Warmup, cfg.Seed = w, clients, ops, 0, 42
	cfg.Keys = 200
	return cfg
}

func TestRunCountsEveryOperationUnderItsOutcome(t *testing.T) {
	f := newFakeTarget()
	f.inject = func(n int64) error {
		switch {
		case n%10 == 0:
			return &OpError{Outcome: Aborted, Reason: "conflict", Err: errors.New("locked")}
		case n%25 == 1:
			return &OpError{Outcome: Unknown, Reason: "unknown_outcome"}
		case n%49 == 0:
			return errors.New("plain error")
		}
		return nil
	}
	r, err := Run(context.Background(), f, quick(WorkloadPut, 4, 1000))
	if err != nil {
		t.Fatal(err)
	}
	if r.Attempts != 1000 {
		t.Fatalf("%d attempts, want exactly the 1000 operations asked for", r.Attempts)
	}
	// Operations 1..1000: 100 multiples of 10 abort; 40 of the form 25k+1 are unknown; the
	// multiples of 49 that are not multiples of 10 (20 of them, minus 490 and 980) fail.
	if r.Aborts["conflict"] != 100 || r.Unknown != 40 || r.Errors["error"] != 18 {
		t.Errorf("aborts %v, unknown %d, errors %v; want conflict 100, unknown 40, error 18", r.Aborts, r.Unknown, r.Errors)
	}
	if r.Ops+r.AbortCount()+r.Unknown+r.ErrorCount() != r.Attempts {
		t.Errorf("ops %d + aborts %d + unknown %d + errors %d != attempts %d", r.Ops, r.AbortCount(), r.Unknown, r.ErrorCount(), r.Attempts)
	}
	if len(r.ByOp) != 1 || r.ByOp[0].Op != "put" || r.ByOp[0].Ops != r.Ops {
		t.Errorf("by op %+v, want one put entry with all %d successes", r.ByOp, r.Ops)
	}
	if r.Latency.P50 < 1 || r.Latency.Max < r.Latency.P99 || r.Throughput <= 0 {
		t.Errorf("latency %+v, throughput %v: want positive, ordered values", r.Latency, r.Throughput)
	}
	for _, k := range []string{"abort conflict", "unknown unknown_outcome", "error error"} {
		if r.ErrorSamples[k] == "" {
			t.Errorf("no sample message for %q in %v", k, r.ErrorSamples)
		}
	}
}

func TestRunPreloadsTheKeysReadWorkloadsNeed(t *testing.T) {
	f := newFakeTarget()
	r, err := Run(context.Background(), f, quick(WorkloadGet, 4, 500))
	if err != nil {
		t.Fatal(err)
	}
	if r.Ops != 500 || r.ErrorCount() != 0 {
		t.Errorf("%d gets succeeded, errors %v; want all 500 to find their key", r.Ops, r.Errors)
	}
	if len(f.data) != 200 {
		t.Errorf("%d keys stored, want the 200 preloaded", len(f.data))
	}

	cold := newFakeTarget()
	cfg := quick(WorkloadGet, 2, 100)
	cfg.Preload = false
	r, err = Run(context.Background(), cold, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Errors["not_found"] != 100 {
		t.Errorf("without preloading: errors %v, want not_found 100", r.Errors)
	}
}

func TestCASWorkloadKeepsTheBankBalanced(t *testing.T) {
	f := newFakeTarget()
	cfg := quick(WorkloadCAS, 16, 3000)
	cfg.Keys = 20 // hot accounts: transfers collide
	r, err := Run(context.Background(), f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ks, _ := newKeySpace(WorkloadCAS.keyPrefix(), 20, defaultShards(), Uniform, 0.99)
	if got, want := f.sumBalances(ks), int64(20*initialBalance); got != want {
		t.Errorf("total balance %d after the transfers, want %d", got, want)
	}
	if r.Ops+r.Aborts[ReasonCompareFailed] != r.Attempts || r.ErrorCount() != 0 {
		t.Errorf("ops %d, aborts %v, errors %v, attempts %d: want every attempt committed or compare_failed", r.Ops, r.Aborts, r.Errors, r.Attempts)
	}
}

func TestTxnWorkloadSpansShardsAsConfigured(t *testing.T) {
	for _, cross := range []float64{1, 0} {
		f := newFakeTarget()
		cfg := quick(WorkloadTxn, 4, 300)
		cfg.TxnKeys, cfg.CrossShard = 3, cross
		if _, err := Run(context.Background(), f, cfg); err != nil {
			t.Fatal(err)
		}
		m := defaultShards()
		for _, keys := range f.txns {
			shards := map[int]bool{}
			for _, k := range keys {
				shards[m.Shard([]byte(k))] = true
			}
			want := 2
			if cross == 0 {
				want = 1
			}
			if len(keys) != 3 || len(shards) != want {
				t.Fatalf("cross-shard %v: transaction %v touches %d shards, want 3 keys on %d", cross, keys, len(shards), want)
			}
		}
	}
}

func TestYCSBMixesReadsAndUpdatesInProportion(t *testing.T) {
	for _, c := range []struct {
		w          Workload
		minR, maxR float64
	}{{WorkloadYCSBA, 0.45, 0.55}, {WorkloadYCSBB, 0.92, 0.98}, {WorkloadYCSBC, 1, 1}} {
		r, err := Run(context.Background(), newFakeTarget(), quick(c.w, 4, 4000))
		if err != nil {
			t.Fatal(err)
		}
		if len(r.ByOp) != 2 || r.ByOp[0].Op != "read" || r.ByOp[1].Op != "update" {
			t.Fatalf("%s: by op %+v, want read and update", c.w, r.ByOp)
		}
		share := float64(r.ByOp[0].Ops) / float64(r.Ops)
		if share < c.minR || share > c.maxR || r.ErrorCount() != 0 {
			t.Errorf("%s: %.3f reads (errors %v), want between %v and %v", c.w, share, r.Errors, c.minR, c.maxR)
		}
		if r.Params.Distribution != Zipfian {
			t.Errorf("%s ran with %s keys, want zipfian by default", c.w, r.Params.Distribution)
		}
	}
}

func TestDurationRunMeasuresAfterTheWarmUpAndStops(t *testing.T) {
	f := newFakeTarget()
	f.delay = time.Millisecond
	cfg := quick(WorkloadPut, 3, 0)
	cfg.Duration, cfg.Warmup = 150*time.Millisecond, 50*time.Millisecond
	var progress bytes.Buffer
	var mu sync.Mutex
	cfg.Progress = writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return progress.Write(p) })
	cfg.ProgressInterval = 20 * time.Millisecond
	r, err := Run(context.Background(), f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Elapsed != 0.15 || r.Params.WarmupS != 0.05 {
		t.Errorf("elapsed %v s after %v s warm-up, want the configured 0.15 and 0.05", r.Elapsed, r.Params.WarmupS)
	}
	if r.Ops == 0 || r.Attempts != r.Ops || f.calls.Load() <= r.Attempts {
		t.Errorf("%d ops of %d attempts, %d calls: want some measured ops and unmeasured warm-up calls", r.Ops, r.Attempts, f.calls.Load())
	}
	mu.Lock()
	out := progress.String()
	mu.Unlock()
	if !strings.Contains(out, "fake put 3 clients") || !strings.Contains(out, "ops/s") || !strings.HasSuffix(out, "\r\x1b[K") {
		t.Errorf("progress output %q: want labelled lines and a cleared line at the end", out)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestRunStopsWhenTheContextEnds(t *testing.T) {
	f := newFakeTarget()
	f.delay = time.Millisecond
	cfg := quick(WorkloadPut, 2, 0)
	cfg.Duration = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(30 * time.Millisecond); cancel() }()
	if _, err := Run(ctx, f, cfg); !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want an error wrapping context.Canceled", err)
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	cfg := Config{Workload: "range", Clients: -1, Keys: 1, ValueSize: -5, TxnKeys: 9, ScanKeys: MaxScanKeys + 1, CrossShard: 2, Distribution: "normal", Theta: 1.5}
	err := cfg.WithDefaults().Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad config")
	}
	for _, want := range []string{"bench: ", `unknown workload "range"`, "clients", "keys must be at least 2", "value size", "half the key space", "keys per scan must be in [1, 10000]", "cross-shard", `"normal"`, "theta"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig is invalid: %v", err)
	}
	// A scan longer than the key space is refused for the scan workload only.
	small := quick(WorkloadScan, 1, 1)
	small.Keys = 50
	if err := small.WithDefaults().Validate(); err == nil || !strings.Contains(err.Error(), "keys per scan (100) must be at most the key space (50 keys)") {
		t.Errorf("scan of 100 keys over 50: %v", err)
	}
	small.Workload = WorkloadGet
	if err := small.WithDefaults().Validate(); err != nil {
		t.Errorf("a get over 50 keys with the default scan length: %v", err)
	}
}

func TestScanWorkloadReadsRangesOfConsecutivePreloadedKeys(t *testing.T) {
	f := newFakeTarget()
	r, err := Run(context.Background(), f, quick(WorkloadScan, 4, 300))
	if err != nil {
		t.Fatal(err)
	}
	if r.Ops != 300 || r.ErrorCount() != 0 || r.Params.ScanKeys != 100 || len(r.ByOp) != 1 || r.ByOp[0].Op != "scan" {
		t.Fatalf("%d scans succeeded (errors %v %v), params %+v, by op %+v: want 300 scans of 100 keys", r.Ops, r.Errors, r.ErrorSamples, r.Params, r.ByOp)
	}
	if len(f.scans) != 300 {
		t.Fatalf("%d scans reached the target, want 300", len(f.scans))
	}
	starts := map[int]bool{}
	for _, keys := range f.scans {
		if len(keys) != 100 {
			t.Fatalf("a scan read %d keys, want 100", len(keys))
		}
		first, err := strconv.Atoi(strings.TrimPrefix(keys[0], "key/"))
		if err != nil {
			t.Fatal(err)
		}
		for i, k := range keys {
			if want := fmt.Sprintf("key/%010d", first+i); k != want {
				t.Fatalf("scan from key %d: key %d is %s, want %s", first, i, k, want)
			}
		}
		starts[first] = true
	}
	if len(starts) < 50 {
		t.Errorf("%d distinct starts in 300 scans of a 200-key space: want random starts", len(starts))
	}
	if !strings.Contains(r.Describe(), "100 keys per scan") {
		t.Errorf("description %q does not give the scan length", r.Describe())
	}

	// Without preloading a range holds fewer keys than asked for: every scan is an error.
	cold := newFakeTarget()
	cfg := quick(WorkloadScan, 2, 50)
	cfg.Preload = false
	if r, err = Run(context.Background(), cold, cfg); err != nil {
		t.Fatal(err)
	}
	if r.Errors["short_scan"] != 50 {
		t.Errorf("without preloading: errors %v, want short_scan 50", r.Errors)
	}
}
