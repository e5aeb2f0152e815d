// Package chaos tests kvtx the way Jepsen tests etcd and TiDB: it starts a cluster of the real
// kvmaster and kvnode binaries with the harness of cmd/internal/cluster (on 127.0.0.1,
// temporary data directories, short protocol timeouts, a fault proxy on every link), runs concurrent clients of three workloads
// (bank, append, register) while injecting one kind of fault from a seeded schedule (SIGKILL,
// crash points, partitions, SIGSTOP, bad input and hostile requests of a client with a valid
// certificate, power cuts), heals everything, waits for every
// in-doubt transaction to resolve, and checks the recorded history: the bank's total, atomicity
// and order of the append lists, linearizability of the registers with porcupine (with a final
// read of every register after healing), durability of every acknowledged write and
// invisibility of every failed one (each write also sets a marker key on every shard it writes,
// read back after healing: an acknowledged write with a marker missing is lost, a write with
// only some of its markers half applied; the markers also classify the writes whose outcome the
// client did not learn).
//
// Power cuts need more than SIGKILL, which leaves the kernel's page cache intact: a run that may
// cut the power (powerloss, mixed) puts every process's data directory on a lossy file system of
// its own (cmd/lossyfs, mounted by the harness), one machine each, and a cut SIGKILLs the process (or every process at
// once) and makes its file system forget every write that was not fsynced before the restart.
//
// Run returns a Report. TestChaos drives it, one run per fault kind, each on a fresh cluster,
// when CHAOS_MODE is set (the Makefile sets it): "short" for `make test` and `make
// chaos-short` (a few seconds of faults per kind), "long" for `make chaos`. Its environment:
// CHAOS_MODE=short|long; CHAOS_SECONDS, seconds of faults per kind (short 8, long 60);
// CHAOS_SEED, the seed to replay (default: random, printed); CHAOS_FAULTS, a comma list of
// kinds (default every kind, plus "mixed" in long mode); CHAOS_OUT, a directory that keeps the
// reports and the clusters' logs (default: a temporary directory, kept only on failure);
// CHAOS_PROTOCOL, the cluster's commit_protocol, classic or parallel (default the built-in
// default; make chaos-short runs both).
// Without CHAOS_MODE only the unit tests of the checkers and the schedule run. The powerloss
// kind (and mixed, which draws it) needs root and /dev/fuse; without them its run fails, it
// is not skipped.
//
// Every loop is bounded, and nothing listens beyond the loopback interface.
package chaos
