package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kvtx/kvtx/txn/client"
)

// TestKvctlPutGetDelete proves the CLI's everyday commands, their output formats and their exit
// statuses against a real two-node cluster.
func TestKvctlPutGetDelete(t *testing.T) {
	c := newCluster(t, 2)

	out, errOut, code := c.kvctl("put", "greeting", "hello world")
	if code != 0 || out != "OK\n" {
		t.Fatalf("put: code %d out %q err %q", code, out, errOut)
	}
	out, _, code = c.kvctl("get", "greeting")
	if code != 0 || out != "hello world\n" {
		t.Fatalf("get of one key prints the value alone: code %d out %q", code, out)
	}
	keys := c.keysOnEveryShard("k")
	for i, k := range keys {
		if _, e, code := c.kvctl("put", k, fmt.Sprintf("v%d", i)); code != 0 {
			t.Fatalf("put %s: %d %s", k, code, e)
		}
	}
	out, _, code = c.kvctl(append([]string{"get"}, keys...)...)
	var want strings.Builder
	for i, k := range keys {
		fmt.Fprintf(&want, "%s\nv%d\n", k, i)
	}
	if code != 0 || out != want.String() {
		t.Fatalf("get of several keys prints key and value lines: code %d out %q want %q", code, out, want.String())
	}
	out, _, code = c.kvctl("get", "-o", "json", keys[0], "absent")
	if code != 1 {
		t.Fatalf("get with a missing key exits 1, got %d", code)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("json get prints one object per key: %q", out)
	}
	var first, second struct {
		Key     string `json:"key"`
		Value   string `json:"value"`
		Version uint64 `json:"version"`
		Found   bool   `json:"found"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatal(err)
	}
	if first.Key != keys[0] || first.Value != "v0" || !first.Found || first.Version == 0 {
		t.Fatalf("json of a present key: %+v", first)
	}
	if second.Key != "absent" || second.Found || second.Version != 0 {
		t.Fatalf("json of a missing key: %+v", second)
	}

	if _, e, code := c.kvctl(append([]string{"del"}, keys...)...); code != 0 {
		t.Fatalf("del of keys on every shard: %d %s", code, e)
	}
	_, errOut, code = c.kvctl("get", keys[1])
	if code != 1 || !strings.Contains(errOut, "not found") {
		t.Fatalf("get after del: code %d stderr %q", code, errOut)
	}
	if _, e, code := c.kvctl("del", "never-existed"); code != 0 {
		t.Fatalf("deleting a missing key succeeds, as in etcd: %d %s", code, e)
	}
	_, errOut, code = c.kvctl("put", "key", "value", "extra")
	if code != 4 || !strings.Contains(errOut, "put needs KEY and VALUE") {
		t.Fatalf("usage error: code %d stderr %q", code, errOut)
	}
	out, _, code = c.kvctl("status")
	if code != 0 || !strings.Contains(out, "master") || !strings.Contains(out, "node2") {
		t.Fatalf("status: code %d out %q", code, out)
	}
}

// TestCrossShardTxnIsAtomic proves that a transaction over keys of every shard is applied as
// a whole, that a failed compare writes nothing on any shard, and that version compares give
// read-modify-write.
// A value too large for one command-line argument (128 KiB on Linux) goes in on standard
// input, byte for byte, as with etcdctl.
func TestKvctlPutReadsTheValueFromStandardInput(t *testing.T) {
	c := newCluster(t, 2)
	value := bytes.Repeat([]byte("0123456789abcdef"), 40<<10) // 640 KiB
	value = append(value, '\n')
	if out, errOut, code := runKvctlWithInput(t, bytes.NewReader(value), append(c.kvctlArgs(), "put", "big")...); code != 0 || out != "OK\n" {
		t.Fatalf("put from standard input: code %d out %q err %q", code, out, errOut)
	}
	kv, err := c.client().Get(context.Background(), []byte("big"))
	if err != nil || !bytes.Equal(kv.Value, value) {
		t.Fatalf("get after a put from standard input: %d bytes, %v; want the %d bytes sent", len(kv.Value), err, len(value))
	}
	_, errOut, code := runKvctlWithInput(t, bytes.NewReader(make([]byte, 2<<20)), append(c.kvctlArgs(), "put", "huge")...)
	if code == 0 || !strings.Contains(errOut, "limit") {
		t.Fatalf("put of 2 MiB from standard input: code %d err %q, want the value limit named", code, errOut)
	}
}

func TestCrossShardTxnIsAtomic(t *testing.T) {
	c := newCluster(t, 2)
	cl := c.client()
	ctx := stepCtx(t)
	keys := c.keysOnEveryShard("acct")

	args := []string{"txn", "-o", "json"}
	for _, k := range keys {
		args = append(args, "put", k, "100")
	}
	out, errOut, code := c.kvctl(args...)
	if code != 0 {
		t.Fatalf("txn: %d %s", code, errOut)
	}
	var res struct {
		Outcome string `json:"outcome"`
		Version uint64 `json:"version"`
		Path    string `json:"path"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Outcome != "committed" || res.Path != "2pc" {
		t.Fatalf("txn output %q: %v", out, err)
	}
	kvs := snapshot(t, cl, keys)
	for _, kv := range kvs {
		if !kv.Found || string(kv.Value) != "100" || kv.Version != res.Version {
			t.Fatalf("every key carries the transaction's commit version %d: %+v", res.Version, kv)
		}
	}

	// A compare that fails on one shard writes nothing on any shard.
	_, errOut, code = c.kvctl("txn", "--if-version", fmt.Sprintf("%s=%d", keys[1], res.Version+1000), "put", keys[0], "0", "put", keys[1], "0")
	if code != 1 || !strings.Contains(errOut, "compare failed") || !strings.Contains(errOut, keys[1]) {
		t.Fatalf("failed compare: code %d stderr %q", code, errOut)
	}
	for _, kv := range snapshot(t, cl, keys) {
		if string(kv.Value) != "100" || kv.Version != res.Version {
			t.Fatalf("a failed compare wrote something: %+v", kv)
		}
	}

	// A bank transfer with version compares: exactly one of two racing transfers that read
	// the same versions commits.
	transfer := func(amount int) error {
		_, err := cl.Txn(ctx,
			[]client.Compare{client.IfVersion([]byte(keys[0]), kvs[0].Version), client.IfVersion([]byte(keys[1]), kvs[1].Version)},
			client.Put([]byte(keys[0]), []byte(fmt.Sprint(100-amount))), client.Put([]byte(keys[1]), []byte(fmt.Sprint(100+amount))))
		return err
	}
	if err := transfer(30); err != nil {
		t.Fatal(err)
	}
	err := transfer(50)
	if !errors.Is(err, client.ErrCompareFailed) {
		t.Fatalf("second transfer on stale versions: want compare failed, got %v", err)
	}
	got := snapshot(t, cl, keys)
	if string(got[0].Value) != "70" || string(got[1].Value) != "130" || got[0].Version != got[1].Version {
		t.Fatalf("after one transfer: %+v", got)
	}
	_, errOut, code = c.kvctl("txn", "--if-missing", keys[0], "put", keys[0], "x")
	if code != 1 || !strings.Contains(errOut, "--if-missing "+keys[0]) {
		t.Fatalf("kvctl names the failed compare: code %d stderr %q", code, errOut)
	}
	c.waitQuiet(cl, 5*time.Second)
}

// TestNodeDownAbortsWithUnavailable proves that a transaction touching a dead node aborts
// with "unavailable" (exit 2) and writes nothing on the live node either.
func TestNodeDownAbortsWithUnavailable(t *testing.T) {
	c := newCluster(t, 2)
	cl := c.client()
	keys := c.keysOnEveryShard("down")
	c.Kill("node2")

	args := []string{"txn"}
	for _, k := range keys {
		args = append(args, "put", k, "v")
	}
	_, errOut, code := c.kvctl(args...)
	if code != 2 || !strings.Contains(errOut, "unavailable") || !strings.Contains(errOut, "node2") {
		t.Fatalf("txn with node2 down: code %d stderr %q", code, errOut)
	}
	_, errOut, code = c.kvctl("put", keys[1], "v")
	if code != 2 || !strings.Contains(errOut, "unavailable") {
		t.Fatalf("single-shard put on the dead node: code %d stderr %q", code, errOut)
	}
	c.start("node2")
	for _, kv := range snapshot(t, cl, keys) {
		if kv.Found {
			t.Fatalf("an aborted transaction left %q=%q behind", kv.Key, kv.Value)
		}
	}
	c.waitQuiet(cl, 5*time.Second)
}

// TestCrossShardTransactionOnThreeNodes proves that nothing assumes two nodes: keys of all three shards commit in one
// transaction and read back as one snapshot.
func TestCrossShardTransactionOnThreeNodes(t *testing.T) {
	c := newCluster(t, 3)
	cl := c.client()
	ctx := stepCtx(t)
	keys := c.keysOnEveryShard("three")
	if len(keys) != 3 {
		t.Fatalf("want a key on each of 3 shards, got %v", keys)
	}
	var ops []client.Op
	for _, k := range keys {
		ops = append(ops, client.Put([]byte(k), []byte("x-"+k)))
	}
	res, err := cl.Txn(ctx, nil, ops...)
	if err != nil {
		t.Fatal(err)
	}
	if res.Path != "2pc" {
		t.Fatalf("path %q, want 2pc", res.Path)
	}
	for _, kv := range snapshot(t, cl, keys) {
		if string(kv.Value) != "x-"+string(kv.Key) || kv.Version != res.CommitTS {
			t.Fatalf("%+v", kv)
		}
	}
	out, _, code := c.kvctl("status")
	if code != 0 || strings.Count(out, "node") < 3 {
		t.Fatalf("status of three nodes: %d %q", code, out)
	}
	c.waitQuiet(cl, 5*time.Second)
}

// TestDataSurvivesRestartOfEveryProcess proves that acknowledged writes survive SIGKILL of
// every process at once, and that a clean SIGTERM shutdown also keeps them.
func TestDataSurvivesRestartOfEveryProcess(t *testing.T) {
	c := newCluster(t, 2)
	check := writeSurvivors(t, c)
	c.Kill("master", "node1", "node2")
	c.startAll()
	check("after SIGKILL of every process")
	for _, p := range []string{"master", "node1", "node2"} {
		c.stop(p)
	}
	c.startAll()
	check("after SIGTERM of every process")
}

// TestDataSurvivesPowerLoss proves that acknowledged writes survive a power cut of every
// machine at once (each process's data directory on a file system that forgets what was not
// fsynced), and then of each machine alone, with writes in between.
func TestDataSurvivesPowerLoss(t *testing.T) {
	c := preparePowerLossCluster(t, 2)
	c.startAll()
	check := writeSurvivors(t, c)
	c.cutPower("master", "node1", "node2")
	c.startAll()
	check("after a power cut of every machine")
	for i, p := range []string{"master", "node1", "node2"} {
		check = writeSurvivors(t, c, fmt.Sprintf("round%d-", i))
		c.cutPower(p)
		c.start(p)
		check("after a power cut of " + p)
	}
}

// writeSurvivors writes one-phase puts, cross-shard transactions and a delete (keys with the
// given prefix) and returns a check that every acknowledged write is there.
func writeSurvivors(t *testing.T, c *testCluster, prefix ...string) func(when string) {
	t.Helper()
	pre := strings.Join(prefix, "")
	cl := c.client()
	ctx := stepCtx(t)
	want := map[string]string{}
	for i := 0; i < 50; i++ {
		k := fmt.Sprintf("%ssingle%d", pre, i)
		if _, err := cl.Put(ctx, []byte(k), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		want[k] = fmt.Sprint(i)
	}
	for i := 0; i < 20; i++ {
		keys := c.keysOnEveryShard(fmt.Sprintf("%smulti%d-", pre, i))
		var ops []client.Op
		for _, k := range keys {
			ops = append(ops, client.Put([]byte(k), []byte("m"+k)))
			want[k] = "m" + k
		}
		if _, err := cl.Txn(ctx, nil, ops...); err != nil {
			t.Fatal(err)
		}
	}
	gone := pre + "single7"
	if _, err := cl.Delete(ctx, []byte(gone)); err != nil {
		t.Fatal(err)
	}
	delete(want, gone)
	return func(when string) {
		t.Helper()
		cl := c.client()
		keys := []string{gone}
		for k := range want {
			keys = append(keys, k)
		}
		for _, kv := range snapshot(t, cl, keys) {
			w, ok := want[string(kv.Key)]
			if ok != kv.Found || string(kv.Value) != w {
				t.Fatalf("%s: %q = %q (found %v), want %q (found %v)", when, kv.Key, kv.Value, kv.Found, w, ok)
			}
		}
	}
}

func snapshot(t *testing.T, cl *client.Client, keys []string) []client.KeyValue {
	t.Helper()
	bs := make([][]byte, len(keys))
	for i, k := range keys {
		bs[i] = []byte(k)
	}
	kvs, _, err := cl.Snapshot(stepCtx(t), bs...)
	if err != nil {
		t.Fatalf("snapshot of %v: %v", keys, err)
	}
	return kvs
}
