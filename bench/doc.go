// Package bench is kvtx's benchmark harness: workloads (put, get, txn, cas and YCSB-like mixes
// A, B and C over uniform or zipfian keys), a closed-loop runner with warm-up that records
// latencies in HDR histograms, reports (a table for people, JSON for machines), a sweep over
// client counts with a hand-drawn SVG chart, and the standard suite that `make bench` runs.
//
// The same operations run against three targets with the same durability (every acknowledged
// write is fsynced, with group commit): a kvtx cluster through txn/client, one local kv.Store
// (Badger with kvtx's group syncer, no network), and etcd through its v3 client.
//
// The library has no flags: `kvctl bench` binds its flags to Config, TargetConfig and
// SuiteConfig, and calls Run, Sweep or RunSuite.
//
// Counting rules. A run has C clients, each a loop that issues one operation, waits for its
// outcome, and issues the next (closed loop: no think time, no retries). Only operations that
// start and finish inside the measured window count; the warm-up before it is run and thrown
// away. Throughput counts successful operations; an aborted operation (a conflict, a failed
// compare, a node unavailable: nothing was written) is counted under its reason, an operation
// that may or may not have committed is counted as unknown, and anything else is an error.
// Latencies are those of successful operations.
package bench
