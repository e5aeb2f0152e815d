// Package chaos tests kvtx the way Jepsen tests etcd and TiDB: it starts a cluster of the real
// kvmaster and kvnode binaries on 127.0.0.1 (temporary data directories, short protocol
// timeouts, an in-process TCP proxy on every link), runs concurrent clients of three workloads
// (bank, append, register) while injecting one kind of fault from a seeded schedule (SIGKILL,
// crash points, partitions, SIGSTOP, bad input, power cuts), heals everything, waits for every
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
// its own (cmd/lossyfs), one machine each, and a cut SIGKILLs the process (or every process at
// once) and makes its file system forget every write that was not fsynced before the restart.
//
// Run returns a Report; cmd/chaos drives it from `make test` (short) and `make chaos` (long).
// Every loop is bounded, and nothing listens beyond the loopback interface.
package chaos
