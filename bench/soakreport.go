package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// SoakReport is a soak's two runs: GC on, then GC off.
type SoakReport struct {
	// Config is the soak's config, defaults set.
	Config SoakConfig `json:"config"`
	// Runs are the GC-on run, then the GC-off run (fewer if one could not be made).
	Runs []*SoakRun `json:"runs"`
}

// WriteTable prints the samples of both runs side by side, a row per sample time (each cell
// "GC on/GC off"; MiB for sizes), then a summary of each run.
func (rep *SoakReport) WriteTable(w io.Writer) error {
	if len(rep.Runs) == 0 {
		_, err := fmt.Fprintln(w, "soak: no runs")
		return err
	}
	on := rep.Runs[0]
	runs := rep.Runs
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := []string{"T", "OPS"}
	for p, name := range on.Names {
		head = append(head, name+" STORE")
		if p > 0 {
			head = append(head, "BOUND")
		}
		head = append(head, "RSS", "ANON", "GOR")
	}
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	rows := 0
	for _, r := range runs {
		rows = max(rows, len(r.Samples))
	}
	pair := func(i int, f func(SoakSample) string) string {
		var parts []string
		for _, r := range runs {
			if i < len(r.Samples) {
				parts = append(parts, f(r.Samples[i]))
			} else {
				parts = append(parts, "-")
			}
		}
		return strings.Join(parts, "/")
	}
	for i := range rows {
		at := "-"
		for _, r := range runs {
			if i < len(r.Samples) {
				at = fmt.Sprintf("%.0fs", r.Samples[i].At.Seconds())
				break
			}
		}
		row := []string{at, pair(i, func(s SoakSample) string { return fmt.Sprint(s.Ops) })}
		for p := range on.Names {
			row = append(row, pair(i, func(s SoakSample) string { return mibN(s.Procs[p].Store()) }))
			if p > 0 {
				b := "-"
				if i < len(on.Samples) {
					b = mibN(rep.DiskBound(on, p-1, i))
				}
				row = append(row, b)
			}
			row = append(row,
				pair(i, func(s SoakSample) string { return mibN(s.Procs[p].RSS) }),
				pair(i, func(s SoakSample) string { return mibN(s.Procs[p].Anon) }),
				pair(i, func(s SoakSample) string { return fmt.Sprint(s.Procs[p].Goroutines) }))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var labels []string
	for _, r := range runs {
		labels = append(labels, r.Label())
	}
	fmt.Fprintf(w, "cells: %s; STORE: the data directory without txn.log, BOUND: DiskBound of the %s run; sizes in MiB\n", strings.Join(labels, "/"), on.Label())
	for _, r := range runs {
		rep.writeSummary(w, r)
	}
	return nil
}

// WriteChecks prints the outcome of CheckMechanism and, when long is set, each run's
// RunFailures: those of the GC-on run are Check's, those of the GC-off run the comparison.
func (rep *SoakReport) WriteChecks(w io.Writer, long bool) error {
	if err := rep.CheckMechanism(); err != nil {
		fmt.Fprintf(w, "GC mechanism: FAIL\n  %s\n", strings.ReplaceAll(err.Error(), "\n", "\n  "))
	} else {
		fmt.Fprintln(w, "GC mechanism: ok (reads below the safe point refused as compacted; versions dropped from disk; with GC off the old version still read)")
	}
	if !long {
		return nil
	}
	for i, r := range rep.Runs {
		role := "held to the long soak's criteria"
		if i > 0 {
			role = "the comparison, not held to them"
		}
		fails := rep.RunFailures(r)
		if len(fails) == 0 {
			fmt.Fprintf(w, "%s (%s): ok: within the disk bound and the anonymous RSS limit %s, and flat\n", r.Label(), role, mib(rep.Config.AnonLimit))
			continue
		}
		fmt.Fprintf(w, "%s (%s): FAIL\n", r.Label(), role)
		for _, f := range fails {
			fmt.Fprintf(w, "  %s\n", f)
		}
	}
	_, err := fmt.Fprintln(w)
	return err
}

// mibN prints bytes as a whole number of MiB.
func mibN(n int64) string { return fmt.Sprintf("%.0f", float64(n)/(1<<20)) }

// writeSummary prints one run's operations, the marker reads, its peaks and its final files.
func (rep *SoakReport) writeSummary(w io.Writer, r *SoakRun) {
	if len(r.Samples) == 0 {
		fmt.Fprintf(w, "%s: no samples\n", r.Label())
		return
	}
	last := r.Samples[len(r.Samples)-1]
	secs := last.At.Seconds()
	fmt.Fprintf(w, "%s: %v, %d keys preloaded, then %d puts and %d transactions (%.0f ops/s over the run); aborts %v, unknown %d, errors %v\n",
		r.Label(), last.At.Round(time.Second), r.Preloaded, r.Puts, r.Txns, float64(last.Ops)/secs, r.Aborts, r.Unknown, r.Errors)
	for _, e := range r.ErrorSamples {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
	fmt.Fprintf(w, "  marker read at its first version: %s; of the present: %s\n", r.OldRead, r.NewRead)
	for p, name := range r.Names {
		var peakStore, peakRSS, peakAnon int64
		var peakGor int
		for _, s := range r.Samples {
			ps := s.Procs[p]
			peakStore, peakRSS, peakAnon, peakGor = max(peakStore, ps.Store()), max(peakRSS, ps.RSS), max(peakAnon, ps.Anon), max(peakGor, ps.Goroutines)
		}
		f := last.Procs[p]
		fmt.Fprintf(w, "  %s: peak store %s, RSS %s, anon %s, goroutines %d; at the end store %s in %d tables and %d memtable WALs, txn.log %s",
			name, mib(peakStore), mib(peakRSS), mib(peakAnon), peakGor, mib(f.Store()), f.Tables, f.Memtables, mib(f.TxnLog))
		if p > 0 {
			n := p - 1
			fmt.Fprintf(w, ", live %s, written %s", mib(last.Live[n]), mib(last.Written[n]))
			if ratio, ok := rep.discardRatio(r, n); ok {
				fmt.Fprintf(w, ", lowest store/written %.2f", ratio)
			}
		}
		fmt.Fprintln(w)
		if f.Err != "" {
			fmt.Fprintf(w, "    not measured: %s\n", f.Err)
		}
	}
}

// soakColors gives each process of a soak one colour (the master, node1, node2, ...), and
// each node's disk bound a lighter one.
var soakColors = []string{"#555555", "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd"}
var soakBoundColors = []string{"#aaaaaa", "#9ecae1", "#fcae91", "#a1d99b", "#fdd0a2", "#bcbddc"}

// WriteSVG draws four charts one above the other against time: every process's store, RSS,
// anonymous RSS and goroutines, solid for the GC-on run and dashed for the GC-off run, with
// the nodes' disk bounds of the GC-on run.
func (rep *SoakReport) WriteSVG(w io.Writer) error {
	type quantity struct {
		title, unit string
		value       func(ProcSample) float64
	}
	const mb = 1 << 20
	qs := []quantity{
		{"data directory without txn.log", "MiB", func(p ProcSample) float64 { return float64(p.Store()) / mb }},
		{"RSS", "MiB", func(p ProcSample) float64 { return float64(p.RSS) / mb }},
		{"anonymous RSS", "MiB", func(p ProcSample) float64 { return float64(p.Anon) / mb }},
		{"goroutines", "goroutines", func(p ProcSample) float64 { return float64(p.Goroutines) }},
	}
	var panels []chartPanel
	for qi, q := range qs {
		var labels []string
		for _, r := range rep.Runs {
			labels = append(labels, r.Label())
		}
		panel := chartPanel{
			title:  fmt.Sprintf("soak: %s (solid %s)", q.title, strings.Join(labels, ", dashed ")),
			xLabel: "time since the cluster came up (s)",
			yLabel: q.unit,
		}
		for ri, r := range rep.Runs {
			for p, name := range r.Names {
				s := ChartSeries{Name: name + " " + r.Label(), Color: soakColors[p%len(soakColors)], Dashed: ri > 0}
				for _, smp := range r.Samples {
					s.Points = append(s.Points, ChartPoint{X: smp.At.Seconds(), Y: q.value(smp.Procs[p])})
				}
				panel.series = append(panel.series, s)
			}
		}
		if qi == 0 && len(rep.Runs) > 0 {
			on := rep.Runs[0]
			for p, name := range on.Names[1:] {
				s := ChartSeries{Name: name + " bound", Color: soakBoundColors[(p+1)%len(soakBoundColors)]}
				for i, smp := range on.Samples {
					s.Points = append(s.Points, ChartPoint{X: smp.At.Seconds(), Y: float64(rep.DiskBound(on, p, i)) / mb})
				}
				panel.series = append(panel.series, s)
			}
		}
		panels = append(panels, panel)
	}
	return writeChartSVG(w, panels)
}
