package bench

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

func TestLatencySummaryOfAKnownDistribution(t *testing.T) {
	h := newLatencyHist()
	for us := 1; us <= 10_000; us++ {
		h.record(time.Duration(us) * time.Microsecond)
	}
	s := h.summary()
	// HDR with 3 significant digits: every quantile is within 0.1% of the exact one.
	for _, c := range []struct {
		name      string
		got, want int64
	}{{"p50", s.P50, 5000}, {"p95", s.P95, 9500}, {"p99", s.P99, 9900}, {"p99.9", s.P999, 9990}} {
		if math.Abs(float64(c.got-c.want)) > 0.001*float64(c.want)+1 {
			t.Errorf("%s = %dµs, want %dµs within 0.1%%", c.name, c.got, c.want)
		}
	}
	if s.Max != 10_000 {
		t.Errorf("max = %d, want exactly 10000", s.Max)
	}
	if math.Abs(s.Mean-5000.5) > 5 {
		t.Errorf("mean = %v, want 5000.5", s.Mean)
	}
}

func TestMergedHistogramsEqualOneHistogramOfAllValues(t *testing.T) {
	a, b, all := newLatencyHist(), newLatencyHist(), newLatencyHist()
	for i := 1; i <= 5000; i++ {
		d := time.Duration(i*i%7919) * time.Microsecond
		all.record(d)
		if i%3 == 0 {
			a.record(d)
		} else {
			b.record(d)
		}
	}
	a.merge(b)
	if a.summary() != all.summary() || a.count() != 5000 {
		t.Errorf("merged %+v (%d values), want %+v (5000)", a.summary(), a.count(), all.summary())
	}
}

func TestHistogramClampsOutOfRangeLatencies(t *testing.T) {
	h := newLatencyHist()
	h.record(0)
	h.record(time.Hour)
	if h.count() != 2 {
		t.Fatalf("%d values recorded, want 2", h.count())
	}
	if s := h.summary(); s.Max != histMaxMicros || h.quantile(0) != histMinMicros {
		t.Errorf("min %d max %d, want %d and %d", h.quantile(0), s.Max, histMinMicros, histMaxMicros)
	}
	if (newLatencyHist().summary() != Latency{}) {
		t.Errorf("an empty histogram has a non-zero summary")
	}
}

func TestDurationsAndRatesPrintInReadableUnits(t *testing.T) {
	for us, want := range map[int64]string{0: "0µs", 850: "850µs", 1250: "1.25ms", 12_500: "12.5ms", 125_000: "125ms", 1_200_000: "1.20s"} {
		if got := formatMicros(us); got != want {
			t.Errorf("formatMicros(%d) = %q, want %q", us, got, want)
		}
	}
	if got := formatRate(12345.6); got != "12346" {
		t.Errorf("formatRate = %q", got)
	}
	if got := formatCounts(map[string]int64{"conflict": 3, "compare_failed": 12}); got != "compare_failed 12, conflict 3" {
		t.Errorf("formatCounts = %q", got)
	}
	if got := formatCounts(nil); got != "0" {
		t.Errorf("formatCounts(nil) = %q", got)
	}
}

func sampleResult(target string, w Workload, clients int, tput float64, p50 int64) *Result {
	lat := Latency{P50: p50, P95: 2 * p50, P99: 3 * p50, P999: 4 * p50, Max: 5 * p50, Mean: float64(p50)}
	return &Result{
		Target: target, Workload: w, Clients: clients, Elapsed: 5, Ops: int64(tput * 5), Attempts: int64(tput*5) + 3,
		Throughput: tput, Latency: lat,
		ByOp:    []OpStats{{Op: string(w), Ops: int64(tput * 5), Throughput: tput, Latency: lat}},
		Aborts:  map[string]int64{"conflict": 2, ReasonCompareFailed: 1},
		Errors:  map[string]int64{},
		Unknown: 0,
		Params:  Params{Keys: 100, ValueSize: 10, Distribution: Uniform, DurationS: 5, WarmupS: 1},
		ErrorSamples: map[string]string{
			"abort conflict": "bench: conflict: key \"k\" locked\nby txn 7",
		},
	}
}

func TestResultTextShowsPercentilesAndAbortsByReason(t *testing.T) {
	var b bytes.Buffer
	if err := sampleResult("kvtx", WorkloadCAS, 4, 1000, 1500).WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"kvtx cas: 4 clients, 5s (+1s warm-up), 100 keys (uniform)", "P99.9", "1.50ms", "4.50ms",
		"aborts: compare_failed 1, conflict 2; unknown outcomes: 0; errors: 0", `locked; by txn 7`} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}
}

func TestResultJSONHasTheDocumentedFields(t *testing.T) {
	data, err := json.Marshal(sampleResult("etcd", WorkloadYCSBA, 64, 2000, 800))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"target", "workload", "clients", "params", "elapsed_s", "ops", "attempts", "throughput_ops_s", "latency_us", "by_op", "aborts", "unknown", "errors"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, data)
		}
	}
	lat := m["latency_us"].(map[string]any)
	for _, k := range []string{"p50", "p95", "p99", "p99_9", "max", "mean"} {
		if _, ok := lat[k]; !ok {
			t.Errorf("latency_us lacks %q", k)
		}
	}
}

func TestSuiteReportPrintsRatiosToKvtx(t *testing.T) {
	rep := &SuiteReport{
		Date: "2026-11-26T10:00:00Z", Nproc: 2, GOMAXPROCS: 2, GoVersion: "go1.26", Commit: "abc123", EtcdVersion: "3.4.23",
		Targets: []string{"kvtx", "badger", "etcd"},
		Results: []*Result{
			sampleResult("kvtx", WorkloadPut, 1, 1000, 500), sampleResult("badger", WorkloadPut, 1, 4000, 250), sampleResult("etcd", WorkloadPut, 1, 500, 1000),
			sampleResult("kvtx", WorkloadPut, 64, 9000, 5000), sampleResult("badger", WorkloadPut, 64, 9000, 5000),
		},
		PeakRSS: map[string]int64{"node1": 100 << 20},
		Notes:   []string{"etcd is late"},
	}
	var b bytes.Buffer
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := strings.Split(out, "\n")
	var ratioRow1, ratioRow64 string
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) > 2 && f[0] == "put" && f[2] != "kvtx" && f[2] != "badger" && f[2] != "etcd" { // a ratio row
			if f[1] == "1" {
				ratioRow1 = l
			} else {
				ratioRow64 = l
			}
		}
	}
	// put at 1 client: kvtx/badger 0.25x, kvtx/etcd 2.00x; p50 kvtx/badger 2.00x, kvtx/etcd 0.50x.
	if f := strings.Fields(ratioRow1); len(f) != 12 || f[5] != "0.25x" || f[6] != "2.00x" || f[10] != "2.00x" || f[11] != "0.50x" {
		t.Errorf("ratio row at 1 client = %q\n%s", ratioRow1, out)
	}
	// at 64 clients etcd did not run: its columns are dashes.
	if f := strings.Fields(ratioRow64); len(f) != 12 || f[4] != "-" || f[5] != "1.00x" || f[6] != "-" {
		t.Errorf("ratio row at 64 clients = %q\n%s", ratioRow64, out)
	}
	for _, want := range []string{"nproc 2", "kvtx commit abc123", "etcd 3.4.23", "node1 100 MiB", "NOTE: etcd is late"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteSVGIsWellFormedWithOneLinePerSeries(t *testing.T) {
	var b bytes.Buffer
	series := []ChartSeries{
		{Name: "kvtx", Points: []ChartPoint{{X: 1000, Y: 0.5, Label: "1c"}, {X: 9000, Y: 7.2, Label: "64c"}}},
		{Name: "etcd <&>", Points: []ChartPoint{{X: 800, Y: 1, Label: "1c"}}},
	}
	if err := WriteSVG(&b, "a & b", "p99 latency (ms)", series); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(b.Bytes()))
	elems := map[string]int{}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, b.String())
		}
		if se, ok := tok.(xml.StartElement); ok {
			elems[se.Name.Local]++
		}
	}
	if elems["svg"] != 1 || elems["polyline"] != 1 || elems["circle"] != 3 {
		t.Errorf("elements %v: want one svg, one polyline (one series has a single point), three circles", elems)
	}
	for _, want := range []string{">64c<", "etcd &lt;&amp;&gt;", "a &amp; b"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
}

func TestNiceScaleCoversTheMaximumInRoundSteps(t *testing.T) {
	for _, c := range []struct{ max, step, top float64 }{
		{9000, 2000, 10000}, {7.2, 2, 8}, {1, 0.2, 1.2}, {0, 1, 5}, {123456, 50000, 150000},
	} {
		step, top := niceScale(c.max)
		if math.Abs(step-c.step) > 1e-9 || math.Abs(top-c.top) > 1e-9 {
			t.Errorf("niceScale(%v) = %v, %v; want %v, %v", c.max, step, top, c.step, c.top)
		}
	}
}

func TestParseClientCounts(t *testing.T) {
	got, err := ParseClientCounts("1, 4,16,64")
	if err != nil || len(got) != 4 || got[3] != 64 {
		t.Errorf("ParseClientCounts = %v, %v", got, err)
	}
	for _, bad := range []string{"", "1,,2", "0", "x"} {
		if _, err := ParseClientCounts(bad); err == nil {
			t.Errorf("ParseClientCounts(%q) accepted", bad)
		}
	}
}

func TestSuiteReportPrintsServerCPUPerOperation(t *testing.T) {
	k, b, e := sampleResult("kvtx", WorkloadTxn, 64, 9000, 5000), sampleResult("badger", WorkloadTxn, 64, 40000, 1000), sampleResult("etcd", WorkloadTxn, 64, 7000, 9000)
	k.ServerCPU, k.ServerCPUOf = 150, "master+node1+node2"
	b.ServerCPU, b.ServerCPUOf = 40, "store and load generator"
	e.ServerCPU, e.ServerCPUOf = 100, "etcd"
	rep := &SuiteReport{Targets: []string{"kvtx", "badger", "etcd"}, Results: []*Result{k, b, e}}
	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "server CPU per operation (kvtx: master+node1+node2; badger: store and load generator; etcd: etcd)") {
		t.Errorf("no CPU table heading:\n%s", out)
	}
	var row []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 6 && f[0] == "txn" && strings.HasSuffix(f[2], "µs") {
			row = f
		}
	}
	if row == nil || row[2] != "150µs" || row[3] != "40µs" || row[4] != "100µs" || row[5] != "1.50x" {
		t.Errorf("CPU row = %q, want txn 64 150µs 40µs 100µs 1.50x:\n%s", row, out)
	}
}

func TestParseStatCPUCountsFieldsAfterTheCommandName(t *testing.T) {
	// A command name with a space and a parenthesis, as /proc/PID/stat allows.
	stat := "4242 (kv node) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 1234 567 0 0 20 0 9 0 100 0 0\n"
	got, err := parseStatCPU(stat)
	if err != nil || got != 1234+567 {
		t.Fatalf("parseStatCPU = %d, %v; want 1801", got, err)
	}
	if _, err := parseStatCPU("4242 (short) S 1 2"); err == nil {
		t.Fatal("a truncated line parsed")
	}
	if d, err := CPUTime(os.Getpid()); err != nil || d < 0 {
		t.Fatalf("CPUTime of this process = %v, %v", d, err)
	}
}

func TestTheTLSVerdictJudgesTheWorstWorkloadOverBothWindows(t *testing.T) {
	runs := func(txnPlain [2]float64) []TLSRun {
		return []TLSRun{
			{Workload: "put", Kvtx: [2]float64{9000, 9000}, Plain: [2]float64{11000, 9000}}, // 0.90
			{Workload: "txn", Kvtx: [2]float64{4000, 4000}, Plain: txnPlain},
			{Workload: "get", Kvtx: [2]float64{8000, 8000}}, // no plaintext windows: not judged
		}
	}
	for _, c := range []struct {
		txnPlain [2]float64
		want     string
	}{
		{[2]float64{4000, 4000}, "TLS goal (at most 15% lower throughput at 64 clients): met; worst put 0.90x, geometric mean 0.95x"},
		{[2]float64{3000, 7000}, "TLS goal (at most 15% lower throughput at 64 clients): INCONCLUSIVE (txn fell short, but its windows differ by more than the margin"},
		{[2]float64{5000, 5000}, "TLS goal (at most 15% lower throughput at 64 clients): MISSED; worst txn 0.80x, geometric mean 0.85x"},
	} {
		rep := &SuiteReport{Targets: []string{"kvtx", "kvtx-plain"}, TLS: NewTLSCost(64, runs(c.txnPlain))}
		var b bytes.Buffer
		if err := rep.WriteText(&b); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		for _, want := range []string{"TLS vs --insecure at 64 clients", "11000, 9000            0.90x     20%", c.want} {
			if !strings.Contains(out, want) {
				t.Errorf("report lacks %q:\n%s", want, out)
			}
		}
	}
	if c := NewTLSCost(64, []TLSRun{{Workload: "get", Kvtx: [2]float64{1, 1}}}); c != nil {
		t.Errorf("a verdict %+v without plaintext windows", c)
	}
	var b bytes.Buffer
	if err := (&SuiteReport{Targets: []string{"kvtx"}}).WriteText(&b); err != nil || strings.Contains(b.String(), "TLS") {
		t.Errorf("a suite without kvtx-plain printed a TLS verdict (%v):\n%s", err, b.String())
	}
}
