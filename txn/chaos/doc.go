// Package chaos tests kvtx the way Jepsen tests etcd and TiDB: it starts a cluster of the real
// kvmaster and kvnode binaries on 127.0.0.1 (temporary data directories, short protocol
// timeouts, an in-process TCP proxy on every link), runs concurrent clients of three workloads
// (bank, append, register) while injecting one kind of fault from a seeded schedule (SIGKILL,
// crash points, partitions, SIGSTOP, bad input), heals everything, waits for every in-doubt
// transaction to resolve, and checks the recorded history: the bank's total, atomicity and
// order of the append lists, linearizability of the registers with porcupine, durability of
// every acknowledged write and invisibility of every failed one (each write also sets a marker
// key that is read back after healing, which also classifies the writes whose outcome the
// client did not learn).
//
// Run returns a Report; cmd/chaos drives it from `make test` (short) and `make chaos` (long).
// Every loop is bounded, and nothing listens beyond the loopback interface.
package chaos
