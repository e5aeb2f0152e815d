package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvtx/kvtx/txn/backup"
	"github.com/kvtx/kvtx/txn/client"
)

const (
	bankAccounts = 12
	bankInitial  = 1000
)

// account names account i: half of the accounts come first in key order, so that a backup
// reads them in one page while transfers commit around it; the others lie among the filler
// keys, so that it reads them in different pages while transfers go on between those.
func account(i int) []byte {
	if i < bankAccounts/2 {
		return []byte(fmt.Sprintf("a/%02d/acct", i))
	}
	return []byte(fmt.Sprintf("f/%05d/acct", i*170))
}

// bankTransfers moves money between random accounts (read both, then a transaction that
// holds only if neither changed) until stop is closed, and counts the transfers committed.
func bankTransfers(t *testing.T, cl *client.Client, seed uint64, stop <-chan struct{}, done *atomic.Int64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	for {
		select {
		case <-stop:
			return
		default:
		}
		a, b := rng.IntN(bankAccounts), rng.IntN(bankAccounts)
		if a == b {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		kvs, _, err := cl.Snapshot(ctx, account(a), account(b))
		if err == nil {
			from, _ := strconv.Atoi(string(kvs[0].Value))
			to, _ := strconv.Atoi(string(kvs[1].Value))
			amount := rng.IntN(from/2 + 1)
			_, err = cl.Txn(ctx, []client.Compare{client.IfVersion(account(a), kvs[0].Version), client.IfVersion(account(b), kvs[1].Version)},
				client.Put(account(a), []byte(strconv.Itoa(from-amount))), client.Put(account(b), []byte(strconv.Itoa(to+amount))))
		}
		cancel()
		switch {
		case err == nil:
			done.Add(1)
		case errors.Is(err, client.ErrCompareFailed), errors.Is(err, client.ErrAborted):
		default:
			t.Errorf("transfer %d -> %d: %v", a, b, err)
			return
		}
	}
}

// scanAt reads every key of the cluster at version ts (0: now).
func scanAt(t *testing.T, cl *client.Client, ts uint64) []client.KeyValue {
	t.Helper()
	if ts == 0 {
		return scanAllKeys(t, cl, "", "")
	}
	return scanAllKeys(t, cl, "", "", client.ScanAt(ts))
}

// bankTotal sums the balances among kvs.
func bankTotal(t *testing.T, kvs []client.KeyValue) (total, accounts int) {
	t.Helper()
	for _, kv := range kvs {
		if bytes.HasSuffix(kv.Key, []byte("/acct")) {
			n, err := strconv.Atoi(string(kv.Value))
			if err != nil {
				t.Fatalf("balance of %s: %q", kv.Key, kv.Value)
			}
			total += n
			accounts++
		}
	}
	return total, accounts
}

// kvctlJSON runs kvctl with -o json and decodes its one-line answer.
func kvctlJSON(t *testing.T, c *testCluster, args ...string) map[string]any {
	t.Helper()
	out, errOut, code := c.kvctl(append([]string{"-o", "json"}, args...)...)
	if code != 0 {
		t.Fatalf("kvctl %v: exit %d: %s", args, code, errOut)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("kvctl %v printed %q: %v", args, out, err)
	}
	return m
}

// A backup taken with kvctl while bank transfers run across two shards is exactly the
// snapshot at its version: restored onto a fresh cluster of three nodes, every key has the
// value and version a read of the source at that version sees, and the balances add up.
// Restoring a file with one flipped byte writes nothing (not even the oracle moves), a
// cluster with data is refused without --force and restored again with it, and a write
// after the restore gets a version above the backup's.
func TestBackupUnderLoadRestoresExactlyOntoThreeNodes(t *testing.T) {
	src := newCluster(t, 2)
	cl := src.client()
	ctx := stepCtx(t)
	var setup []client.Op
	for i := range bankAccounts {
		setup = append(setup, client.Put(account(i), []byte(strconv.Itoa(bankInitial))))
	}
	if _, err := cl.Txn(ctx, nil, setup...); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2000; i += 100 { // filler, written in cross-shard transactions of 100 keys
		var ops []client.Op
		for j := i; j < i+100; j++ {
			ops = append(ops, client.Put([]byte(fmt.Sprintf("f/%05d", j)), bytes.Repeat([]byte{byte('a' + j%26)}, 50+j%200)))
		}
		if _, err := cl.Txn(ctx, nil, ops...); err != nil {
			t.Fatal(err)
		}
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB, the value limit: kept in chunks on its node
	if _, err := cl.Txn(ctx, nil, client.Put([]byte("big"), big), client.Put([]byte("gone/1"), []byte("x"))); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Delete(ctx, []byte("gone/1")); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	halt := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer halt() // also when the test fails early
	var transfers, churn atomic.Int64
	for w := range 3 {
		wg.Go(func() { bankTransfers(t, cl, uint64(w), stop, &transfers) })
	}
	wg.Go(func() { // rewrites and deletes filler keys, so that versions move under the backup
		rng := rand.New(rand.NewPCG(9, 9))
		for {
			select {
			case <-stop:
				return
			default:
			}
			k := []byte(fmt.Sprintf("f/%05d", rng.IntN(2100)))
			var err error
			if rng.IntN(4) == 0 {
				_, err = cl.Delete(context.Background(), k)
			} else {
				_, err = cl.Txn(context.Background(), nil, client.Put(k, []byte("new")), client.Put([]byte(fmt.Sprintf("f/%05d", rng.IntN(2100))), []byte("pair")))
			}
			if err != nil && !errors.Is(err, client.ErrAborted) {
				t.Errorf("churn: %v", err)
				return
			}
			churn.Add(1)
		}
	})
	waitFor(t, 10*time.Second, "transfers under way", func() (bool, string) {
		return transfers.Load() >= 20, fmt.Sprintf("%d transfers", transfers.Load())
	})
	file := filepath.Join(t.TempDir(), "cluster.kvtx")
	before := transfers.Load()
	start := time.Now()
	got := kvctlJSON(t, src, "backup", "--page-keys", "20", file)
	took := time.Since(start)
	during := transfers.Load() - before
	time.Sleep(200 * time.Millisecond) // transfers after the backup's version
	halt()
	backupTS := uint64(got["version"].(float64))
	t.Logf("backup of %v keys (%v bytes, file %v bytes) at version %d in %v, while %d transfers and %d churn writes committed",
		got["keys"], got["bytes"], got["file_bytes"], backupTS, took, during, churn.Load())
	if during == 0 {
		t.Fatalf("no transfer committed while the backup ran: it did not run under load")
	}

	want := scanAt(t, cl, backupTS) // the snapshot at the backup's version, on the source
	if total, n := bankTotal(t, want); total != bankAccounts*bankInitial || n != bankAccounts {
		t.Fatalf("source at %d: %d accounts holding %d, want %d holding %d", backupTS, n, total, bankAccounts, bankAccounts*bankInitial)
	}
	if now := scanAt(t, cl, 0); sameKeys(now, want) {
		t.Fatalf("the source did not change after the backup's version: the test shows nothing")
	}
	verified := kvctlJSON(t, src, "backup", "--verify", file)
	if uint64(verified["version"].(float64)) != backupTS || int(verified["keys"].(float64)) != len(want) {
		t.Fatalf("--verify says %v, want %d keys at %d", verified, len(want), backupTS)
	}

	dst := newCluster(t, 3)
	dcl := dst.client()
	// One flipped byte in the middle of the file: --verify and restore refuse it, and the
	// restore writes nothing, not even the oracle's mark.
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.kvtx")
	data[len(data)/2] ^= 0x01
	if err := os.WriteFile(bad, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := dst.kvctl("backup", "--verify", bad); code != 4 || !strings.Contains(errOut, "checksum mismatch") {
		t.Fatalf("--verify of a corrupt file: exit %d, %q; want 4 and a checksum mismatch", code, errOut)
	}
	if _, errOut, code := dst.kvctl("restore", bad); code != 4 || !strings.Contains(errOut, "checksum mismatch") || !strings.Contains(errOut, "nothing written") {
		t.Fatalf("restore of a corrupt file: exit %d, %q; want 4, a checksum mismatch, nothing written", code, errOut)
	}
	if left := scanAt(t, dcl, 0); len(left) != 0 {
		t.Fatalf("a refused restore wrote %d keys", len(left))
	}
	if _, ts, err := dcl.Snapshot(ctx, []byte("probe")); err != nil || ts >= backupTS {
		t.Fatalf("after a refused restore the oracle is at %d (%v), want it below the backup's %d", ts, err, backupTS)
	}

	restored := kvctlJSON(t, dst, "restore", file)
	t.Logf("restore: %v", restored)
	sameKeyValueVersions(t, "restored onto three nodes", scanAt(t, dcl, 0), want)
	if total, _ := bankTotal(t, scanAt(t, dcl, 0)); total != bankAccounts*bankInitial {
		t.Fatalf("restored balances add up to %d, want %d", total, bankAccounts*bankInitial)
	}
	res, err := dcl.Put(ctx, []byte("after-restore"), []byte("1"))
	if err != nil || res.CommitTS <= backupTS {
		t.Fatalf("a write after the restore: %+v %v, want a version above %d", res, err, backupTS)
	}

	_, errOut, code := dst.kvctl("restore", file)
	if code != 4 || !strings.Contains(errOut, "restore refused, nothing written") || !strings.Contains(errOut, "--force") {
		t.Fatalf("restore into a cluster with data: exit %d, %q; want 4, refused, naming --force", code, errOut)
	}
	kvctlJSON(t, dst, "restore", "--force", file)
	again := scanAt(t, dcl, 0)
	if len(again) != len(want)+1 {
		t.Fatalf("after a forced restore: %d keys, want the backup's %d and after-restore", len(again), len(want))
	}
	var backed []client.KeyValue
	for _, kv := range again {
		if string(kv.Key) != "after-restore" {
			backed = append(backed, kv)
		}
	}
	sameKeyValueVersions(t, "restored again with --force", backed, want)
}

func sameKeys(a, b []client.KeyValue) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i].Key, b[i].Key) || a[i].Version != b[i].Version {
			return false
		}
	}
	return true
}

func sameKeyValueVersions(t *testing.T, what string, got, want []client.KeyValue) {
	t.Helper()
	sameRange(t, what, got, want, false)
}

// The backup library refuses to overwrite a file, and a backup of an empty cluster restores
// into another as nothing.
func TestBackupOfAnEmptyClusterAndAnExistingFile(t *testing.T) {
	c := newCluster(t, 1)
	cl := c.client()
	file := filepath.Join(t.TempDir(), "empty.kvtx")
	sum, err := backup.Backup(stepCtx(t), cl, file, backup.Options{})
	if err != nil || sum.Manifest.Keys != 0 || len(sum.Manifest.Shards) != 1 {
		t.Fatalf("backup of an empty cluster: %+v %v", sum, err)
	}
	if _, err := backup.Backup(stepCtx(t), cl, file, backup.Options{}); !errors.Is(err, backup.ErrExists) {
		t.Fatalf("backup over an existing file: %v, want ErrExists", err)
	}
	if _, err := backup.Restore(stepCtx(t), cl, file, backup.RestoreOptions{}); err != nil {
		t.Fatalf("restore of an empty backup into an empty cluster: %v", err)
	}
}

// A restore that stops half-way (here its context is cancelled after the first batch) leaves
// part of the backup behind; run again it is refused, and with --force it completes: every
// key then has its value and version.
func TestInterruptedRestoreCompletesWhenRunAgainWithForce(t *testing.T) {
	src := newCluster(t, 1)
	cl := src.client()
	for i := 0; i < 600; i += 100 {
		var ops []client.Op
		for j := i; j < i+100; j++ {
			ops = append(ops, client.Put([]byte(fmt.Sprintf("k/%04d", j)), []byte(strconv.Itoa(j))))
		}
		if _, err := cl.Txn(stepCtx(t), nil, ops...); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(t.TempDir(), "b.kvtx")
	sum, err := backup.Backup(stepCtx(t), cl, file, backup.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := scanAt(t, cl, sum.Manifest.BackupTS)

	dst := newCluster(t, 2)
	dcl := dst.client()
	ctx, cancel := context.WithCancel(stepCtx(t))
	_, err = backup.Restore(ctx, dcl, file, backup.RestoreOptions{BatchKeys: 50, Parallel: 1, Progress: func(phase string, keys, _ int64) {
		if phase == "restore" {
			cancel()
		}
	}})
	if err == nil {
		t.Fatal("a restore cancelled after its first batch succeeded")
	}
	if n := len(scanAt(t, dcl, 0)); n == 0 || n >= len(want) {
		t.Fatalf("the interrupted restore left %d of %d keys, want some but not all (%v)", n, len(want), err)
	}
	if _, errOut, code := dst.kvctl("restore", file); code != 4 || !strings.Contains(errOut, "restore refused") {
		t.Fatalf("restore over a half-restored cluster: exit %d, %q; want it refused", code, errOut)
	}
	if _, errOut, code := dst.kvctl("restore", "--force", file); code != 0 {
		t.Fatalf("restore --force: exit %d: %s", code, errOut)
	}
	sameKeyValueVersions(t, "after the forced rerun", scanAt(t, dcl, 0), want)
}
