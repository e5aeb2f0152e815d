// Package soak holds the soak test (make soak, and make soak-short in make test): an
// update-heavy workload against real processes with GC on, then off, checked by bench's soak
// checks. Its test starts the clusters with the e2e harness (cmd/internal/cluster).
package soak
