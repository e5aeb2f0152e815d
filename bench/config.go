package bench

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/kvtx/kvtx/txn"
)

// Workload names an operation mix.
type Workload string

// Workloads.
const (
	// WorkloadPut writes one key per operation.
	WorkloadPut Workload = "put"
	// WorkloadGet reads one preloaded key per operation (a linearizable read).
	WorkloadGet Workload = "get"
	// WorkloadScan reads Config.ScanKeys consecutive preloaded keys (in key order) from a
	// random start: one range read at one version, linearizable as a get is.
	WorkloadScan Workload = "scan"
	// WorkloadTxn writes Config.TxnKeys keys in one transaction, Config.CrossShard of the keys
	// after the first on other shards than the first.
	WorkloadTxn Workload = "txn"
	// WorkloadCAS is a bank transfer: read two accounts on different shards as one snapshot with
	// their versions, then move one unit in a transaction that holds only if both versions are
	// unchanged. A failed compare counts as an abort (reason compare_failed).
	WorkloadCAS Workload = "cas"
	// WorkloadYCSBA is YCSB workload A: 50% reads, 50% updates (single-key puts), zipfian keys.
	WorkloadYCSBA Workload = "ycsb-a"
	// WorkloadYCSBB is YCSB workload B: 95% reads, 5% updates, zipfian keys.
	WorkloadYCSBB Workload = "ycsb-b"
	// WorkloadYCSBC is YCSB workload C: reads only, zipfian keys.
	WorkloadYCSBC Workload = "ycsb-c"
)

// Workloads lists every workload, in the order help texts show them.
var Workloads = []Workload{WorkloadPut, WorkloadGet, WorkloadScan, WorkloadTxn, WorkloadCAS, WorkloadYCSBA, WorkloadYCSBB, WorkloadYCSBC}

// readFraction is the share of reads in a YCSB mix; -1 for the other workloads.
func (w Workload) readFraction() float64 {
	switch w {
	case WorkloadYCSBA:
		return 0.5
	case WorkloadYCSBB:
		return 0.95
	case WorkloadYCSBC:
		return 1
	}
	return -1
}

// isYCSB reports whether w is one of the YCSB mixes.
func (w Workload) isYCSB() bool { return w.readFraction() >= 0 }

// NeedsPreload reports whether w reads keys that must exist before it starts.
func (w Workload) NeedsPreload() bool {
	return w == WorkloadGet || w == WorkloadScan || w == WorkloadCAS || w.isYCSB()
}

// keyPrefix is the key space of w: the bank accounts of cas are apart from the other
// workloads' keys, whose values are opaque bytes.
func (w Workload) keyPrefix() string {
	if w == WorkloadCAS {
		return "acct/"
	}
	return "key/"
}

// MaxScanKeys bounds Config.ScanKeys: the most keys one kvtx scan request may return.
const MaxScanKeys = txn.MaxScanLimit

// Distribution says how keys are chosen.
type Distribution string

// Distributions.
const (
	// Uniform picks every key with the same probability.
	Uniform Distribution = "uniform"
	// Zipfian picks key ranks with probability proportional to 1/rank^Theta (YCSB's generator,
	// Gray et al.), the ranks scattered over the key space by a hash so that the hot keys are
	// spread over the shards.
	Zipfian Distribution = "zipfian"
)

// Config describes one benchmark run. DefaultConfig gives every field its default; in a Config
// built by hand a zero field takes the default in its comment where zero makes no sense, and the
// comment says so.
type Config struct {
	// Workload is the operation mix (default put).
	Workload Workload
	// Clients is the number of concurrent closed-loop clients (default 16; zero means 16).
	Clients int
	// Duration is the measured window (default 10s; zero means 10s). Ignored when Ops is set.
	Duration time.Duration
	// Ops, when positive, ends the run after this many operations in the measured window
	// (successful or not) instead of after Duration.
	Ops int64
	// Warmup runs the workload this long before measuring (default 1s; zero means none).
	Warmup time.Duration
	// Keys is the size of the key space (default 10,000; zero means 10,000).
	Keys int
	// ValueSize is the size of every written value in bytes (default 100; zero means 100). The
	// cas workload writes decimal balances instead.
	ValueSize int
	// TxnKeys is the number of keys of one txn-workload transaction (default 2; zero means 2).
	TxnKeys int
	// ScanKeys is the number of keys one scan-workload operation reads (default 100; zero means
	// 100): at most MaxScanKeys and the size of the key space.
	ScanKeys int
	// CrossShard is the fraction, in [0, 1], of a transaction's keys after the first that live
	// on another shard than the first (default 1: with TxnKeys 2, every transaction spans two
	// shards; zero: every transaction stays on one shard).
	CrossShard float64
	// Distribution is how keys are chosen (default: zipfian for the YCSB mixes, uniform for the
	// others).
	Distribution Distribution
	// Theta is the zipfian skew in (0, 1): the closer to 1, the hotter the hottest keys and the
	// more contention (default 0.99, YCSB's; zero means 0.99).
	Theta float64
	// Preload writes every key of the workload's key space before it starts, for workloads that
	// read (default true).
	Preload bool
	// OpTimeout bounds one operation (default 30s; zero means 30s). An operation past it is an
	// error for a read and an unknown outcome for a write.
	OpTimeout time.Duration
	// Seed seeds the key and value choices; zero means a seed from the clock.
	Seed uint64
	// Progress, if set, receives a live progress line (ops/s, p99, errors) every
	// ProgressInterval, rewritten in place with a carriage return.
	Progress io.Writer
	// ProgressInterval is the period of the progress line (default 1s; zero means 1s).
	ProgressInterval time.Duration
	// Label prefixes the progress line (default "TARGET WORKLOAD CLIENTS").
	Label string
}

// DefaultConfig returns the defaults of every field.
func DefaultConfig() Config {
	return Config{
		Workload:         WorkloadPut,
		Clients:          16,
		Duration:         10 * time.Second,
		Warmup:           time.Second,
		Keys:             10_000,
		ValueSize:        100,
		TxnKeys:          2,
		ScanKeys:         100,
		CrossShard:       1,
		Theta:            0.99,
		Preload:          true,
		OpTimeout:        30 * time.Second,
		ProgressInterval: time.Second,
	}
}

// WithDefaults returns c with the zero fields that have no meaning of their own set to their
// defaults, and the distribution resolved for the workload.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if c.Workload == "" {
		c.Workload = d.Workload
	}
	if c.Clients == 0 {
		c.Clients = d.Clients
	}
	if c.Duration == 0 {
		c.Duration = d.Duration
	}
	if c.Keys == 0 {
		c.Keys = d.Keys
	}
	if c.ValueSize == 0 {
		c.ValueSize = d.ValueSize
	}
	if c.TxnKeys == 0 {
		c.TxnKeys = d.TxnKeys
	}
	if c.ScanKeys == 0 {
		c.ScanKeys = d.ScanKeys
	}
	if c.Theta == 0 {
		c.Theta = d.Theta
	}
	if c.OpTimeout == 0 {
		c.OpTimeout = d.OpTimeout
	}
	if c.ProgressInterval == 0 {
		c.ProgressInterval = d.ProgressInterval
	}
	if c.Distribution == "" {
		c.Distribution = Uniform
		if c.Workload.isYCSB() {
			c.Distribution = Zipfian
		}
	}
	return c
}

// Validate reports every problem of c at once, or nil. Zero fields that WithDefaults would
// fill are errors: call it on c.WithDefaults().
func (c Config) Validate() error {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	known := false
	for _, w := range Workloads {
		known = known || w == c.Workload
	}
	if !known {
		add("unknown workload %q (want one of %s)", c.Workload, workloadList())
	}
	if c.Clients < 1 {
		add("clients must be at least 1, not %d", c.Clients)
	}
	if c.Duration < 0 {
		add("duration must not be negative, not %s", c.Duration)
	}
	if c.Ops < 0 {
		add("ops must not be negative, not %d", c.Ops)
	}
	if c.Warmup < 0 {
		add("warm-up must not be negative, not %s", c.Warmup)
	}
	if c.Keys < 2 {
		add("keys must be at least 2, not %d", c.Keys)
	}
	if c.ValueSize < 1 {
		add("value size must be at least 1 byte, not %d", c.ValueSize)
	}
	if c.TxnKeys < 1 || c.TxnKeys > 512 {
		add("keys per transaction must be in [1, 512], not %d", c.TxnKeys)
	}
	if c.TxnKeys > c.Keys/2 {
		add("keys per transaction (%d) must be at most half the key space (%d keys)", c.TxnKeys, c.Keys)
	}
	if c.ScanKeys < 1 || c.ScanKeys > MaxScanKeys {
		add("keys per scan must be in [1, %d], not %d", MaxScanKeys, c.ScanKeys)
	}
	if c.Workload == WorkloadScan && c.ScanKeys > c.Keys {
		add("keys per scan (%d) must be at most the key space (%d keys)", c.ScanKeys, c.Keys)
	}
	if !(c.CrossShard >= 0 && c.CrossShard <= 1) {
		add("cross-shard fraction must be in [0, 1], not %v", c.CrossShard)
	}
	if c.Distribution != "" && c.Distribution != Uniform && c.Distribution != Zipfian {
		add("unknown distribution %q (want uniform or zipfian)", c.Distribution)
	}
	if !(c.Theta > 0 && c.Theta < 1) {
		add("zipfian theta must be in (0, 1), not %v", c.Theta)
	}
	if c.OpTimeout < 0 {
		add("operation timeout must not be negative, not %s", c.OpTimeout)
	}
	if len(errs) == 0 {
		return nil
	}
	return errors.New("bench: " + strings.Join(errs, "; "))
}

func workloadList() string {
	s := make([]string, len(Workloads))
	for i, w := range Workloads {
		s[i] = string(w)
	}
	return strings.Join(s, ", ")
}
