package server

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/wire"
)

// latencyBuckets spans 50µs to ~6.5s: fsyncs and loopback round trips sit at the low end,
// timeouts at the high end.
var latencyBuckets = prometheus.ExponentialBuckets(50e-6, 2, 18)

// newRegistry returns a registry with the Go and process collectors, which every kvtx process
// exports.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// serverMetrics are the request and connection metrics every process exports.
type serverMetrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	connections prometheus.Gauge
}

var _ wire.Observer = (*serverMetrics)(nil)

// newServerMetrics registers kvtx_requests_total, kvtx_request_duration_seconds and
// kvtx_connections on reg.
func newServerMetrics(reg prometheus.Registerer) *serverMetrics {
	m := &serverMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvtx_requests_total", Help: "Requests handled, by message type and reply code.",
		}, []string{"type", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kvtx_request_duration_seconds", Help: "Time to handle a request, by message type.", Buckets: latencyBuckets,
		}, []string{"type"}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kvtx_connections", Help: "Open protocol connections.",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.connections)
	return m
}

// ConnOpened implements wire.Observer.
func (m *serverMetrics) ConnOpened() { m.connections.Inc() }

// ConnClosed implements wire.Observer.
func (m *serverMetrics) ConnClosed() { m.connections.Dec() }

// Request implements wire.Observer.
func (m *serverMetrics) Request(t wire.MsgType, code wire.Code, d time.Duration) {
	m.requests.WithLabelValues(t.String(), code.String()).Inc()
	m.duration.WithLabelValues(t.String()).Observe(d.Seconds())
}

// registerInFlight registers the gauges of srv's in-flight budget (wire.ServerConfig's
// MaxBytesInFlight): kvtx_inflight_request_bytes, kvtx_inflight_requests and
// kvtx_inflight_waiting_requests. Refusals show in kvtx_requests_total{code="busy"}.
func registerInFlight(reg prometheus.Registerer, srv *wire.Server, limit int64) {
	gauge := func(name, help string, f func(wire.InFlight) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(srv.InFlight()) })
	}
	lim := prometheus.NewGauge(prometheus.GaugeOpts{Name: "kvtx_inflight_limit_bytes", Help: "The in-flight budget: limits.max_inflight_bytes."})
	lim.Set(float64(limit))
	reg.MustRegister(lim,
		gauge("kvtx_inflight_request_bytes", "Bytes of requests read and not yet answered.", func(i wire.InFlight) float64 { return float64(i.Bytes) }),
		gauge("kvtx_inflight_requests", "Requests read and not yet answered.", func(i wire.InFlight) float64 { return float64(i.Requests) }),
		gauge("kvtx_inflight_waiting_requests", "Requests waiting for room in the in-flight budget.", func(i wire.InFlight) float64 { return float64(i.Waiting) }),
	)
}

func newFsyncHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "kvtx_fsync_duration_seconds", Help: "Duration of one group fsync round.", Buckets: latencyBuckets,
	})
}

func newRecoveryCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvtx_recovery_actions_total", Help: "Recovery actions, by kind.",
	}, []string{"kind"})
}

// masterMetrics are the coordinator's metrics in Prometheus.
type masterMetrics struct {
	txns     *prometheus.CounterVec
	txnDur   *prometheus.HistogramVec
	phaseDur *prometheus.HistogramVec
	fsync    prometheus.Histogram
	recovery *prometheus.CounterVec
	lost     *prometheus.CounterVec
	inFlight atomic.Pointer[func() (inFlight, unacked int)]
	safe     atomic.Pointer[func() uint64]
	safeAge  atomic.Pointer[func() time.Duration]
}

var _ txn.CoordinatorMetrics = (*masterMetrics)(nil)

// newMasterMetrics registers the master's metrics on reg. The in-flight gauges read nothing
// until watch is called.
func newMasterMetrics(reg prometheus.Registerer) *masterMetrics {
	m := &masterMetrics{
		txns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvtx_txn_total", Help: "Write transactions finished, by path (1pc, 2pc) and outcome (committed, aborted, unknown).",
		}, []string{"path", "outcome"}),
		txnDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kvtx_txn_duration_seconds", Help: "Write transaction latency at the master, by path.", Buckets: latencyBuckets,
		}, []string{"path"}),
		phaseDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kvtx_txn_phase_duration_seconds", Help: "Two-phase commit phase latency: prepare (all votes), decision (durable record), commit (all acks).", Buckets: latencyBuckets,
		}, []string{"phase"}),
		fsync:    newFsyncHistogram(),
		recovery: newRecoveryCounter(),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvtx_commit_not_prepared_total",
			Help: "Commits a node refused because it never prepared the transaction: it lost a prepare record (a wiped data directory), so that shard misses a committed transaction's writes.",
		}, []string{"node"}),
	}
	read := func(unacked bool) float64 {
		f := m.inFlight.Load()
		if f == nil {
			return 0
		}
		i, u := (*f)()
		if unacked {
			return float64(u)
		}
		return float64(i)
	}
	// Every series with known labels exists from start-up, at 0, so that rate() and dashboards
	// see it before its first event.
	for _, path := range []string{"1pc", "2pc"} {
		m.txnDur.WithLabelValues(path)
		for _, outcome := range []string{"committed", "aborted", "unknown"} {
			m.txns.WithLabelValues(path, outcome)
		}
	}
	for _, phase := range []string{"prepare", "decision", "commit"} {
		m.phaseDur.WithLabelValues(phase)
	}
	m.recovery.WithLabelValues("redrive_commit")
	reg.MustRegister(m.txns, m.txnDur, m.phaseDur, m.fsync, m.recovery, m.lost,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kvtx_txns_in_flight", Help: "Two-phase transactions the master is driving (preparing or committing).",
		}, func() float64 { return read(false) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kvtx_commits_unacknowledged", Help: "Committed transactions whose phase 2 some participant has not acknowledged yet.",
		}, func() float64 { return read(true) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kvtx_gc_safe_point", Help: "The GC safe point the master keeps: reads below it fail with compacted (0: none yet).",
		}, func() float64 {
			if f := m.safe.Load(); f != nil {
				return float64((*f)())
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kvtx_gc_safe_point_age_seconds", Help: "How long ago the oracle handed out the GC safe point: the retention while GC keeps up (0: none yet).",
		}, func() float64 {
			if f := m.safeAge.Load(); f != nil {
				return (*f)().Seconds()
			}
			return 0
		}))
	return m
}

// observeFsync records one fsync round of the decision log.
func (m *masterMetrics) observeFsync(d time.Duration) { m.fsync.Observe(d.Seconds()) }

// watch makes the in-flight gauges read f at scrape time, so that the commit path pays
// nothing for them.
func (m *masterMetrics) watch(f func() (inFlight, unacked int)) { m.inFlight.Store(&f) }

// watchSafePoint makes the safe-point gauge read f at scrape time.
func (m *masterMetrics) watchSafePoint(f func() uint64, age func() time.Duration) {
	m.safe.Store(&f)
	m.safeAge.Store(&age)
}

// TxnDone implements txn.CoordinatorMetrics.
func (m *masterMetrics) TxnDone(path, outcome string, d time.Duration) {
	m.txns.WithLabelValues(path, outcome).Inc()
	m.txnDur.WithLabelValues(path).Observe(d.Seconds())
}

// PhaseDone implements txn.CoordinatorMetrics.
func (m *masterMetrics) PhaseDone(phase string, d time.Duration) {
	m.phaseDur.WithLabelValues(phase).Observe(d.Seconds())
}

// Recovered implements txn.CoordinatorMetrics.
func (m *masterMetrics) Recovered(kind string) { m.recovery.WithLabelValues(kind).Inc() }

// CommitNotPrepared implements txn.CoordinatorMetrics.
func (m *masterMetrics) CommitNotPrepared(node string) { m.lost.WithLabelValues(node).Inc() }

// nodeMetrics are the participant's metrics in Prometheus.
type nodeMetrics struct {
	fsync    prometheus.Histogram
	recovery *prometheus.CounterVec
	inDoubt  prometheus.Gauge
	txns     *prometheus.CounterVec
}

var _ txn.ParticipantMetrics = (*nodeMetrics)(nil)

// nodeGauges are the values a node's gauges show, read at scrape time.
type nodeGauges struct {
	locks, prepared     int
	oldestPrepared      time.Duration
	lsmBytes, vlogBytes int64
	safePoint           uint64
	discarded           uint64 // a counter: entries compactions dropped since the node started
	usedBytes           int64  // the shard on disk, as the quota counts it
	quotaBytes          int64  // 0: no quota
	noSpace             bool   // the space alarm: new writes refused
}

// newNodeMetrics registers the node's metrics on reg; the gauges of locks, prepared
// transactions and Badger sizes are read from gauges at scrape time (once per scrape).
func newNodeMetrics(reg prometheus.Registerer, gauges func() nodeGauges) *nodeMetrics {
	m := &nodeMetrics{
		fsync:    newFsyncHistogram(),
		recovery: newRecoveryCounter(),
		inDoubt: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kvtx_in_doubt_txns", Help: "Prepared transactions older than the in-doubt timeout whose outcome this node could not learn yet.",
		}),
		txns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvtx_node_txn_total", Help: "Transactions this node took part in, by step (apply, prepare, commit, abort) and result code.",
		}, []string{"step", "code"}),
	}
	for _, kind := range []string{"commit", "abort"} {
		m.recovery.WithLabelValues(kind)
	}
	for _, step := range []string{"apply", "prepare", "commit", "abort", "outcome"} {
		m.txns.WithLabelValues(step, wire.CodeOK.String())
	}
	reg.MustRegister(m.fsync, m.recovery, m.inDoubt, m.txns, &nodeGaugeCollector{read: gauges})
	return m
}

// nodeGaugeCollector reads the node's state once per scrape and reports every gauge from it.
type nodeGaugeCollector struct {
	read func() nodeGauges
}

var nodeGaugeDescs = []*prometheus.Desc{
	prometheus.NewDesc("kvtx_locks_held", "Keys locked by prepared or applying transactions.", nil, nil),
	prometheus.NewDesc("kvtx_prepared_txns", "Transactions prepared on this node and not yet committed or aborted.", nil, nil),
	prometheus.NewDesc("kvtx_oldest_prepared_age_seconds", "Age of the oldest prepared transaction (0 when none).", nil, nil),
	prometheus.NewDesc("kvtx_badger_lsm_bytes", "Disk space the shard's Badger LSM tables take.", nil, nil),
	prometheus.NewDesc("kvtx_badger_vlog_bytes", "Disk space the shard's Badger value log takes.", nil, nil),
	prometheus.NewDesc("kvtx_gc_safe_point", "The shard's durable GC safe point: reads below it fail with compacted, older versions may be dropped (0: none).", nil, nil),
	prometheus.NewDesc("kvtx_storage_used_bytes", "Disk space the shard takes (every file of its Badger directory, as du counts it): what storage.quota_bytes bounds.", nil, nil),
	prometheus.NewDesc("kvtx_storage_quota_bytes", "The node's disk quota, storage.quota_bytes (0: none).", nil, nil),
	prometheus.NewDesc("kvtx_storage_alarm", "1 while the node's alarm is raised: nospace, at or over its disk quota, new writes refused.", nil, prometheus.Labels{"alarm": txn.AlarmNoSpace}),
}

// discardedDesc is the counter the collector reports beside the gauges.
var discardedDesc = prometheus.NewDesc("kvtx_gc_versions_discarded_total",
	"Entries the shard's compactions dropped: versions older than a key's newest at or below the GC safe point, and deletions below it.", nil, nil)

// Describe implements prometheus.Collector.
func (c *nodeGaugeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range nodeGaugeDescs {
		ch <- d
	}
	ch <- discardedDesc
}

// Collect implements prometheus.Collector.
func (c *nodeGaugeCollector) Collect(ch chan<- prometheus.Metric) {
	g := c.read()
	noSpace := 0.0
	if g.noSpace {
		noSpace = 1
	}
	values := []float64{float64(g.locks), float64(g.prepared), g.oldestPrepared.Seconds(), float64(g.lsmBytes), float64(g.vlogBytes), float64(g.safePoint),
		float64(g.usedBytes), float64(g.quotaBytes), noSpace}
	for i, d := range nodeGaugeDescs {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, values[i])
	}
	ch <- prometheus.MustNewConstMetric(discardedDesc, prometheus.CounterValue, float64(g.discarded))
}

// observeFsync records one fsync round of the shard.
func (m *nodeMetrics) observeFsync(d time.Duration) { m.fsync.Observe(d.Seconds()) }

// Step implements txn.ParticipantMetrics.
func (m *nodeMetrics) Step(step string, code wire.Code) {
	m.txns.WithLabelValues(step, code.String()).Inc()
}

// Recovered implements txn.ParticipantMetrics.
func (m *nodeMetrics) Recovered(kind string) { m.recovery.WithLabelValues(kind).Inc() }

// InDoubt implements txn.ParticipantMetrics.
func (m *nodeMetrics) InDoubt(n int) { m.inDoubt.Set(float64(n)) }
