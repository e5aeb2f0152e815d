package bench

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// formatMicros prints a latency in microseconds with three significant digits and a unit:
// 850µs, 1.25ms, 12.5ms, 1.20s.
func formatMicros(us int64) string {
	switch {
	case us < 1000:
		return fmt.Sprintf("%dµs", us)
	case us < 1_000_000:
		return sig3(float64(us)/1e3) + "ms"
	default:
		return sig3(float64(us)/1e6) + "s"
	}
}

// sig3 prints v (>= 1) with three significant digits.
func sig3(v float64) string {
	switch {
	case v < 10:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case v < 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
}

// formatRate prints an operation rate rounded to a whole number, or with one decimal under 10.
func formatRate(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "-"
	}
	if r < 10 {
		return strconv.FormatFloat(r, 'f', 1, 64)
	}
	return strconv.FormatFloat(r, 'f', 0, 64)
}

// formatCounts prints a reason → count map as "conflict 3, compare_failed 12", sorted by reason,
// or "0".
func formatCounts(m map[string]int64) string {
	if len(m) == 0 {
		return "0"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// Describe says in one line what ran: target, workload, clients, window and key space.
func (r *Result) Describe() string {
	window := fmt.Sprintf("%.3gs", r.Params.DurationS)
	if r.Params.Ops > 0 {
		window = fmt.Sprintf("%d ops in %.3gs", r.Params.Ops, r.Elapsed)
	}
	s := fmt.Sprintf("%s %s: %d clients, %s (+%.3gs warm-up), %d keys (%s", r.Target, r.Workload, r.Clients,
		window, r.Params.WarmupS, r.Params.Keys, r.Params.Distribution)
	if r.Params.Distribution == Zipfian {
		s += fmt.Sprintf(" %.3g", r.Params.Theta)
	}
	s += ")"
	if r.Workload != WorkloadCAS {
		s += fmt.Sprintf(", %d-byte values", r.Params.ValueSize)
	}
	if r.Workload == WorkloadTxn {
		s += fmt.Sprintf(", %d keys per transaction, cross-shard %.3g", r.Params.TxnKeys, r.Params.CrossShard)
	}
	if r.Workload == WorkloadScan {
		s += fmt.Sprintf(", %d keys per scan", r.Params.ScanKeys)
	}
	return s
}

// WriteText writes r for people: what ran, one row per operation kind (and the total for a mix)
// with throughput and latency percentiles, then aborts by reason, unknown outcomes and errors.
func (r *Result) WriteText(w io.Writer) error {
	fmt.Fprintln(w, r.Describe())
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "OP\tOPS\tOPS/S\tP50\tP95\tP99\tP99.9\tMAX\t")
	row := func(name string, ops int64, rate float64, l Latency) {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, ops, formatRate(rate),
			formatMicros(l.P50), formatMicros(l.P95), formatMicros(l.P99), formatMicros(l.P999), formatMicros(l.Max))
	}
	for _, op := range r.ByOp {
		row(op.Op, op.Ops, op.Throughput, op.Latency)
	}
	if len(r.ByOp) > 1 {
		row("all", r.Ops, r.Throughput, r.Latency)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "aborts: %s; unknown outcomes: %d; errors: %s\n", formatCounts(r.Aborts), r.Unknown, formatCounts(r.Errors))
	keys := make([]string, 0, len(r.ErrorSamples))
	for k := range r.ErrorSamples {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  e.g. %s: %s\n", k, oneLine(r.ErrorSamples[k], 200))
	}
	return nil
}

// oneLine flattens s to one line of at most n bytes.
func oneLine(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", "; ")
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}

// WriteResultsTable writes one row per result: target, workload, clients, throughput, latency
// percentiles, aborts, unknown outcomes and errors.
func WriteResultsTable(w io.Writer, results []*Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "WORKLOAD\tCLIENTS\tTARGET\tOPS/S\tP50\tP95\tP99\tP99.9\tMAX\tABORTS\tUNKNOWN\tERRORS\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t\n", r.Workload, r.Clients, r.Target,
			formatRate(r.Throughput), formatMicros(r.Latency.P50), formatMicros(r.Latency.P95), formatMicros(r.Latency.P99),
			formatMicros(r.Latency.P999), formatMicros(r.Latency.Max), r.AbortCount(), r.Unknown, r.ErrorCount())
	}
	return tw.Flush()
}
