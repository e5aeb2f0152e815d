package server

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvtx/kvtx/wire"
)

// gathered returns every metric of reg as "name{label,...}", sorted.
func gathered(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range families {
		var labels []string
		for _, l := range f.GetMetric()[0].GetLabel() {
			labels = append(labels, l.GetName())
		}
		out = append(out, f.GetName()+"{"+strings.Join(labels, ",")+"}")
	}
	slices.Sort(out)
	return out
}

// The protocol's measurements reach Prometheus under the metric names and labels that the
// README lists and dashboards query; a rename would break them silently.
func TestProtocolMetricsKeepTheirNamesAndLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMasterMetrics(reg)
	m.watch(func() (int, int) { return 3, 1 })
	m.TxnDone("2pc", "committed", time.Millisecond)
	m.PhaseDone("prepare", time.Millisecond)
	m.Recovered("redrive_commit")
	m.CommitNotPrepared("node2")
	m.observeFsync(time.Millisecond)
	s := newServerMetrics(reg)
	s.Request(wire.MsgGet, wire.CodeOK, time.Millisecond)
	s.ConnOpened()
	want := []string{
		"kvtx_commit_not_prepared_total{node}", "kvtx_commits_unacknowledged{}", "kvtx_connections{}",
		"kvtx_fsync_duration_seconds{}", "kvtx_gc_safe_point_age_seconds{}", "kvtx_gc_safe_point{}", "kvtx_recovery_actions_total{kind}", "kvtx_request_duration_seconds{type}",
		"kvtx_requests_total{code,type}", "kvtx_txn_duration_seconds{path}", "kvtx_txn_phase_duration_seconds{phase}",
		"kvtx_txn_total{outcome,path}", "kvtx_txns_in_flight{}",
	}
	if got := gathered(t, reg); !slices.Equal(got, want) {
		t.Errorf("master metrics:\n got %v\nwant %v", got, want)
	}

	reg = prometheus.NewRegistry()
	n := newNodeMetrics(reg, func() nodeGauges { return nodeGauges{locks: 2} })
	n.Step("prepare", wire.CodeConflict)
	n.Recovered("abort")
	n.InDoubt(1)
	n.observeFsync(time.Millisecond)
	want = []string{
		"kvtx_badger_lsm_bytes{}", "kvtx_badger_vlog_bytes{}", "kvtx_fsync_duration_seconds{}", "kvtx_gc_safe_point{}", "kvtx_gc_versions_discarded_total{}", "kvtx_in_doubt_txns{}",
		"kvtx_locks_held{}", "kvtx_node_txn_total{code,step}", "kvtx_oldest_prepared_age_seconds{}",
		"kvtx_prepared_txns{}", "kvtx_recovery_actions_total{kind}", "kvtx_storage_alarm{alarm}", "kvtx_storage_quota_bytes{}", "kvtx_storage_used_bytes{}",
	}
	if got := gathered(t, reg); !slices.Equal(got, want) {
		t.Errorf("node metrics:\n got %v\nwant %v", got, want)
	}
	families, _ := reg.Gather()
	conflicts := false
	for _, f := range families {
		if f.GetName() != "kvtx_node_txn_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["step"] == "prepare" && labels["code"] == wire.CodeConflict.String() && m.GetCounter().GetValue() == 1 {
				conflicts = true
			}
		}
	}
	if !conflicts {
		t.Errorf("a prepare that met a conflict is not counted with code %q", wire.CodeConflict)
	}
	// Series with known labels exist before their first event.
	mreg, nreg := prometheus.NewRegistry(), prometheus.NewRegistry()
	newMasterMetrics(mreg)
	newNodeMetrics(nreg, func() nodeGauges { return nodeGauges{} })
	series := map[string]bool{}
	mfam, err := mreg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	nfam, err := nreg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range append(mfam, nfam...) {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			series[f.GetName()+"{"+strings.Join(labels, ",")+"}"] = true
		}
	}
	for _, s := range []string{
		"kvtx_txn_total{outcome=aborted,path=2pc}", "kvtx_txn_total{outcome=unknown,path=1pc}",
		"kvtx_txn_phase_duration_seconds{phase=decision}", "kvtx_recovery_actions_total{kind=redrive_commit}",
		"kvtx_node_txn_total{code=ok,step=prepare}", "kvtx_recovery_actions_total{kind=abort}",
		"kvtx_storage_alarm{alarm=nospace}",
	} {
		if !series[s] {
			t.Errorf("series %s not exported before its first event", s)
		}
	}
}
