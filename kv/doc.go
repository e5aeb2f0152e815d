// Package kv is the storage engine of one kvtx shard: multi-version user
// data in a managed-mode Badger database, an in-memory lock table, durable
// prepare records for two-phase commit, one-phase conditional writes, and
// snapshot reads at a timestamp. It knows nothing about the network or the
// transaction protocol around it; timestamps come from outside.
//
// # Data model
//
// Every committed write of a key is a version whose number is its commit
// timestamp. Get(keys, ts) returns, per key, the latest version committed at
// or below ts (or not found, for a key never written or deleted there).
// Compares are checked against the latest committed version of a key, a
// missing key having version 0.
//
// # Snapshot stability
//
// The store keeps maxTS, the highest timestamp it has read at or committed
// at. Get raises maxTS to its ts atomically with checking the lock table;
// Apply commits at max(ts, maxTS+1); Prepare returns max(maxTS, StartTS)+1 as
// the least timestamp Commit may use. So once a read at ts has been served,
// no write can land at or below ts, and a repeated read at ts returns the
// same result. A read waits only for locks whose writes could land at or
// below its ts (a prepared transaction from the moment its minimum commit
// timestamp is known, with that minimum <= ts; an Apply whose chosen commit
// timestamp is <= ts); it skips the rest, whose commit timestamps will be
// above ts. Across restarts the guarantee rests on a durable high-water mark
// (see below).
//
// # Locks
//
// Apply, Prepare, Commit and Abort serialise on keys through an in-memory
// lock table; compare keys are locked as well as written keys, so compares
// stay true until the writes commit. Apply takes all of its locks at once
// or none and waits only with nothing held, so it cannot deadlock; Prepare
// never waits for another prepared transaction (it fails with ErrConflict
// at once), only briefly for an Apply, which depends on nobody. Applies
// waiting for a key get it in arrival order; a Prepare waiting for an
// Apply's key goes before them. Locks are released by closing a per-owner
// channel that wakes every waiter.
//
// # Durability
//
// Badger runs with SyncWrites=false; durability comes from a GroupSyncer
// that batches fsyncs across concurrent writers, because Badger's own
// SyncWrites fsyncs once per transaction and does not share a sync between
// goroutines. A sync round lists the directory and fsyncs every memtable
// write-ahead log (*.mem) there, the active one included: a write that
// completed before the round began sits in a memtable whose WAL file still
// exists when the round lists the directory, unless Badger has flushed that
// memtable to an SST, which it syncs when it creates it. (DB.Sync is not
// enough alone: it covers only the active memtable, not one rotated out and
// not yet flushed. It also syncs the value log, which small values never
// touch, so a round calls it only after a value of 1 MiB or more, which
// Badger keeps in the value log, was written.) The active WAL is written
// through a shared memory mapping; fsync of the file writes those pages
// back too. A round covers every Badger write applied before the round
// began.
//
// What is durable when a call returns nil:
//
//   - Apply: all of its writes (one Badger transaction, so all or none
//     survive a crash), and the maxTS mark covering its commit timestamp.
//   - Prepare: the prepare record, holding the ops, the compare keys, the
//     start timestamp and the participants. After a crash Open re-takes
//     the record's locks and the transaction is prepared again.
//   - Commit: the writes and the deletion of the prepare record, in one
//     Badger transaction, so a crash leaves either the prepared state or
//     the committed one, never a mix.
//   - CommitNoSync: nothing yet. Its writes and the deletion of the prepare
//     record are applied atomically and visible, and become durable with the
//     next round (Sync, or any call above that waits for one). A machine
//     crash before that leaves the transaction prepared again, so the
//     coordinator keeps its decision until Sync confirms.
//   - Abort: the deletion of the prepare record.
//   - Get: the maxTS mark covering its ts.
//
// No reader observes a write before it is durable. Prepare, Commit and
// Abort wait for the sync while still holding their locks. Apply hands its
// locks to the next writer of its keys once its Badger write is done, so a
// hot key's writers share sync rounds (a later writer's round covers the
// earlier writes, which precede it in the log), but its writes stay pending
// until its own round is done, and a read at or above their commit
// timestamp waits for that. Once the Badger write is done the call waits
// for the sync even if its context ends. If a sync fails, the store stops:
// the failing call and every later one return the error, and the locks (or
// pending writes) whose durability is unknown stay, so readers cannot see
// them; reopening recovers from what is on disk. Writes that returned an error before their Badger write (lock
// conflicts, failed compares, cancelled contexts) changed nothing.
//
// The high-water mark: when a timestamp above the durable mark is about to
// be served (read at or committed at), the store first writes and syncs a
// new mark Options.MaxTSBatch (default 1,000,000) above it. Open starts maxTS
// at the persisted mark, so after a crash nothing is written at or below a
// timestamp read before it. The cost is one extra small write and sync per
// MaxTSBatch timestamps.
//
// Late duplicates: a Prepare for a transaction this store has committed or
// aborted (or refused in Resolve) is refused with ErrAborted, from an
// in-memory set of the last 100,000 finished ids and from the outcome marker
// ("committed at T" or "aborted") every finished transaction leaves in
// Badger, which survives restarts, and, once the marker has gone
// (ForgetOutcomes, SweepOutcomes), from the prepare record's deletion where it
// was prepared (see outcome.go). A Commit or Abort for a
// transaction already finished here is a no-op, so both may be retried
// freely; a Commit for one never prepared here, or aborted here, fails with
// ErrNotPrepared, an Abort of one never prepared only remembers the id.
//
// Termination: Resolve answers what the store durably knows of a transaction
// (prepared with its minimum commit timestamp, committed at T, aborted), and
// first records "aborted" for one it never prepared, so that no Prepare of it
// can succeed later. This is what the parallel commit protocol's participants
// ask each other.
//
// # Badger layout
//
// User data lives under 'd'+key at version = commit timestamp (a delete is
// a Badger deletion marker at that version), so every key, the empty key
// included, is stored unambiguously. Prepare records live under
// 'p'+big-endian(txnID) at version StartTS and are deleted at the commit
// timestamp (Commit, which must exceed StartTS) or at StartTS+1 (Abort).
// Outcome markers live under 'o'+big-endian(txnID), at the commit timestamp
// or StartTS+1; Resolve's refusals and the deletions of markers at a version
// above the key's newest (markerVersion). The maxTS mark lives
// under a meta key at version = the mark. Prepare
// records and the mark are read at math.MaxUint64. Old versions are never
// discarded (the Badger discard timestamp stays 0).
package kv
