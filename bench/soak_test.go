package bench

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseStatusKBReadsRSSAndRssAnon(t *testing.T) {
	status := "Name:\tkvnode\nVmHWM:\t  300 kB\nVmRSS:\t  2048 kB\nRssAnon:\t  1024 kB\nRssFile:\t 1024 kB\n"
	v, err := parseStatusKB(strings.NewReader(status), "VmRSS", "RssAnon")
	if err != nil || v[0] != 2048<<10 || v[1] != 1024<<10 {
		t.Fatalf("parseStatusKB = %v, %v: want [2 MiB, 1 MiB]", v, err)
	}
	if _, err := parseStatusKB(strings.NewReader("VmRSS:\t2048 kB\n"), "VmRSS", "RssAnon"); err == nil {
		t.Fatal("a status without RssAnon parsed")
	}
}

func TestParseGaugesReadsUnlabelledMetrics(t *testing.T) {
	text := "# HELP go_goroutines Number of goroutines.\n# TYPE go_goroutines gauge\ngo_goroutines 57\n" +
		"go_memstats_heap_inuse_bytes 1.2e+07\ngo_goroutines_total{x=\"y\"} 3\n"
	v, err := parseGauges(strings.NewReader(text), "go_goroutines", "go_memstats_heap_inuse_bytes")
	if err != nil || v[0] != 57 || v[1] != 1.2e7 {
		t.Fatalf("parseGauges = %v, %v", v, err)
	}
	if _, err := parseGauges(strings.NewReader(text), "kvtx_missing"); err == nil {
		t.Fatal("a missing metric parsed")
	}
}

// A memtable WAL file is preallocated and sparse: the disk usage counts the blocks written, as
// du does, not its length; the transaction log and the Badger files are told apart.
func TestDiskUsageCountsAllocatedBlocksLikeDu(t *testing.T) {
	dir := t.TempDir()
	mem, err := os.Create(filepath.Join(dir, "00001.mem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := mem.Truncate(128 << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := mem.WriteAt(make([]byte, 64<<10), 0); err != nil {
		t.Fatal(err)
	}
	mem.Close()
	if err := os.WriteFile(filepath.Join(dir, "000002.sst"), bytes.Repeat([]byte{1}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, txnLogFile), bytes.Repeat([]byte{'x'}, 256<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	total, txnLog, tables, memtables, err := diskUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if tables != 1 || memtables != 1 {
		t.Errorf("%d tables and %d memtables, want 1 and 1", tables, memtables)
	}
	if txnLog < 256<<10 || txnLog > 512<<10 {
		t.Errorf("txn.log counted %d bytes, want about 256 KiB", txnLog)
	}
	// 64 KiB + 1 MiB + 256 KiB written, plus a few blocks of rounding; not the WAL's 128 MiB.
	if want := int64(64<<10 + 1<<20 + 256<<10); total < want || total > want+(1<<20) {
		t.Errorf("disk usage %d bytes, want about %d (the sparse WAL's written blocks only)", total, want)
	}
}

// soakRunOf builds a run of a master and one node from per-sample values: store, RSS and
// goroutines of the node, live and written bytes of its shard, one sample per second.
func soakRunOf(label string, store, rss []int64, goroutines []int, live, written []int64) *SoakRun {
	r := &SoakRun{Names: []string{"master", "node1"}, OldRead: "compacted", NewRead: "value"}
	if label == "off" {
		r.GC.Off, r.OldRead = true, "value"
	} else {
		r.GC.Retention = time.Second
	}
	for i := range store {
		r.Samples = append(r.Samples, SoakSample{
			At:      time.Duration(i) * time.Second,
			Procs:   []ProcSample{{Disk: 1 << 20, RSS: 50 << 20, Goroutines: 40}, {Disk: store[i], RSS: rss[i], Anon: rss[i] / 2, Goroutines: goroutines[i]}},
			Live:    []int64{live[i]},
			Written: []int64{written[i]},
		})
	}
	return r
}

// repeatN returns n copies of v.
func repeatN[T any](v T, n int) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// rampN returns n values from a by step.
func rampN(a, step int64, n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = a + step*int64(i)
	}
	return out
}

// soakReportOf is a report of a GC-on run that drops versions (its store is a saw that falls at
// each compaction) and a GC-off run that keeps them, 40 samples each, with changes applied to
// the GC-on run.
func soakReportOf(change func(store, rss []int64, goroutines []int)) *SoakReport {
	const n = 40
	cfg := SoakConfig{Duration: n * time.Second, Warmup: 8 * time.Second, SampleEvery: time.Second, Retention: time.Second, MemTableSize: 1 << 20}.withDefaults()
	written := rampN(0, 1<<20, n) // a MiB a second
	live := repeatN(int64(1<<20), n)
	storeOn := make([]int64, n) // a saw: a MiB more a second, back down every 8 seconds
	for i := range storeOn {
		storeOn[i] = 2<<20 + written[i]%(8<<20)
	}
	rss := repeatN(int64(100<<20), n)
	gor := repeatN(50, n)
	change(storeOn, rss, gor)
	storeOff := make([]int64, n)
	for i := range storeOff {
		storeOff[i] = written[i] * 3 / 2
	}
	return &SoakReport{Config: cfg, Runs: []*SoakRun{
		soakRunOf("on", storeOn, rss, gor, live, written),
		soakRunOf("off", storeOff, repeatN(int64(100<<20), n), repeatN(50, n), live, written),
	}}
}

func TestSoakChecksPassASteadyRunAndCatchEachKindOfGrowth(t *testing.T) {
	if err := soakReportOf(func([]int64, []int64, []int) {}).Check(); err != nil {
		t.Fatalf("a steady run fails: %v", err)
	}
	for _, c := range []struct {
		name, want string
		change     func(store, rss []int64, goroutines []int)
	}{
		{"store over the bound", "over the disk bound", func(store, _ []int64, _ []int) { store[30] = 100 << 20 }},
		{"no versions dropped", "GC dropped too little", func(store, _ []int64, _ []int) {
			for i := range store {
				store[i] = int64(i) << 20 * 3 / 2
			}
		}},
		{"store growing with the writes", "store grew", func(store, _ []int64, _ []int) {
			for i := range store {
				store[i] = 2<<20 + int64(i)<<20/4
			}
		}},
		{"anonymous RSS over the limit", "anonymous RSS", func(_, rss []int64, _ []int) { rss[3] = 500 << 20 }},
		{"RSS growing", "RSS grew", func(_, rss []int64, _ []int) {
			for i := range rss {
				rss[i] = int64(100+10*i) << 20 // 10 MiB more every second
			}
		}},
		{"goroutines leaking", "goroutines grew", func(_, _ []int64, gor []int) {
			for i := range gor {
				gor[i] = 50 + 10*i
			}
		}},
	} {
		err := soakReportOf(c.change).Check()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Check() = %v, want an error with %q", c.name, err, c.want)
		}
	}
	// A spike during the warm-up, and swings that reach the same height in both halves, pass.
	err := soakReportOf(func(_, rss []int64, gor []int) {
		rss[2], gor[2] = 190<<20, 90
		for i := 8; i < len(rss); i += 5 {
			rss[i] = 180 << 20
		}
	}).Check()
	if err != nil {
		t.Errorf("swings of the same height in both halves fail: %v", err)
	}
}

func TestSoakMechanismCheckWantsCompactedReadsOnlyWithGC(t *testing.T) {
	rep := soakReportOf(func([]int64, []int64, []int) {})
	rep.Runs[0].OldRead = "value"
	rep.Runs[1].OldRead = "compacted"
	err := rep.CheckMechanism()
	if err == nil || strings.Count(err.Error(), "first version") != 2 {
		t.Fatalf("CheckMechanism() = %v, want both marker reads reported", err)
	}
	rep = soakReportOf(func([]int64, []int64, []int) {})
	rep.Runs[1].Errors = map[string]int64{"not_found": 1}
	if err := rep.CheckMechanism(); err == nil || !strings.Contains(err.Error(), "not_found") {
		t.Fatalf("CheckMechanism() = %v, want the GC-off run's error", err)
	}
}

func TestDiskBoundIsTheTablesPlusTwiceLiveAndRetainedData(t *testing.T) {
	rep := soakReportOf(func([]int64, []int64, []int) {})
	on := rep.Runs[0]
	// A MiB written a second, a window of 1s retention + 2s slack + 1s samples: 4 MiB retained.
	want := int64(boundTables)<<20 + 2*(1<<20+2*(4<<20))
	if got := rep.DiskBound(on, 0, 20); got != want {
		t.Errorf("DiskBound at 20s = %d, want %d", got, want)
	}
	if got := rep.DiskBound(on, -1, 20); got != int64(boundTables)<<20 {
		t.Errorf("the master's bound = %d, want the constant term", got)
	}
	// Before a full window has passed, everything written so far is retained.
	if got := rep.DiskBound(on, 0, 2); got != int64(boundTables)<<20+2*(1<<20+2*(2<<20)) {
		t.Errorf("DiskBound at 2s = %d", got)
	}
}

func TestSoakTableAndChartShowBothRuns(t *testing.T) {
	rep := soakReportOf(func([]int64, []int64, []int) {})
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteChecks(&table, true); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"node1 STORE", "BOUND", "cells: gc 1s/gc off", "marker read at its first version: compacted", "lowest store/written",
		"GC mechanism: ok", "gc 1s (held to the long soak's criteria): ok", "gc off (the comparison, not held to them): FAIL", "node1's store grew"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	var svg bytes.Buffer
	if err := rep.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&svg)
	elems := map[string]int{}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			elems[se.Name.Local]++
		}
	}
	// Four panels; two processes in two runs each, and the node's bound on the disk panel.
	if elems["g"] != 4 || elems["polyline"] != 4*4+1 {
		t.Errorf("elements %v: want 4 panels and 17 lines", elems)
	}
}

func TestSoakConfigRejectsARunShorterThanTheRetention(t *testing.T) {
	err := SoakConfig{Duration: 8 * time.Second, Retention: 10 * time.Second, LargeFraction: 2}.withDefaults().validate()
	if err == nil || !strings.Contains(err.Error(), "retention") || !strings.Contains(err.Error(), "large fraction") {
		t.Fatalf("validate() = %v, want the duration and the fraction reported", err)
	}
	if err := DefaultSoakConfig().validate(); err != nil {
		t.Fatalf("the defaults are invalid: %v", err)
	}
}
