package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kvtx/kvtx/bench"
	"github.com/kvtx/kvtx/txn/client"
)

func init() {
	extraCommands = append(extraCommands, benchCommand())
}

func benchCommand() *cli.Command {
	d := bench.DefaultConfig()
	return &cli.Command{
		Name:  "bench",
		Usage: "run a closed-loop benchmark against kvtx, a local Badger store or etcd",
		UsageText: "kvctl bench [--workload W] [--clients C] [--duration D] [--target kvtx|badger|etcd] [-o json]\n" +
			"kvctl bench --sweep 1,4,16,64 [--out DIR] ...     (one run per client count, writes JSON and an SVG chart)\n" +
			"kvctl bench --suite standard [--targets kvtx,badger,etcd] [--etcd-bin etcd] ...   (what `make bench` runs)",
		Description: "Workloads: put (one key), get (preloaded keys), scan (--scan-keys consecutive preloaded keys from a\n" +
			"random start, one range read), txn (--txn-keys keys, --cross-shard of them on\n" +
			"other shards), cas (bank transfer: snapshot two accounts on two shards, then a transaction with\n" +
			"version compares on both; a failed compare is an abort), ycsb-a (50% reads, 50% updates),\n" +
			"ycsb-b (95/5), ycsb-c (reads only); the YCSB mixes choose keys zipfian, the others uniform.\n" +
			"Throughput counts successful operations; latencies are theirs; aborts are counted by reason,\n" +
			"unknown outcomes apart. --timeout bounds each operation. A live progress line is shown when\n" +
			"stdout is a terminal.",
		Flags: append(commonFlags(),
			&cli.StringFlag{Name: "workload", Aliases: []string{"w"}, Value: string(d.Workload), Usage: "`W`: put, get, scan, txn, cas, ycsb-a, ycsb-b or ycsb-c"},
			&cli.IntFlag{Name: "clients", Aliases: []string{"c"}, Value: d.Clients, Usage: "concurrent closed-loop clients"},
			&cli.DurationFlag{Name: "duration", Aliases: []string{"d"}, Value: d.Duration, Usage: "measured window"},
			&cli.Int64Flag{Name: "ops", Usage: "stop after this many measured operations instead of --duration"},
			&cli.DurationFlag{Name: "warmup", Value: d.Warmup, Usage: "run this long before measuring (0: no warm-up)"},
			&cli.StringFlag{Name: "target", Aliases: []string{"t"}, Value: bench.TargetKvtx, Usage: "kvtx (the cluster at --endpoint), badger (a local kv.Store in --data-dir) or etcd (at --etcd-endpoint)"},
			&cli.IntFlag{Name: "keys", Value: d.Keys, Usage: "size of the key space (contention grows as it shrinks)"},
			&cli.IntFlag{Name: "value-size", Value: d.ValueSize, Usage: "bytes per written value"},
			&cli.IntFlag{Name: "txn-keys", Value: d.TxnKeys, Usage: "keys per transaction (txn workload)"},
			&cli.IntFlag{Name: "scan-keys", Value: d.ScanKeys, Usage: "keys per range read (scan workload; at most 10000)"},
			&cli.Float64Flag{Name: "cross-shard", Value: d.CrossShard, Usage: "fraction of a transaction's keys after the first that live on other shards (txn workload)"},
			&cli.StringFlag{Name: "distribution", Usage: "uniform or zipfian (default: zipfian for ycsb-*, uniform otherwise)"},
			&cli.Float64Flag{Name: "zipf-theta", Value: d.Theta, Usage: "zipfian skew in (0,1): closer to 1 is hotter keys, more contention"},
			&cli.BoolFlag{Name: "preload", Value: true, Usage: "write every key before workloads that read (--preload=false to skip)"},
			&cli.IntFlag{Name: "conns", Value: 1, Usage: "connections (clients of txn/client or etcd) the bench clients share, round robin"},
			&cli.StringFlag{Name: "etcd-endpoint", Value: "127.0.0.1:2379", Usage: "etcd client `ADDR`"},
			&cli.StringFlag{Name: "data-dir", Usage: "Badger `DIR` of the badger target (default: a temporary directory)"},
			&cli.Uint64Flag{Name: "seed", Usage: "seed of the key and value choices (0: from the clock)"},
			&cli.StringFlag{Name: "sweep", Usage: "run once per client count in `LIST` (e.g. 1,4,16,64) and write JSON and an SVG chart to --out"},
			&cli.StringFlag{Name: "out", Value: ".", Usage: "`DIR` for the sweep's files (sweep-TARGET-WORKLOAD.json and .svg) and the suite's (suite.json, suite.txt)"},
			&cli.StringFlag{Name: "suite", Usage: "run a suite: `standard` (put, get, scan, txn, cas at 1 and 64 clients, ycsb-a at 64) on every --targets"},
			&cli.StringFlag{Name: "targets", Value: "kvtx,badger,etcd", Usage: "suite: targets to compare, in column order (kvtx-plain: the cluster at --plain-endpoint)"},
			&cli.StringFlag{Name: "plain-endpoint", Usage: "suite: the master `ADDR` of a second cluster started with --insecure, the kvtx-plain target; with kvtx it gives the TLS verdict"},
			&cli.StringFlag{Name: "etcd-bin", Usage: "suite: start this etcd binary on --etcd-endpoint itself (and restart it after preloading); without it a running etcd is used"},
			&cli.StringFlag{Name: "etcd-data-dir", Usage: "suite: etcd's data `DIR` with --etcd-bin (default: a temporary directory)"},
			&cli.StringFlag{Name: "watch", Usage: "suite: report the peak RSS of these processes, `NAME=PID,...`"},
			&cli.StringFlag{Name: "watch-plain", Usage: "suite: --watch for the kvtx-plain cluster's processes, `NAME=PID,...`"},
			&cli.StringFlag{Name: "commit", Usage: "suite: the kvtx commit measured, for the header"},
			&cli.StringSliceFlag{Name: "note", Usage: "suite: a note to print under the report (repeatable)"},
		),
		Action: runBench,
	}
}

func benchConfig(c *cli.Context) (bench.Config, bench.TargetConfig, error) {
	cfg := bench.DefaultConfig()
	cfg.Workload = bench.Workload(c.String("workload"))
	cfg.Clients = c.Int("clients")
	cfg.Duration = c.Duration("duration")
	cfg.Ops = c.Int64("ops")
	cfg.Warmup = c.Duration("warmup")
	cfg.Keys = c.Int("keys")
	cfg.ValueSize = c.Int("value-size")
	cfg.TxnKeys = c.Int("txn-keys")
	cfg.ScanKeys = c.Int("scan-keys")
	cfg.CrossShard = c.Float64("cross-shard")
	cfg.Distribution = bench.Distribution(c.String("distribution"))
	cfg.Theta = c.Float64("zipf-theta")
	cfg.Preload = c.Bool("preload")
	cfg.Seed = c.Uint64("seed")
	timeout, err := time.ParseDuration(opt(c, "timeout"))
	if err != nil {
		return cfg, bench.TargetConfig{}, usage("bad --timeout: %v", err)
	}
	cfg.OpTimeout = timeout
	if cfg.Clients < 1 || cfg.Keys < 1 || cfg.ValueSize < 1 || cfg.TxnKeys < 1 || cfg.ScanKeys < 1 || cfg.Duration <= 0 {
		// Zero would silently mean the default in the library; on the command line it is a mistake.
		return cfg, bench.TargetConfig{}, usage("--clients, --keys, --value-size, --txn-keys, --scan-keys and --duration must be positive")
	}
	if isTerminal(c) {
		cfg.Progress = c.App.Writer
	}
	addr, err := endpoint(c)
	if err != nil {
		return cfg, bench.TargetConfig{}, err
	}
	tc := bench.TargetConfig{
		Kind:         c.String("target"),
		Endpoint:     addr,
		EtcdEndpoint: c.String("etcd-endpoint"),
		DataDir:      c.String("data-dir"),
		Conns:        c.Int("conns"),
	}
	if err := cfg.WithDefaults().Validate(); err != nil {
		return cfg, tc, usage("%v", err)
	}
	if tc.Kind == "" || tc.Kind == bench.TargetKvtx {
		if err := kvtxTLS(c, &tc); err != nil {
			return cfg, tc, err
		}
	}
	return cfg, tc, nil
}

// kvtxTLS gives a kvtx target the TLS of the flags (none with --insecure).
func kvtxTLS(c *cli.Context, tc *bench.TargetConfig) error {
	sec, err := loadSecurity(c)
	if err != nil {
		return err
	}
	tc.TLS = sec.clientOptions(client.Options{}).TLS
	return nil
}

// isTerminal reports whether the command writes to a terminal.
func isTerminal(c *cli.Context) bool {
	f, ok := c.App.Writer.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func runBench(c *cli.Context) error {
	if c.NArg() > 0 {
		return usage("bench takes no arguments, only flags (got %q)", c.Args().First())
	}
	switch opt(c, "output") {
	case "text", "json":
	default:
		return usage("--output must be text or json, not %q", opt(c, "output"))
	}
	cfg, tc, err := benchConfig(c)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch {
	case c.String("suite") != "":
		return runSuite(ctx, c, cfg)
	case c.String("sweep") != "":
		return runSweep(ctx, c, cfg, tc)
	}
	t, err := bench.OpenTarget(ctx, tc)
	if err != nil {
		return err
	}
	defer t.Close()
	r, err := bench.Run(ctx, t, cfg)
	if err != nil {
		return err
	}
	if opt(c, "output") == "json" {
		jsonOut(c.App.Writer, r)
		return nil
	}
	return r.WriteText(c.App.Writer)
}

func runSweep(ctx context.Context, c *cli.Context, cfg bench.Config, tc bench.TargetConfig) error {
	counts, err := bench.ParseClientCounts(c.String("sweep"))
	if err != nil {
		return usage("%v", err)
	}
	t, err := bench.OpenTarget(ctx, tc)
	if err != nil {
		return err
	}
	defer t.Close()
	text := opt(c, "output") == "text"
	rep, err := bench.Sweep(ctx, t, cfg, counts, func(r *bench.Result) {
		if text {
			fmt.Fprintf(c.App.Writer, "%d clients: %s ops/s, p99 %.3gms\n", r.Clients, strconv.FormatFloat(r.Throughput, 'f', 0, 64), float64(r.Latency.P99)/1000)
		}
	})
	if err != nil {
		return err
	}
	base := filepath.Join(c.String("out"), fmt.Sprintf("sweep-%s-%s", rep.Target, rep.Workload))
	if err := writeFile(base+".json", func(f *os.File) error { return writeJSON(f, rep) }); err != nil {
		return err
	}
	if err := writeFile(base+".svg", func(f *os.File) error { return rep.WriteSVG(f) }); err != nil {
		return err
	}
	if !text {
		jsonOut(c.App.Writer, rep)
		return nil
	}
	fmt.Fprintln(c.App.Writer)
	if err := bench.WriteResultsTable(c.App.Writer, rep.Results); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "wrote %s.json and %s.svg\n", base, base)
	return nil
}

func runSuite(ctx context.Context, c *cli.Context, cfg bench.Config) error {
	if s := c.String("suite"); s != "standard" {
		return usage("unknown --suite %q: the only suite is standard", s)
	}
	sc := bench.SuiteConfig{Base: cfg, Commit: c.String("commit"), Notes: c.StringSlice("note")}
	sc.Log = c.App.Writer // a line per run as it finishes
	if opt(c, "output") == "json" {
		sc.Log = c.App.ErrWriter
	}
	var err error
	if sc.Processes, err = parseWatch(c, "watch"); err != nil {
		return err
	}
	if sc.PlainProcesses, err = parseWatch(c, "watch-plain"); err != nil {
		return err
	}
	var tmp string
	defer func() {
		if tmp != "" {
			os.RemoveAll(tmp)
		}
	}()
	tempDir := func() (string, error) {
		if tmp == "" {
			var err error
			if tmp, err = os.MkdirTemp("", "kvtx-bench-suite-"); err != nil {
				return "", fmt.Errorf("bench: %w", err)
			}
		}
		return tmp, nil
	}
	addr, err := endpoint(c)
	if err != nil {
		return err
	}
	for _, name := range strings.Split(c.String("targets"), ",") {
		tc := bench.TargetConfig{Kind: strings.TrimSpace(name), Endpoint: addr, EtcdEndpoint: c.String("etcd-endpoint"), Conns: c.Int("conns")}
		switch tc.Kind {
		case bench.TargetKvtx:
			if err := kvtxTLS(c, &tc); err != nil {
				return err
			}
		case bench.TargetKvtxPlain:
			if tc.Endpoint = c.String("plain-endpoint"); tc.Endpoint == "" {
				return usage("the kvtx-plain target needs --plain-endpoint, the master of a cluster started with --insecure")
			}
		case bench.TargetBadger:
			tc.DataDir = c.String("data-dir")
			if tc.DataDir == "" {
				dir, err := tempDir()
				if err != nil {
					return err
				}
				tc.DataDir = filepath.Join(dir, "badger")
			}
		case bench.TargetEtcd:
			if bin := c.String("etcd-bin"); bin != "" {
				dataDir := c.String("etcd-data-dir")
				if dataDir == "" {
					dir, err := tempDir()
					if err != nil {
						return err
					}
					dataDir = filepath.Join(dir, "etcd", "data")
				}
				host, port, err := net.SplitHostPort(tc.EtcdEndpoint)
				n, perr := strconv.Atoi(port)
				if err != nil || perr != nil {
					return usage("--etcd-endpoint must be HOST:PORT with --etcd-bin, not %q", tc.EtcdEndpoint)
				}
				sc.Etcd = &bench.EtcdServer{Bin: bin, DataDir: dataDir, ClientAddr: tc.EtcdEndpoint, PeerAddr: net.JoinHostPort(host, strconv.Itoa(n+1))}
			} else {
				sc.Notes = append(sc.Notes, "etcd was not restarted after preloading (no --etcd-bin): its get numbers may suffer from the write burst")
			}
		default:
			return usage("unknown target %q in --targets (want kvtx, kvtx-plain, badger, etcd)", tc.Kind)
		}
		sc.Targets = append(sc.Targets, tc)
	}
	rep, err := bench.RunSuite(ctx, sc)
	if err != nil {
		return err
	}
	if out := c.String("out"); c.IsSet("out") {
		if err := os.MkdirAll(out, 0o755); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		if err := writeFile(filepath.Join(out, "suite.json"), func(f *os.File) error { return writeJSON(f, rep) }); err != nil {
			return err
		}
		if err := writeFile(filepath.Join(out, "suite.txt"), func(f *os.File) error { return rep.WriteText(f) }); err != nil {
			return err
		}
	}
	if opt(c, "output") == "json" {
		jsonOut(c.App.Writer, rep)
		return nil
	}
	fmt.Fprintln(c.App.Writer)
	return rep.WriteText(c.App.Writer)
}

// parseWatch reads the flag's NAME=PID,... list of processes to watch.
func parseWatch(c *cli.Context, flag string) (map[string]int, error) {
	procs := map[string]int{}
	w := c.String(flag)
	if w == "" {
		return procs, nil
	}
	for _, f := range strings.Split(w, ",") {
		name, p, ok := strings.Cut(f, "=")
		pid, err := strconv.Atoi(p)
		if !ok || name == "" || err != nil || pid < 1 {
			return nil, usage("--%s wants NAME=PID,..., not %q", flag, w)
		}
		procs[name] = pid
	}
	return procs, nil
}

func writeJSON(f *os.File, v any) error {
	enc := json.NewEncoder(f)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeFile creates path and fills it with write.
func writeFile(path string, write func(*os.File) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("bench: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bench: write %s: %w", path, err)
	}
	return nil
}
