package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kvtx/kvtx/txn"
)

// A soak runs an update-heavy workload against a real cluster for minutes, twice in a row on
// fresh clusters: first with MVCC GC on (a short retention), then with GC off, and samples
// every process's disk, memory and goroutines as it goes. The GC-off run shows the growth GC
// prevents; the GC-on run is held to the checks of SoakReport.Check.

// SoakConfig describes a soak. A zero field takes the default its comment gives.
type SoakConfig struct {
	// Duration is the length of each of the two runs, from the moment the cluster is up
	// (default 3m). It must exceed Retention by 5s, so that the safe point has moved.
	Duration time.Duration
	// Warmup is the start of each run whose samples the flatness check leaves out: the preload,
	// the first memtable rotations (default a quarter of Duration).
	Warmup time.Duration
	// SampleEvery is the time between two samples (default 5s).
	SampleEvery time.Duration
	// Keys is the size of the key space (default 4,000).
	Keys int
	// Clients is the number of closed-loop writers (default 16).
	Clients int
	// SmallValue and LargeValue are the two value sizes (default 100 bytes and 64 KiB);
	// LargeFraction of the written values are large (default 0.1).
	SmallValue, LargeValue int
	LargeFraction          float64
	// TxnFraction of the operations are two-key transactions across both shards; the rest are
	// one-key puts (default 0.5).
	TxnFraction float64
	// Theta is the skew of the zipfian key choice (default 0.99).
	Theta float64
	// Retention is gc.retention in the GC-on run (default 10s).
	Retention time.Duration
	// MemTableSize is the nodes' Badger memtable size, for the disk bound (default 64 MiB, the
	// size a node opens its store with).
	MemTableSize int64
	// AnonLimit bounds every node's anonymous RSS (default 200 MiB).
	AnonLimit int64
	// Growth, RSSSlack and GoroutineSlack are the flatness check: after the warm-up, a
	// process's highest RSS of the second half may exceed Growth times its highest of the first
	// half by RSSSlack, its goroutines likewise by GoroutineSlack, and its store by MemTableSize
	// (defaults 1.25, 32 MiB, 32).
	Growth         float64
	RSSSlack       int64
	GoroutineSlack int
	// WriteTarget, if set, ends each run early once every node has been written this many
	// bytes (keys and values, every version counted), so that a short soak runs until Badger
	// has flushed and compacted enough, however fast the machine is.
	WriteTarget int64
	// Timeout bounds each operation (default 30s).
	Timeout time.Duration
	// Seed seeds the key and value choices (0: from the clock).
	Seed uint64
}

// DefaultSoakConfig returns the defaults, with Warmup set from Duration.
func DefaultSoakConfig() SoakConfig { return SoakConfig{}.withDefaults() }

func (c SoakConfig) withDefaults() SoakConfig {
	setD := func(p *time.Duration, d time.Duration) {
		if *p == 0 {
			*p = d
		}
	}
	setI := func(p *int, d int) {
		if *p == 0 {
			*p = d
		}
	}
	setF := func(p *float64, d float64) {
		if *p == 0 {
			*p = d
		}
	}
	setB := func(p *int64, d int64) {
		if *p == 0 {
			*p = d
		}
	}
	setD(&c.Duration, 3*time.Minute)
	setD(&c.Warmup, c.Duration/4)
	setD(&c.SampleEvery, 5*time.Second)
	setI(&c.Keys, 4000)
	setI(&c.Clients, 16)
	setI(&c.SmallValue, 100)
	setI(&c.LargeValue, 64<<10)
	setF(&c.LargeFraction, 0.1)
	setF(&c.TxnFraction, 0.5)
	setF(&c.Theta, 0.99)
	setD(&c.Retention, 10*time.Second)
	setB(&c.MemTableSize, 64<<20)
	setB(&c.AnonLimit, 200<<20)
	setF(&c.Growth, 1.25)
	setB(&c.RSSSlack, 32<<20)
	setI(&c.GoroutineSlack, 32)
	setD(&c.Timeout, 30*time.Second)
	return c
}

// validate reports every problem of a config with its defaults set.
func (c SoakConfig) validate() error {
	var errs []string
	add := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	if c.Duration < c.Retention+5*time.Second {
		add("duration %v must exceed the retention %v by at least 5s", c.Duration, c.Retention)
	}
	if c.Warmup < 0 || c.Warmup >= c.Duration {
		add("warm-up %v must lie in [0, duration %v)", c.Warmup, c.Duration)
	}
	if c.SampleEvery <= 0 || c.SampleEvery > c.Duration/4 {
		add("sample interval %v must be positive and at most a quarter of the duration", c.SampleEvery)
	}
	if c.Keys < 10 {
		add("keys %d: want at least 10", c.Keys)
	}
	if c.Clients < 1 {
		add("clients %d: want at least 1", c.Clients)
	}
	if c.SmallValue < 1 || c.LargeValue < c.SmallValue || c.LargeValue > 1<<20 {
		add("value sizes %d and %d: want 1 <= small <= large <= 1 MiB", c.SmallValue, c.LargeValue)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"large fraction", c.LargeFraction}, {"txn fraction", c.TxnFraction}} {
		if f.v < 0 || f.v > 1 {
			add("%s %v: want a fraction in [0, 1]", f.name, f.v)
		}
	}
	if c.Theta <= 0 || c.Theta >= 1 {
		add("zipf theta %v: want it in (0, 1)", c.Theta)
	}
	if c.Growth < 1 || c.RSSSlack < 0 || c.GoroutineSlack < 0 {
		add("flatness: growth %v (want >= 1), RSS slack %d, goroutine slack %d (want >= 0)", c.Growth, c.RSSSlack, c.GoroutineSlack)
	}
	if len(errs) > 0 {
		return fmt.Errorf("bench: invalid soak config: %s", strings.Join(errs, "; "))
	}
	return nil
}

// SoakProcess is one process of a soak's cluster, as the sampler finds it.
type SoakProcess struct {
	// Name is "master" or a node's name.
	Name string
	// PID is its process id, for /proc/PID/status.
	PID int
	// DataDir is its data directory, whose size on disk is sampled.
	DataDir string
	// MetricsAddr serves its Prometheus metrics (go_goroutines).
	MetricsAddr string
}

// SoakCluster is a running cluster: the master's address and every process, the master first,
// then the nodes in shard order.
type SoakCluster struct {
	// Endpoint is the master's address, which clients dial.
	Endpoint string
	// TLS is the clients' mutual TLS (nil: plaintext, for a cluster run with --insecure).
	TLS *tls.Config
	// Processes are the master, then the nodes in shard order.
	Processes []SoakProcess
}

// StartSoakCluster starts a fresh cluster (empty data directories) of a master and two nodes
// with the given gc section and returns it with a function that stops it.
type StartSoakCluster func(ctx context.Context, gc txn.GC) (*SoakCluster, func() error, error)

// RunSoak runs the soak: the GC-on run (gc.retention = cfg.Retention) on a cluster of its own,
// then the GC-off run (gc.off) on another, with the same workload and duration (with a
// WriteTarget, the GC-off run lasts as long as the GC-on run did, at most). logf, if set,
// receives a line per run and per sample as it goes. It returns an error only when a run could
// not be made; whether the runs pass is for SoakReport.Check and CheckMechanism.
func RunSoak(ctx context.Context, cfg SoakConfig, start StartSoakCluster, logf func(format string, args ...any)) (*SoakReport, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano())
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	rep := &SoakReport{Config: cfg}
	on, err := soakOnce(ctx, cfg, txn.GC{Retention: cfg.Retention}, start, logf)
	if on != nil {
		rep.Runs = append(rep.Runs, on)
	}
	if err != nil {
		return rep, err
	}
	offCfg := cfg
	if cfg.WriteTarget > 0 && len(on.Samples) > 0 {
		// A run that stopped on its write target: the GC-off run lasts as long, at most.
		offCfg.Duration = min(cfg.Duration, on.Samples[len(on.Samples)-1].At.Round(time.Second)+time.Second)
	}
	off, err := soakOnce(ctx, offCfg, txn.GC{Off: true}, start, logf)
	if off != nil {
		rep.Runs = append(rep.Runs, off)
	}
	return rep, err
}

// soakOnce makes one run on a fresh cluster.
func soakOnce(ctx context.Context, cfg SoakConfig, gc txn.GC, start StartSoakCluster, logf func(string, ...any)) (*SoakRun, error) {
	run := &SoakRun{GC: gc}
	logf("soak: %s: starting a fresh cluster", run.Label())
	cl, stop, err := start(ctx, gc)
	if err != nil {
		return nil, fmt.Errorf("bench: soak %s: start the cluster: %w", run.Label(), err)
	}
	begin := time.Now()
	err = run.drive(ctx, cfg, cl, begin, logf)
	if serr := stop(); serr != nil && err == nil {
		err = fmt.Errorf("bench: soak %s: stop the cluster: %w", run.Label(), serr)
	}
	return run, err
}

// errSoakStopped is returned when the caller's context ends a soak early.
var errSoakStopped = errors.New("bench: soak stopped")
