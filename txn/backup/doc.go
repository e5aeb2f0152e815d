// Package backup takes consistent backups of a kvtx cluster into one file and restores them
// into another cluster of any number of nodes.
//
// Backup reads every shard at one snapshot timestamp through the master's range reads (each
// shard waits for the prepare locks of transactions that could commit at or below it, so the
// file never holds half of a transaction) and writes a manifest (format, timestamp, the
// source cluster's shard map, per-shard key and byte counts and SHA-256 checksums), then each
// shard's records (key, value, version), zstd-compressed. Its memory is bounded by one page of
// the scan and one compressor per shard, not by the size of the store.
//
// Restore verifies the whole file first, then has the master check that the target cluster
// holds nothing, raise its oracle above the backup's timestamp, and write the keys in batches,
// routed by the target's shard map, each key at its original version and durable before the
// batch is acknowledged. A restore that fails may be run again with Force.
package backup
