package chaos

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kvtx/kvtx/cmd/internal/cluster"
	"github.com/kvtx/kvtx/txn"
)

func TestScheduleReplaysFromTheSeed(t *testing.T) {
	for _, k := range append(slices.Clone(AllFaults), FaultMixed) {
		a := Schedule(k, 42, 20*time.Second, 2, cluster.ShortTimeouts())
		b := Schedule(k, 42, 20*time.Second, 2, cluster.ShortTimeouts())
		c := Schedule(k, 43, 20*time.Second, 2, cluster.ShortTimeouts())
		if len(a) == 0 || !slices.Equal(a, b) {
			t.Fatalf("%s: same seed, different schedules (%d, %d steps)", k, len(a), len(b))
		}
		if slices.Equal(a, c) {
			t.Fatalf("%s: different seeds, same schedule", k)
		}
	}
	// Every crash point comes up in a long enough crash-point schedule.
	seen := map[string]bool{}
	for _, s := range Schedule(FaultCrashPoint, 7, 60*time.Second, 2, cluster.ShortTimeouts()) {
		seen[s.Point] = true
	}
	for _, p := range txn.CrashPoints {
		if !seen[p] {
			t.Errorf("crash point %s never scheduled", p)
		}
	}
}

func at(ms int) time.Time { return time.Unix(1000, 0).Add(time.Duration(ms) * time.Millisecond) }

func TestRegisterCheckFindsAStaleReadAndDrawsIt(t *testing.T) {
	sm := txn.NewShardMap([]string{"node1", "node2"})
	r := NewRegister(sm, 1)
	r.Dir = t.TempDir()
	k := r.groups[0][0]
	ops := []Op{
		{ID: 1, Workload: "register", Client: 0, Kind: "write", Write: true, Keys: []string{k}, In: []string{"v1"}, Invoke: at(0), Return: at(10), Status: OK},
		{ID: 2, Workload: "register", Client: 1, Kind: "read", Keys: []string{k}, Out: []string{""}, Found: []bool{false}, Invoke: at(20), Return: at(30), Status: OK},
	}
	rep := &Report{}
	if err := r.Check(t.Context(), nil, ops, rep); err != nil {
		t.Fatal(err)
	}
	if rep.Violations()[invLinearizable] != 1 {
		t.Fatalf("stale read not caught: %s", rep)
	}
	if _, err := os.Stat(filepath.Join(r.Dir, "register-porcupine.html")); err != nil {
		t.Fatalf("no visualization: %v", err)
	}
	// An unknown write may take effect late: a read after it may see it, or not.
	ops[0].Status, ops[0].Return = Unknown, time.Time{}
	ops = append(ops, Op{ID: 3, Workload: "register", Client: 2, Kind: "read", Keys: []string{k}, Out: []string{"v1"}, Found: []bool{true}, Invoke: at(40), Return: at(50), Status: OK})
	rep = &Report{}
	if err := r.Check(t.Context(), nil, ops, rep); err != nil {
		t.Fatal(err)
	}
	if n := rep.Violations()[invLinearizable]; n != 0 {
		t.Fatalf("an unknown write taking effect late is linearizable: %s", rep)
	}
}

func TestAppendCheckFindsHalfATransaction(t *testing.T) {
	sm := txn.NewShardMap([]string{"node1", "node2"})
	a := NewAppend(sm, 1)
	ops := []Op{
		{ID: 1, Workload: "append", Kind: "append", Write: true, In: []string{"1"}, Status: OK, Applied: true},
		{ID: 2, Workload: "append", Kind: "append", Write: true, In: []string{"2"}, Status: Failed, Applied: false},
		{ID: 3, Workload: "append", Kind: "append", Write: true, In: []string{"3"}, Status: OK, Applied: true},
		{ID: 4, Workload: "append", Kind: "read", Out: []string{"1", ""}, Found: []bool{true, false}, Status: OK},
	}
	// Shard 1 lost acknowledged id 3 and shows failed id 2; the read saw half of txn 1.
	final := [][][]string{{{"1", "3"}, {"1", "2"}}}
	rep := &Report{}
	a.checkHistory(final, ops, rep)
	v := rep.Violations()
	for _, inv := range []string{invAppendAcked, invAppendAtomic, invAppendAborted, invAppendSnapshot, invAppendMarker} {
		if v[inv] == 0 {
			t.Errorf("%s not caught:\n%s", inv, rep)
		}
	}
	if v[invAppendOrder] != 0 || v[invAppendDup] != 0 {
		t.Errorf("false alarm:\n%s", rep)
	}
	if !strings.Contains(rep.String(), "FAIL") || rep.Err() == nil {
		t.Errorf("report does not fail")
	}
}

func TestPowerLossScheduleCutsOneMachineOrEveryOne(t *testing.T) {
	if k, err := ParseFaultKind("powerloss"); err != nil || k != FaultPowerLoss || !NeedsPowerLoss(k) || !NeedsPowerLoss(FaultMixed) || NeedsPowerLoss(FaultKill) {
		t.Fatalf("powerloss: %v, %v", k, err)
	}
	valid := map[string]bool{AllTargets: true, txn.MasterName: true, "node1": true, "node2": true}
	for seed := uint64(0); seed < 50; seed++ {
		steps := Schedule(FaultPowerLoss, seed, 8*time.Second, 2, cluster.ShortTimeouts())
		if len(steps) < 2 {
			t.Fatalf("seed %d: %d steps in 8s", seed, len(steps))
		}
		whole := 0
		for _, s := range steps {
			if s.Kind != FaultPowerLoss || !valid[s.Target] || s.Hold <= 0 || !strings.Contains(s.String(), "power cut") {
				t.Fatalf("seed %d: bad step %+v (%s)", seed, s, s)
			}
			if s.Target == AllTargets {
				whole++
			}
		}
		if whole == 0 {
			t.Fatalf("seed %d: no whole-cluster power cut in %v", seed, steps)
		}
	}
	drawn := false
	for _, s := range Schedule(FaultMixed, 1, 120*time.Second, 2, cluster.ShortTimeouts()) {
		drawn = drawn || s.Kind == FaultPowerLoss
	}
	if !drawn {
		t.Fatal("mixed never draws powerloss")
	}
}

func TestMarkerCheckFindsALostAndAHalfAppliedWrite(t *testing.T) {
	sm := txn.NewShardMap([]string{"node1", "node2"})
	ks := keyspace{sm}
	if m := ks.markers(7, []int{1, 0, 1}); len(m) != 2 || sm.Shard([]byte(m[0])) != 1 || sm.Shard([]byte(m[1])) != 0 {
		t.Fatalf("markers of shards 1, 0, 1: %v", m)
	}
	two := ks.markers(1, []int{0, 1})
	ops := []Op{
		{ID: 1, Workload: "bank", Kind: "transfer", Write: true, Markers: two, Status: OK, MarkersFound: 2, Applied: true},
		{ID: 2, Workload: "bank", Kind: "transfer", Write: true, Markers: two, Status: OK, MarkersFound: 0},       // lost
		{ID: 3, Workload: "register", Kind: "write", Write: true, Markers: two, Status: OK, MarkersFound: 1},      // lost on one shard
		{ID: 4, Workload: "register", Kind: "write", Write: true, Markers: two, Status: Unknown, MarkersFound: 1}, // half
		{ID: 5, Workload: "register", Kind: "write", Write: true, Markers: two[:1], Status: Failed},
		{ID: 6, Workload: "register", Kind: "read"},
	}
	rep := &Report{Fault: FaultPowerLoss}
	(&runner{report: rep}).checkMarkers(ops)
	v := rep.Violations()
	if v[invMarkerAcked] != 2 || v[invHalfApplied] != 2 || v[invMarkerFailed] != 0 {
		t.Fatalf("violations %v:\n%s", v, rep)
	}
	if rep.AckedChecked != 3 || rep.Lost != 2 || rep.HalfApplied != 2 || rep.Err() == nil {
		t.Fatalf("checked %d lost %d half %d err %v", rep.AckedChecked, rep.Lost, rep.HalfApplied, rep.Err())
	}
	if s := rep.String(); !strings.Contains(s, "checked 3 (a marker per shard read back)  lost 2  half-applied 2") || !strings.Contains(s, "FAIL") || !strings.Contains(s, "power cuts") {
		t.Fatalf("report:\n%s", s)
	}
}

func TestRegisterFinalReadFindsALostAcknowledgedWrite(t *testing.T) {
	sm := txn.NewShardMap([]string{"node1", "node2"})
	r := NewRegister(sm, 1)
	keys := r.groups[0]
	write := Op{ID: 1, Workload: "register", Client: 0, Kind: "write", Write: true, Keys: []string{keys[1]}, In: []string{"v1"}, Invoke: at(0), Return: at(10), Status: OK}
	final := Op{ID: -1, Workload: "register", Client: 1, Kind: "read", Keys: keys[:], Out: []string{"", ""}, Found: []bool{false, false}, Invoke: at(100), Return: at(110), Status: OK}
	rep := &Report{}
	r.checkHistory([]Op{write}, rep)
	if rep.Violations()[invLinearizable] != 0 {
		t.Fatalf("a lone write is linearizable: %s", rep)
	}
	rep = &Report{}
	r.checkHistory([]Op{write, final}, rep)
	if rep.Violations()[invLinearizable] != 1 {
		t.Fatalf("final read without the acknowledged write not caught: %s", rep)
	}
	final.Out[1], final.Found[1] = "v1", true
	rep = &Report{}
	r.checkHistory([]Op{write, final}, rep)
	if rep.Violations()[invLinearizable] != 0 {
		t.Fatalf("false alarm: %s", rep)
	}
}

// scanOp is a successful scan of the keys of values, in key order (swap: the first two out of
// order), invoked at ms.
func scanOp(workload string, id int64, ms int, values map[string]string, swap bool) Op {
	keys := slices.Sorted(maps.Keys(values))
	if swap {
		keys[0], keys[1] = keys[1], keys[0]
	}
	op := Op{ID: id, Workload: workload, Kind: "scan", Group: -1, Keys: keys, Invoke: at(ms), Return: at(ms + 5), Status: OK}
	for _, k := range keys {
		op.Out, op.Found = append(op.Out, values[k]), append(op.Found, true)
	}
	return op
}

func TestBankScanCheckFindsAnUnbalancedANegativeAndAMisorderedScan(t *testing.T) {
	b := NewBank(txn.NewShardMap([]string{"node1", "node2"}), 8, 100)
	balances := func(changes map[int]string) map[string]string {
		m := map[string]string{}
		for i, a := range b.accounts {
			m[a] = "100"
			if v, ok := changes[i]; ok {
				m[a] = v
			}
		}
		return m
	}
	halfTransfer := balances(map[int]string{0: "90"}) // debited, not credited
	delete(halfTransfer, b.accounts[3])               // and an account missing
	ops := []Op{
		scanOp("bank", 1, 0, balances(nil), false),
		scanOp("bank", 2, 10, halfTransfer, false),
		scanOp("bank", 3, 20, balances(map[int]string{1: "-10", 2: "210"}), false),
		scanOp("bank", 4, 30, balances(nil), true),
	}
	failed := scanOp("bank", 5, 40, balances(map[int]string{0: "-5"}), false)
	failed.Status = Failed // what a failed scan read proves nothing
	ops = append(ops, failed)

	rep := &Report{}
	b.checkHistory(ops[:1], rep)
	if rep.Err() != nil {
		t.Fatalf("false alarm on a balanced scan:\n%s", rep)
	}
	rep = &Report{}
	b.checkHistory(ops, rep)
	v := rep.Violations()
	if v[invBankScanTotal] != 1 || v[invBankScanNegative] != 1 || v[invScanKeys] != 1 {
		t.Fatalf("violations %v, want one of each scan invariant:\n%s", v, rep)
	}
	if v["bank: total never changes"] != 0 || v["bank: no negative balance"] != 0 {
		t.Fatalf("scans counted as snapshot reads: %v", v)
	}
	if s := rep.String(); !strings.Contains(s, "scan 2 at") || !strings.Contains(s, "FAIL") {
		t.Fatalf("report does not name the unbalanced scan:\n%s", s)
	}
}

func TestAppendScanCheckFindsHalfAnAppendAStaleListAndAMissedAcknowledgement(t *testing.T) {
	a := NewAppend(txn.NewShardMap([]string{"node1", "node2"}), 2)
	g0, g1 := a.groups[0], a.groups[1]
	lists := func(l00, l01, l10, l11 string) map[string]string {
		m := map[string]string{}
		for k, v := range map[string]string{g0[0]: l00, g0[1]: l01, g1[0]: l10, g1[1]: l11} {
			if v != "" { // a missing key is an empty list
				m[k] = v
			}
		}
		return m
	}
	ops := []Op{
		{ID: 1, Workload: "append", Kind: "append", Write: true, Group: 0, In: []string{"1"}, Invoke: at(0), Return: at(10), Status: OK, Applied: true},
		{ID: 2, Workload: "append", Kind: "append", Write: true, Group: 1, In: []string{"2"}, Invoke: at(0), Return: at(20), Status: OK, Applied: true},
		{ID: 3, Workload: "append", Kind: "append", Write: true, Group: 0, In: []string{"3"}, Invoke: at(40), Return: at(100), Status: OK, Applied: true},
		scanOp("append", 4, 50, lists("1", "1", "2", "2"), false),     // sound
		scanOp("append", 5, 50, lists("1,3", "1", "2", "2"), false),   // half of append 3
		scanOp("append", 6, 5, lists("3,1", "3,1", "", ""), false),    // not a prefix, on both shards
		scanOp("append", 7, 30, lists("1", "1", "", ""), false),       // misses append 2, acknowledged at 20
		scanOp("append", 8, 50, lists("1", "1", "2", "2"), true),      // keys out of order
		scanOp("append", 9, 90, lists("1,3", "1,3", "2", "2"), false), // append 3 is in flight: may be seen
		scanOp("append", 10, 95, lists("1", "1", "2", "2"), false),    // ... or not
	}
	final := [][][]string{{{"1", "3"}, {"1", "3"}}, {{"2"}, {"2"}}}

	rep := &Report{}
	a.checkHistory(final, append(slices.Clone(ops[:4]), ops[8:]...), rep)
	if rep.Err() != nil {
		t.Fatalf("false alarm on sound scans:\n%s", rep)
	}
	rep = &Report{}
	a.checkHistory(final, ops, rep)
	v := rep.Violations()
	want := map[string]int{invAppendScanSnapshot: 1, invAppendScanPrefix: 2, invAppendScanRecent: 1, invScanKeys: 1}
	for inv, n := range want {
		if v[inv] != n {
			t.Errorf("%s: %d violations, want %d", inv, v[inv], n)
		}
	}
	for _, inv := range []string{invAppendSnapshot, invAppendPrefix, invAppendAcked, invAppendAtomic} {
		if v[inv] != 0 {
			t.Errorf("%s: %d violations, want none (scans are not snapshot reads)", inv, v[inv])
		}
	}
	if t.Failed() {
		t.Logf("report:\n%s", rep)
	}
}
