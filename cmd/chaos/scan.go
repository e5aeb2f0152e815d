package chaos

import (
	"context"
	"fmt"

	"github.com/kvtx/kvtx/txn/client"
)

// scanPageSize is the page size of the workloads' scans: small, so that a scan of a workload's
// few keys takes several requests, every one at the version of the first, and each page is
// merged from both shards.
const scanPageSize = 2

// Invariant of every scan, whatever the workload.
const invScanKeys = "scans: every key once, in key order, inside the range"

// scan reads the keys of [start, end) through the client's Scan, scanPageSize keys a request,
// and records it as op (Kind "scan"): on success Keys, Out and Found hold what it read, in
// the order it came; a scan that fails part-way records nothing it read.
func scan(ctx context.Context, cl *client.Client, rec *Recorder, op *Op, start, end string) error {
	op.Kind = "scan"
	rec.Invoke(op)
	var keys, vals []string
	var found []bool
	var err error
	for kv, e := range cl.Scan(ctx, []byte(start), []byte(end), client.ScanPageSize(scanPageSize)) {
		if e != nil {
			err = e
			break
		}
		keys, vals, found = append(keys, string(kv.Key)), append(vals, string(kv.Value)), append(found, kv.Found)
	}
	if err == nil {
		op.Keys, op.Out, op.Found = keys, vals, found
	}
	rec.Complete(op, err)
	return err
}

// prefixEnd is the first key after every key that starts with p (p must not end in 0xff).
func prefixEnd(p string) string {
	return p[:len(p)-1] + string(p[len(p)-1]+1)
}

// checkScanKeys returns what is wrong with the keys a scan of [start, end) returned, or "":
// each key once, in increasing order, none outside the range.
func checkScanKeys(keys []string, start, end string) string {
	for i, k := range keys {
		switch {
		case k < start || k >= end:
			return fmt.Sprintf("key %q is outside [%q, %q)", k, start, end)
		case i > 0 && k <= keys[i-1]:
			return fmt.Sprintf("key %q comes after %q", k, keys[i-1])
		}
	}
	return ""
}
