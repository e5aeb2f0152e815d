package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvtx/kvtx/cmd/internal/cluster"
	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/client"
	"github.com/kvtx/kvtx/wire"
)

// crashPointCase is one named point of the protocol at which a process dies, and what the
// protocol promises for it.
type crashPointCase struct {
	point     string
	victim    string
	committed bool  // the transaction's outcome after recovery
	told      error // what the client hears: nil is "committed"
	orTold    error // another acceptable answer, where the crash races the reply
	refuse    bool  // the victim votes no (a compare fails there): the parallel refusal path
}

// crashPointCases are every crash point a protocol reaches with its promise, the same whether
// the process only dies or its machine also loses power: nothing the protocol relies on may be
// unsynced. Under the parallel protocol the yes votes are the commit point, so a crash after
// the last vote is durable commits the transaction; and a vote that does not arrive makes the
// outcome unknown to the client until the participants settle it.
func crashPointCases(t *testing.T, protocol string) []crashPointCase {
	classic := []crashPointCase{
		{point: txn.PointMasterBeforePrepare, victim: "master", told: client.ErrUnknownOutcome},
		{point: txn.PointMasterAfterVotes, victim: "master", told: client.ErrUnknownOutcome},
		{point: txn.PointMasterAfterDecision, victim: "master", committed: true, told: client.ErrUnknownOutcome},
		{point: txn.PointMasterBeforePhase2, victim: "master", committed: true, orTold: client.ErrUnknownOutcome},
		{point: txn.PointMasterAfterFirstCommit, victim: "master", committed: true, orTold: client.ErrUnknownOutcome},
		{point: txn.PointNodeBeforePrepareRecord, victim: "node1", told: client.ErrAborted},
		{point: txn.PointNodeAfterPrepareRecord, victim: "node1", told: client.ErrAborted},
		{point: txn.PointNodeBeforeCommitApply, victim: "node1", committed: true},
		{point: txn.PointNodeAfterCommitApply, victim: "node1", committed: true},
	}
	parallel := []crashPointCase{
		{point: txn.PointMasterBeforePrepare, victim: "master", told: client.ErrUnknownOutcome},
		{point: txn.PointMasterAfterVotes, victim: "master", committed: true, told: client.ErrUnknownOutcome},
		{point: txn.PointMasterAfterDecision, victim: "master", committed: true, told: client.ErrUnknownOutcome},
		{point: txn.PointMasterBeforePhase2, victim: "master", committed: true, orTold: client.ErrUnknownOutcome},
		{point: txn.PointMasterAfterFirstCommit, victim: "master", committed: true, orTold: client.ErrUnknownOutcome},
		{point: txn.PointNodeBeforePrepareRecord, victim: "node1", told: client.ErrUnknownOutcome, orTold: client.ErrAborted},
		{point: txn.PointNodeAfterPrepareRecord, victim: "node1", committed: true, told: client.ErrUnknownOutcome},
		{point: txn.PointNodeAfterRefusalRecord, victim: "node1", told: client.ErrUnknownOutcome, refuse: true},
		{point: txn.PointNodeBeforeCommitApply, victim: "node1", committed: true},
		{point: txn.PointNodeAfterCommitApply, victim: "node1", committed: true},
	}
	cases := classic
	if protocol == txn.ProtocolParallel {
		cases = parallel
	}
	covered := map[string]bool{}
	for _, tc := range append(slices.Clone(classic), parallel...) {
		covered[tc.point] = true
	}
	for _, p := range txn.CrashPoints {
		if !covered[p] {
			t.Fatalf("crash point %s has no case", p)
		}
	}
	return cases
}

// crashProtocols are the commit protocols the crash tests run under.
var crashProtocols = []string{txn.ProtocolClassic, txn.ProtocolParallel}

// How a crash point's process dies.
const (
	dieOnly       = "sigkill"   // the process is SIGKILLed; its machine keeps what it wrote
	dieAndLose    = "powerloss" // its machine also loses power: what it did not fsync is gone
	everyoneLoses = "rack"      // every machine loses power at that instant
)

// TestCrashPoints kills a process with SIGKILL at every named point of the protocol during a
// transaction over both shards, restarts it without the crash point, and checks that every
// key of the transaction shows the same outcome on every shard, that the outcome is the one
// the protocol promises for that point (and agrees with what the client was told), and that
// no lock or prepare record is left.
func TestCrashPoints(t *testing.T) {
	for _, proto := range crashProtocols {
		for _, tc := range crashPointCases(t, proto) {
			t.Run(proto+"/"+tc.point, func(t *testing.T) { runCrashPoint(t, proto, tc, dieOnly) })
		}
	}
}

// TestCrashPointsWithPowerLoss is TestCrashPoints where the dying process's machine also loses
// power at that instant, so every write it had not fsynced is gone when it restarts, and then
// where every machine of the cluster loses power at once: the outcome promised for each point
// still holds.
func TestCrashPointsWithPowerLoss(t *testing.T) {
	for _, proto := range crashProtocols {
		for _, mode := range []string{dieAndLose, everyoneLoses} {
			for _, tc := range crashPointCases(t, proto) {
				t.Run(proto+"/"+mode+"/"+tc.point, func(t *testing.T) { runCrashPoint(t, proto, tc, mode) })
			}
		}
	}
}

// runCrashPoint runs one crash point: the victim dies there (mode says how much is lost with
// it), restarts, and the transaction's outcome must be the one promised, on every shard.
func runCrashPoint(t *testing.T, protocol string, tc crashPointCase, mode string) {
	c := prepare(t, cluster.Config{Nodes: 2, LossyDisks: mode != dieOnly, CommitProtocol: protocol})
	for _, n := range c.Config().Nodes {
		if n.Name == tc.victim {
			c.startArmed(n.Name, tc.point)
		} else {
			c.start(n.Name)
		}
	}
	if tc.victim == "master" {
		c.startArmed("master", tc.point)
	} else {
		c.start("master")
	}
	keys := c.keysOnEveryShard("crash")
	cl := c.client()
	// One committed transaction first, so that "old" values are visible too.
	var ops []client.Op
	for _, k := range keys {
		ops = append(ops, client.Put([]byte(k), []byte("old")))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The crash points fire on the first cross-shard transaction: the "old" values
	// are written one key at a time (one-phase), which passes no 2PC point.
	for _, op := range ops {
		if _, err := cl.Put(ctx, op.Key, op.Value); err != nil {
			t.Fatal(err)
		}
	}
	ops = ops[:0]
	for _, k := range keys {
		ops = append(ops, client.Put([]byte(k), []byte("new")))
	}
	var cmps []client.Compare
	if tc.refuse { // the victim's compare fails: it votes no, and is asked about it
		cmps = append(cmps, client.IfMissing([]byte(keys[0])))
	}
	_, err := cl.Txn(ctx, cmps, ops...)
	matches := func(want error) bool {
		if want == nil {
			return err == nil
		}
		return errors.Is(err, want)
	}
	if !matches(tc.told) && (tc.orTold == nil || !matches(tc.orTold)) {
		t.Fatalf("client told %v, want %v (or %v)", err, tc.told, tc.orTold)
	}
	t.Logf("client was told: %v", err)

	exit := c.waitExit(tc.victim, 10*time.Second)
	var ee *exec.ExitError
	if !errors.As(exit, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("%s should have died of SIGKILL at %s, exited with %v", tc.victim, tc.point, exit)
	}
	switch mode {
	case dieAndLose:
		c.cutPower(tc.victim)
	case everyoneLoses:
		c.cutPower("master", "node1", "node2")
	}
	if tc.point == txn.PointMasterAfterVotes && mode != everyoneLoses {
		if protocol == txn.ProtocolParallel {
			// The master is not needed: the participants settle the transaction themselves.
			waitNothingPreparedWithoutMaster(t, c, "node1", "node2")
		} else {
			checkInDoubtListedWithoutMaster(t, c)
		}
	}
	if mode == everyoneLoses {
		c.startAll()
	} else {
		c.start(tc.victim)
	}
	cl = c.client()
	c.waitQuiet(cl, 15*time.Second)
	want := "old"
	if tc.committed {
		want = "new"
	}
	kvs := snapshot(t, cl, keys)
	for _, kv := range kvs {
		if string(kv.Value) != want {
			t.Fatalf("after %s: %q=%q, want %q on every shard (all: %v)", tc.point, kv.Key, kv.Value, want, describeKVs(kvs))
		}
	}
	if tc.committed && kvs[0].Version != kvs[1].Version {
		t.Fatalf("a committed transaction carries one version on every shard: %v", describeKVs(kvs))
	}
	// The cluster keeps working.
	if _, err := cl.Txn(ctx, nil, client.Put([]byte(keys[0]), []byte("after")), client.Put([]byte(keys[1]), []byte("after"))); err != nil {
		t.Fatalf("transaction after recovery: %v", err)
	}
	logs := c.Output(tc.victim)
	if !strings.Contains(logs, "serving") {
		t.Fatalf("restarted %s did not log that it is serving", tc.victim)
	}
}

func describeKVs(kvs []client.KeyValue) string {
	var parts []string
	for _, kv := range kvs {
		parts = append(parts, fmt.Sprintf("%s=%s@%d", kv.Key, kv.Value, kv.Version))
	}
	return strings.Join(parts, " ")
}

// checkInDoubtListedWithoutMaster proves that while the master is down, kvctl txn list still
// shows, from the nodes themselves, the transaction both hold prepared and cannot resolve.
func checkInDoubtListedWithoutMaster(t *testing.T, c *testCluster) {
	t.Helper()
	waitFor(t, 10*time.Second, "kvctl txn list with the master down showing the transaction in doubt on both nodes", func() (bool, string) {
		out, errOut, code := c.kvctl("txn", "list", "--config", c.ConfigPath(), "-o", "json")
		inDoubt := map[string]bool{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var row struct {
				Process string `json:"process"`
				State   string `json:"state"`
			}
			if json.Unmarshal([]byte(line), &row) == nil && row.State == "in doubt" {
				inDoubt[row.Process] = true
			}
		}
		ok := code == 2 && strings.Contains(errOut, "master is down") && inDoubt["node1"] && inDoubt["node2"]
		return ok, fmt.Sprintf("exit %d, stdout %q, stderr %q", code, out, errOut)
	})
}

// nodeStatus runs kvctl status (which asks the nodes directly when the master is down) and
// returns each process's report by name, with a description for failure messages.
func nodeStatus(c *testCluster) (map[string]wire.ProcessStatus, string) {
	out, errOut, code := c.kvctl("status", "--config", c.ConfigPath(), "-o", "json")
	procs := map[string]wire.ProcessStatus{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var p wire.ProcessStatus
		if json.Unmarshal([]byte(line), &p) == nil && p.Name != "" {
			procs[p.Name] = p
		}
	}
	return procs, fmt.Sprintf("exit %d, stdout %q, stderr %q", code, out, errOut)
}

// waitNothingPreparedWithoutMaster waits until, with the master down, every one of nodes is up
// and holds no prepared transaction.
func waitNothingPreparedWithoutMaster(t *testing.T, c *testCluster, nodes ...string) {
	t.Helper()
	waitFor(t, 10*time.Second, "every node settled its prepared transactions without the master", func() (bool, string) {
		procs, state := nodeStatus(c)
		if procs[txn.MasterName].Up {
			t.Fatalf("the master should be down: %s", state)
		}
		for _, n := range nodes {
			if p := procs[n]; !p.Up || len(p.Prepared) > 0 || p.LocksHeld > 0 {
				return false, state
			}
		}
		return true, state
	})
}
