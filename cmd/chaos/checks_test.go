package chaos

import (
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
