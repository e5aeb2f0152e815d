package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// SuiteRun is one workload at one client count, run against every target of a suite.
type SuiteRun struct {
	Workload Workload
	Clients  int
}

// StandardRuns is the standard suite: put, get, scan, txn and cas at 1 and 64 clients, and
// YCSB A at 64. The writes come first; the keys the reads need are preloaded just before the
// first get (the scans read the same keys).
var StandardRuns = []SuiteRun{
	{WorkloadPut, 1}, {WorkloadPut, 64},
	{WorkloadTxn, 1}, {WorkloadTxn, 64},
	{WorkloadGet, 1}, {WorkloadGet, 64},
	{WorkloadScan, 1}, {WorkloadScan, 64},
	{WorkloadCAS, 1}, {WorkloadCAS, 64},
	{WorkloadYCSBA, 64},
}

// SuiteConfig describes a suite: the runs, the targets and the processes to watch.
type SuiteConfig struct {
	// Base is the configuration of every run; the suite sets Workload, Clients and Preload.
	Base Config
	// Runs are the runs, in order (default StandardRuns).
	Runs []SuiteRun
	// Targets are the targets to compare, in column order. The ratio table compares kvtx
	// with the others.
	Targets []TargetConfig
	// Etcd, if set, is the etcd server of the etcd target: the suite starts it, restarts it
	// between preloading and the first read workload (etcd 3.4 serves reads slowly for a while
	// after a burst of writes, and the restart gives it the same fresh start as the others), and
	// stops it at the end.
	Etcd *EtcdServer
	// Notes are printed under the report (e.g. why a target is missing).
	Notes []string
	// Commit identifies the kvtx code measured.
	Commit string
	// Processes are processes whose peak RSS the report shows, by name (e.g. the kvtx master
	// and nodes).
	Processes map[string]int
	// PlainProcesses are the processes of the kvtx-plain target's cluster, by name; the report
	// shows their peak RSS as "kvtx-plain NAME".
	PlainProcesses map[string]int
	// Log, if set, receives a line as each step finishes.
	Log io.Writer
}

// SuiteReport is the outcome of a suite.
type SuiteReport struct {
	Date        string `json:"date"`
	Nproc       int    `json:"nproc"`
	GOMAXPROCS  int    `json:"gomaxprocs"`
	GoVersion   string `json:"go_version"`
	Commit      string `json:"kvtx_commit,omitempty"`
	EtcdVersion string `json:"etcd_version,omitempty"`
	// Targets are the targets compared, in column order.
	Targets []string `json:"targets"`
	// Params are the parameters shared by every run.
	Params  Params    `json:"params"`
	Results []*Result `json:"results"`
	// PeakRSS is each watched process's peak resident set size in bytes (VmHWM).
	PeakRSS map[string]int64 `json:"peak_rss_bytes,omitempty"`
	// TLS compares the kvtx target with kvtx-plain, when the suite ran both.
	TLS   *TLSCost `json:"tls_vs_insecure,omitempty"`
	Notes []string `json:"notes,omitempty"`
}

func (sc *SuiteConfig) logf(format string, args ...any) {
	if sc.Log != nil {
		fmt.Fprintf(sc.Log, format+"\n", args...)
	}
}

// RunSuite runs every run against every target, interleaved (all targets for one run, then the
// next run), so that a disturbance of the machine spreads over the targets rather than hitting
// one of them. With both kvtx and kvtx-plain, each run at the most clients is measured again on
// those two, for the TLS verdict (TLSCost).
func RunSuite(ctx context.Context, sc SuiteConfig) (rep *SuiteReport, err error) {
	base := sc.Base.WithDefaults()
	if err := base.Validate(); err != nil {
		return nil, err
	}
	runs := sc.Runs
	if len(runs) == 0 {
		runs = StandardRuns
	}
	rep = &SuiteReport{
		Date:       time.Now().UTC().Format(time.RFC3339),
		Nproc:      runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		GoVersion:  runtime.Version(),
		Commit:     sc.Commit,
		Params: Params{Keys: base.Keys, ValueSize: base.ValueSize, TxnKeys: base.TxnKeys, CrossShard: base.CrossShard,
			ScanKeys: base.ScanKeys, WarmupS: base.Warmup.Seconds(), DurationS: base.Duration.Seconds(), Ops: base.Ops},
		PeakRSS: map[string]int64{},
		Notes:   append([]string(nil), sc.Notes...),
	}

	if sc.Etcd != nil {
		if err := sc.Etcd.Start(ctx); err != nil {
			return nil, err
		}
		defer func() {
			sc.Etcd.Stop()
			if rss := sc.Etcd.PeakRSS(); rss > 0 && rep != nil {
				rep.PeakRSS["etcd"] = rss
			}
		}()
	}
	targets := make([]Target, len(sc.Targets))
	defer func() {
		for _, t := range targets {
			if t != nil {
				t.Close()
			}
		}
	}()
	for i, tc := range sc.Targets {
		if targets[i], err = OpenTarget(ctx, tc); err != nil {
			return nil, err
		}
		rep.Targets = append(rep.Targets, targets[i].Name())
		if tc.Kind == TargetEtcd {
			vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			rep.EtcdVersion, _ = EtcdVersion(vctx, tc.EtcdEndpoint)
			cancel()
		}
	}

	maxClients := 0
	for _, run := range runs {
		maxClients = max(maxClients, run.Clients)
	}
	kvtx, plain := targetNamed(targets, TargetKvtx), targetNamed(targets, TargetKvtxPlain)
	var tls []TLSRun
	preloaded := false
	for _, run := range runs {
		if run.Workload.NeedsPreload() && !preloaded {
			if err := sc.preloadAll(ctx, base, targets); err != nil {
				return nil, err
			}
			preloaded = true
		}
		for _, t := range targets {
			r, err := sc.runOne(ctx, base, t, run)
			if err != nil {
				return nil, err
			}
			rep.Results = append(rep.Results, r)
		}
		if kvtx == nil || plain == nil || run.Clients != maxClients {
			continue
		}
		// The TLS verdict's second windows, in the opposite order: kvtx, kvtx-plain, (the
		// others), kvtx-plain, kvtx, so that neither of the two always runs in the other's wake.
		p2, err := sc.runOne(ctx, base, plain, run)
		if err != nil {
			return nil, err
		}
		k2, err := sc.runOne(ctx, base, kvtx, run)
		if err != nil {
			return nil, err
		}
		k1, p1 := rep.result(run.Workload, run.Clients, TargetKvtx), rep.result(run.Workload, run.Clients, TargetKvtxPlain)
		tls = append(tls, TLSRun{Workload: string(run.Workload),
			Kvtx: [2]float64{k1.Throughput, k2.Throughput}, Plain: [2]float64{p1.Throughput, p2.Throughput}})
	}
	rep.TLS = NewTLSCost(maxClients, tls)

	for prefix, procs := range map[string]map[string]int{"": sc.Processes, TargetKvtxPlain + " ": sc.PlainProcesses} {
		for name, pid := range procs {
			rss, err := PeakRSS(pid)
			if err != nil {
				rep.Notes = append(rep.Notes, fmt.Sprintf("peak RSS of %s%s unknown: %v", prefix, name, err))
				continue
			}
			rep.PeakRSS[prefix+name] = rss
		}
	}
	return rep, nil
}

// targetNamed returns the target of that name, or nil.
func targetNamed(targets []Target, name string) Target {
	for _, t := range targets {
		if t.Name() == name {
			return t
		}
	}
	return nil
}

// runOne runs run against t, measures the server CPU it cost and logs the result.
func (sc *SuiteConfig) runOne(ctx context.Context, base Config, t Target, run SuiteRun) (*Result, error) {
	cfg := base
	cfg.Workload, cfg.Clients, cfg.Preload, cfg.Distribution = run.Workload, run.Clients, false, ""
	cfg.Label = fmt.Sprintf("%-10s %-6s %2d clients", t.Name(), run.Workload, run.Clients)
	pids, of := sc.serverPIDs(t.Name())
	cpu0, start := cpuOf(pids), time.Now()
	r, err := Run(ctx, t, cfg)
	if err != nil {
		return nil, err
	}
	if cpu1 := cpuOf(pids); cpu0 >= 0 && cpu1 >= 0 && r.Throughput > 0 {
		cores := (cpu1 - cpu0).Seconds() / time.Since(start).Seconds()
		r.ServerCPU, r.ServerCPUOf = cores/r.Throughput*1e6, of
	}
	sc.logf("%-10s %-6s %2d clients: %9s ops/s  p50 %-8s p99 %-8s aborts %d  unknown %d  errors %d",
		t.Name(), run.Workload, run.Clients, formatRate(r.Throughput), formatMicros(r.Latency.P50),
		formatMicros(r.Latency.P99), r.AbortCount(), r.Unknown, r.ErrorCount())
	return r, nil
}

// serverPIDs returns the processes that serve target and a description of them: for kvtx the
// watched processes (Processes; PlainProcesses for kvtx-plain), for etcd the etcd server the
// suite runs, for badger this process, which also runs the load generator.
func (sc *SuiteConfig) serverPIDs(target string) ([]int, string) {
	switch target {
	case TargetKvtx, TargetKvtxPlain:
		procs := sc.Processes
		if target == TargetKvtxPlain {
			procs = sc.PlainProcesses
		}
		if len(procs) == 0 {
			return nil, ""
		}
		names := make([]string, 0, len(procs))
		for n := range procs {
			names = append(names, n)
		}
		sort.Strings(names)
		pids := make([]int, len(names))
		for i, n := range names {
			pids[i] = procs[n]
		}
		return pids, strings.Join(names, "+")
	case TargetEtcd:
		if sc.Etcd != nil && sc.Etcd.PID() != 0 {
			return []int{sc.Etcd.PID()}, "etcd"
		}
	case TargetBadger:
		return []int{os.Getpid()}, "store and load generator"
	}
	return nil, ""
}

// cpuOf is the CPU time used so far by pids together, or -1 if there are none or one cannot
// be read.
func cpuOf(pids []int) time.Duration {
	if len(pids) == 0 {
		return -1
	}
	var total time.Duration
	for _, pid := range pids {
		d, err := CPUTime(pid)
		if err != nil {
			return -1
		}
		total += d
	}
	return total
}

// preloadAll writes the key spaces of every read workload on every target, then restarts etcd
// if the suite runs it.
func (sc *SuiteConfig) preloadAll(ctx context.Context, base Config, targets []Target) error {
	for _, t := range targets {
		for _, w := range []Workload{WorkloadGet, WorkloadCAS} {
			cfg := base
			cfg.Workload, cfg.Distribution = w, ""
			st, err := Preload(ctx, t, cfg)
			if err != nil {
				return err
			}
			sc.logf("preloaded %d %s keys on %s in %s", st.Keys, strings.TrimSuffix(w.keyPrefix(), "/"), t.Name(), st.Elapsed.Round(time.Millisecond))
		}
	}
	if sc.Etcd == nil {
		return nil
	}
	for i, t := range targets {
		if t.Name() != TargetEtcd {
			continue
		}
		t.Close()
		targets[i] = nil
		start := time.Now()
		if err := sc.Etcd.Restart(ctx); err != nil {
			return err
		}
		sc.logf("restarted etcd after preloading in %s", time.Since(start).Round(time.Millisecond))
		nt, err := OpenTarget(ctx, sc.Targets[i])
		if err != nil {
			return err
		}
		targets[i] = nt
	}
	return nil
}

// result returns the result of workload w at c clients on target, or nil.
func (rep *SuiteReport) result(w Workload, c int, target string) *Result {
	for _, r := range rep.Results {
		if r.Workload == w && r.Clients == c && r.Target == target {
			return r
		}
	}
	return nil
}

// ratio returns a/b as "1.23x", or "-" when either is missing or b is zero.
func ratio(a, b float64, ok bool) string {
	if !ok || b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// WriteText writes the report for people: the header, every run, the ratio table and the peak
// memory of the watched processes.
func (rep *SuiteReport) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "kvtx benchmark suite, %s\n", rep.Date)
	fmt.Fprintf(w, "nproc %d, GOMAXPROCS %d, %s, kvtx commit %s, etcd %s\n", rep.Nproc, rep.GOMAXPROCS, rep.GoVersion,
		orDash(rep.Commit), orDash(rep.EtcdVersion))
	p := rep.Params
	fmt.Fprintf(w, "each run: %gs measured after %gs warm-up; %d keys, %d-byte values; txn: %d keys, cross-shard %g; scan: %d keys; ycsb-a zipfian 0.99, others uniform\n\n",
		p.DurationS, p.WarmupS, p.Keys, p.ValueSize, p.TxnKeys, p.CrossShard, p.ScanKeys)
	if err := WriteResultsTable(w, rep.Results); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if err := rep.writeRatios(w); err != nil {
		return err
	}
	if err := rep.writeTLSCost(w); err != nil {
		return err
	}
	if err := rep.writeCPU(w); err != nil {
		return err
	}
	if len(rep.PeakRSS) > 0 {
		names := make([]string, 0, len(rep.PeakRSS))
		for n := range rep.PeakRSS {
			names = append(names, n)
		}
		sort.Strings(names)
		parts := make([]string, len(names))
		for i, n := range names {
			parts[i] = fmt.Sprintf("%s %.0f MiB", n, float64(rep.PeakRSS[n])/(1<<20))
		}
		fmt.Fprintf(w, "\npeak RSS (VmHWM): %s\n", strings.Join(parts, ", "))
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "NOTE: %s\n", n)
	}
	return nil
}

// writeRatios writes throughput per target and kvtx's ratios to the others (above 1: kvtx
// does more), and p50 latencies with kvtx's ratios (above 1: kvtx is slower).
func (rep *SuiteReport) writeRatios(w io.Writer) error {
	var others []string
	hasKvtx := false
	for _, t := range rep.Targets {
		if t == TargetKvtx {
			hasKvtx = true
		} else {
			others = append(others, t)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	head := []string{"WORKLOAD", "CLIENTS"}
	for _, t := range rep.Targets {
		head = append(head, strings.ToUpper(t)+" OPS/S")
	}
	if hasKvtx {
		for _, o := range others {
			head = append(head, "KVTX/"+strings.ToUpper(o))
		}
	}
	for _, t := range rep.Targets {
		head = append(head, strings.ToUpper(t)+" P50")
	}
	if hasKvtx {
		for _, o := range others {
			head = append(head, "P50 KVTX/"+strings.ToUpper(o))
		}
	}
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	seen := map[SuiteRun]bool{}
	for _, r := range rep.Results {
		run := SuiteRun{r.Workload, r.Clients}
		if seen[run] {
			continue
		}
		seen[run] = true
		row := []string{string(run.Workload), fmt.Sprint(run.Clients)}
		get := func(t string) *Result { return rep.result(run.Workload, run.Clients, t) }
		for _, t := range rep.Targets {
			if x := get(t); x != nil {
				row = append(row, formatRate(x.Throughput))
			} else {
				row = append(row, "-")
			}
		}
		k := get(TargetKvtx)
		if hasKvtx {
			for _, o := range others {
				x := get(o)
				row = append(row, ratio(tp(k), tp(x), k != nil && x != nil))
			}
		}
		for _, t := range rep.Targets {
			if x := get(t); x != nil && x.Ops > 0 {
				row = append(row, formatMicros(x.Latency.P50))
			} else {
				row = append(row, "-")
			}
		}
		if hasKvtx {
			for _, o := range others {
				x := get(o)
				row = append(row, ratio(p50(k), p50(x), k != nil && x != nil && k.Ops > 0 && x.Ops > 0))
			}
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if hasKvtx && len(others) > 0 {
		fmt.Fprintln(w, "KVTX/X: kvtx throughput over X's (above 1: kvtx does more); P50 KVTX/X: kvtx median latency over X's (above 1: kvtx is slower)")
	}
	return nil
}

// writeCPU writes the server CPU time per operation of each target, and kvtx's ratio to
// etcd's, when the suite measured it. It is steadier than throughput on a shared machine.
func (rep *SuiteReport) writeCPU(w io.Writer) error {
	of := map[string]string{}
	for _, r := range rep.Results {
		if r.ServerCPU > 0 {
			of[r.Target] = r.ServerCPUOf
		}
	}
	if len(of) == 0 {
		return nil
	}
	var notes []string
	for _, t := range rep.Targets {
		if of[t] != "" {
			notes = append(notes, t+": "+of[t])
		}
	}
	fmt.Fprintf(w, "\nserver CPU per operation (%s)\n", strings.Join(notes, "; "))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	head := []string{"WORKLOAD", "CLIENTS"}
	for _, t := range rep.Targets {
		head = append(head, strings.ToUpper(t)+" CPU/OP")
	}
	_, withEtcd := of[TargetEtcd]
	_, withKvtx := of[TargetKvtx]
	if withEtcd && withKvtx {
		head = append(head, "CPU KVTX/ETCD")
	}
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	seen := map[SuiteRun]bool{}
	for _, r := range rep.Results {
		run := SuiteRun{r.Workload, r.Clients}
		if seen[run] {
			continue
		}
		seen[run] = true
		row := []string{string(run.Workload), fmt.Sprint(run.Clients)}
		for _, t := range rep.Targets {
			if x := rep.result(run.Workload, run.Clients, t); x != nil && x.ServerCPU > 0 {
				row = append(row, formatRate(x.ServerCPU)+"µs")
			} else {
				row = append(row, "-")
			}
		}
		if withEtcd && withKvtx {
			k, e := rep.result(run.Workload, run.Clients, TargetKvtx), rep.result(run.Workload, run.Clients, TargetEtcd)
			row = append(row, ratio(cpu(k), cpu(e), k != nil && e != nil && k.ServerCPU > 0 && e.ServerCPU > 0))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if withEtcd && withKvtx {
		fmt.Fprintln(w, "CPU KVTX/ETCD: kvtx's server CPU per operation over etcd's (above 1: kvtx spends more)")
	}
	return nil
}

func cpu(r *Result) float64 { return r.ServerCPU }

func tp(r *Result) float64 {
	if r == nil {
		return 0
	}
	return r.Throughput
}

func p50(r *Result) float64 {
	if r == nil {
		return 0
	}
	return float64(r.Latency.P50)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
