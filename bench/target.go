package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/kvtx/kvtx/txn"
)

// Target is a system under test: a kvtx cluster, a local kv.Store or etcd. It hands out one
// Session per benchmark client.
type Target interface {
	// Name is the target's short name: kvtx, badger or etcd.
	Name() string
	// Shards is the shard map the target spreads keys over, or nil if it is not sharded (then
	// the workloads choose keys as they would on the default two-node kvtx cluster, so that
	// every target sees the same key choices).
	Shards() *txn.ShardMap
	// NewSession returns the session of benchmark client i; sessions may share connections.
	NewSession(ctx context.Context, i int) (Session, error)
	// Close releases everything the target holds. Sessions must be closed first.
	Close() error
}

// Versioned is a key as read in a snapshot: its value and version (0 when not found).
type Versioned struct {
	Value   []byte
	Version uint64
	Found   bool
}

// Session performs the benchmark's operations for one client. It is used by one goroutine at a
// time. Every error it returns should be an *OpError, so that the runner can tell aborts
// (nothing written) from unknown outcomes and other errors; any other error counts as an error
// with reason "error".
type Session interface {
	// Put writes key durably.
	Put(ctx context.Context, key, value []byte) error
	// Get reads key's latest committed value, linearizably; found is false for a missing key.
	Get(ctx context.Context, key []byte) (found bool, err error)
	// Scan reads the keys of [start, end), at most limit of them, in key order at one version,
	// linearizably (as Get), and returns how many it read.
	Scan(ctx context.Context, start, end []byte, limit int) (int, error)
	// Txn writes keys[i] = values[i] for every i atomically and durably.
	Txn(ctx context.Context, keys, values [][]byte) error
	// Snapshot reads keys as one atomic snapshot, with their versions.
	Snapshot(ctx context.Context, keys [][]byte) ([]Versioned, error)
	// CondTxn writes keys[i] = values[i] atomically if every key's version still equals
	// versions[i] (0: missing); otherwise it writes nothing and returns an abort with reason
	// ReasonCompareFailed.
	CondTxn(ctx context.Context, keys [][]byte, versions []uint64, values [][]byte) error
	// Close releases the session.
	Close() error
}

// Outcome classifies a failed operation.
type Outcome int

// Outcomes of a failed operation.
const (
	// Failed: an error that is neither an abort nor an unknown outcome (e.g. a read that timed
	// out, a key not found where one was preloaded).
	Failed Outcome = iota
	// Aborted: nothing was written and a retry is safe (conflict, failed compare, unavailable).
	Aborted
	// Unknown: a write that may or may not have committed.
	Unknown
)

// ReasonCompareFailed is the abort reason of a conditional transaction whose compare did not
// hold, on every target.
const ReasonCompareFailed = "compare_failed"

// OpError is a failed operation: its outcome, a short reason to count it under (conflict,
// compare_failed, unavailable, not_found, timeout, ...) and the underlying error.
type OpError struct {
	Outcome Outcome
	Reason  string
	Err     error
}

// Error implements error.
func (e *OpError) Error() string {
	if e.Err == nil {
		return "bench: " + e.Reason
	}
	return fmt.Sprintf("bench: %s: %v", e.Reason, e.Err)
}

// Unwrap returns the underlying error.
func (e *OpError) Unwrap() error { return e.Err }

// classify returns the outcome and reason of err.
func classify(err error) (Outcome, string) {
	var oe *OpError
	if errors.As(err, &oe) {
		return oe.Outcome, oe.Reason
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return Failed, "timeout"
	}
	return Failed, "error"
}

// TargetConfig says which target to open and where it is.
type TargetConfig struct {
	// Kind is kvtx (default), kvtx-plain, badger or etcd.
	Kind string
	// Endpoint is the kvtx master's address (kvtx; default 127.0.0.1:9000).
	Endpoint string
	// EtcdEndpoint is etcd's client address, host:port or a URL (etcd; default 127.0.0.1:2379).
	EtcdEndpoint string
	// DataDir is the Badger directory (badger; default: a temporary directory removed by Close).
	DataDir string
	// Conns is the number of connections the sessions share, round robin (kvtx and etcd); zero
	// means one. A kvtx client pipelines every request of its goroutines over one connection,
	// as etcd's gRPC connection multiplexes streams, and one shared client is how applications
	// use either; on two cores one shared connection also measured faster than one per session
	// (for kvtx at 64 clients, by 1.1x to 1.5x).
	Conns int
	// DialTimeout bounds connecting (default 5s).
	DialTimeout time.Duration
	// TLS is the kvtx client's mutual TLS (a certs.Loader's ClientConfig("master")); nil
	// is plaintext, for a cluster started with --insecure.
	TLS *tls.Config
}

// Target kinds.
const (
	TargetKvtx   = "kvtx"
	TargetBadger = "badger"
	TargetEtcd   = "etcd"
	// TargetKvtxPlain is a second kvtx cluster, started with --insecure, beside the mutual-TLS
	// cluster of the kvtx target: a suite with both measures what TLS costs.
	TargetKvtxPlain = "kvtx-plain"
)

// OpenTarget connects to (or, for badger, opens) the target described by tc.
func OpenTarget(ctx context.Context, tc TargetConfig) (Target, error) {
	if tc.DialTimeout == 0 {
		tc.DialTimeout = 5 * time.Second
	}
	if tc.Conns < 0 {
		return nil, fmt.Errorf("bench: conns must not be negative, not %d", tc.Conns)
	}
	switch tc.Kind {
	case "", TargetKvtx:
		return openKvtx(ctx, tc)
	case TargetKvtxPlain:
		if tc.TLS != nil {
			return nil, fmt.Errorf("bench: the %s target is plaintext (a cluster started with --insecure) and takes no TLS", TargetKvtxPlain)
		}
		return openKvtx(ctx, tc)
	case TargetBadger:
		return openBadger(tc)
	case TargetEtcd:
		return openEtcd(ctx, tc)
	}
	return nil, fmt.Errorf("bench: unknown target %q (want kvtx, kvtx-plain, badger or etcd)", tc.Kind)
}

// defaultShards is the shard map of the default two-node cluster, which the workloads use for an
// unsharded target.
func defaultShards() *txn.ShardMap { return txn.DefaultConfig().ShardMap() }
