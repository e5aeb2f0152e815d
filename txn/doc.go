// Package txn is kvtx's transaction protocol: the master's coordinator (router, timestamp
// oracle, presumed-abort two-phase commit with a durable decision log, recovery) and the node's
// participant (one-phase apply, prepare/commit/abort over a kv.Store, termination of in-doubt
// transactions by asking the master).
//
// The protocol never opens a socket itself: coordinator and participant talk through the
// Transport interface. WireTransport carries messages over kvtx's msgpack-over-TCP protocol;
// InmemTransport delivers them in process, with injected loss, duplication and delay, for tests.
// Nor does it touch files, metrics or the environment: it records through CoordinatorMetrics,
// ParticipantMetrics and TxnLog, keeps decisions in a DecisionStore, measures every timeout on
// a Runtime and calls Hooks at its named points. Package txn/server supplies the real ones
// (config files, Prometheus, the transaction-log file, the Badger decision log).
//
// Timestamps follow the Percolator rule. The master's oracle hands out strictly increasing
// timestamps; a transaction's start timestamp is its id; its commit timestamp is allocated only
// after every participant has voted yes, and is at least every participant's MinCommitTS (above
// every read that participant has served), so no write ever lands at or below a timestamp that a
// reader has already been served at. The oracle then observes the commit timestamp, so every
// read that starts after the client is told "committed" sees the write.
package txn
