package bench

import (
	"fmt"
	"io"
	"math"
	"text/tabwriter"
)

// TLSGoal is the lowest throughput of the mutual-TLS cluster over the plaintext one that the
// suite's verdict accepts: at most 15% lower at the suite's highest client count.
const TLSGoal = 0.85

// TLSRun is one workload of the TLS verdict: two windows each of the kvtx target (every link
// over mutual TLS) and of kvtx-plain (the same cluster started with --insecure), measured in
// the order kvtx, kvtx-plain, (the other targets), kvtx-plain, kvtx.
type TLSRun struct {
	Workload string     `json:"workload"`
	Kvtx     [2]float64 `json:"kvtx_ops_s"`
	Plain    [2]float64 `json:"plain_ops_s"`
	// Ratio is kvtx's two windows over kvtx-plain's.
	Ratio float64 `json:"ratio"`
	// Spread is how much the two windows of one target differ, the larger of the two targets':
	// |a-b| over their mean. It is the noise the ratio carries.
	Spread float64 `json:"spread"`
}

// spread is |a-b| over their mean, or 0.
func spread(w [2]float64) float64 {
	if m := (w[0] + w[1]) / 2; m > 0 {
		return math.Abs(w[0]-w[1]) / m
	}
	return 0
}

// TLSCost is what mutual TLS costs, measured in one suite at its highest client count.
type TLSCost struct {
	Clients int      `json:"clients"`
	Runs    []TLSRun `json:"runs"`
	// Worst is the workload with the lowest ratio, and WorstRatio that ratio.
	Worst      string  `json:"worst_workload"`
	WorstRatio float64 `json:"worst_ratio"`
	// Mean is the geometric mean of the ratios.
	Mean float64 `json:"geomean_ratio"`
	// Verdict is "met" when WorstRatio is at least TLSGoal; "missed"; or "inconclusive" when
	// the worst workload fell short but its windows differ by more than the margin
	// (1-TLSGoal), so that noise could explain it.
	Verdict string `json:"verdict"`
}

// NewTLSCost computes the ratios and the verdict of runs at clients clients, or returns nil if
// no run has throughput on both sides.
func NewTLSCost(clients int, runs []TLSRun) *TLSCost {
	c := &TLSCost{Clients: clients}
	logSum, worstSpread := 0.0, 0.0
	for _, r := range runs {
		k, p := r.Kvtx[0]+r.Kvtx[1], r.Plain[0]+r.Plain[1]
		if p <= 0 {
			continue
		}
		r.Ratio, r.Spread = k/p, max(spread(r.Kvtx), spread(r.Plain))
		c.Runs = append(c.Runs, r)
		logSum += math.Log(r.Ratio)
		if c.Worst == "" || r.Ratio < c.WorstRatio {
			c.Worst, c.WorstRatio, worstSpread = r.Workload, r.Ratio, r.Spread
		}
	}
	if c.Worst == "" {
		return nil
	}
	c.Mean = math.Exp(logSum / float64(len(c.Runs)))
	switch {
	case c.WorstRatio >= TLSGoal:
		c.Verdict = "met"
	case worstSpread > 1-TLSGoal:
		c.Verdict = "inconclusive"
	default:
		c.Verdict = "missed"
	}
	return c
}

// writeTLSCost writes the TLS table and verdict, if the suite measured them.
func (rep *SuiteReport) writeTLSCost(w io.Writer) error {
	c := rep.TLS
	if c == nil {
		return nil
	}
	fmt.Fprintf(w, "\nTLS vs --insecure at %d clients: two windows each, in the order kvtx, kvtx-plain, ..., kvtx-plain, kvtx\n", c.Clients)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "WORKLOAD\tKVTX OPS/S\tKVTX-PLAIN OPS/S\tKVTX/KVTX-PLAIN\tSPREAD\t")
	for _, r := range c.Runs {
		fmt.Fprintf(tw, "%s\t%s, %s\t%s, %s\t%.2fx\t%.0f%%\t\n", r.Workload, formatRate(r.Kvtx[0]), formatRate(r.Kvtx[1]),
			formatRate(r.Plain[0]), formatRate(r.Plain[1]), r.Ratio, r.Spread*100)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "SPREAD: how much the two windows of one target differ (the larger of the two), the noise in the ratio")
	verdict := map[string]string{"met": "met", "missed": "MISSED",
		"inconclusive": fmt.Sprintf("INCONCLUSIVE (%s fell short, but its windows differ by more than the margin: rerun on a quieter machine)", c.Worst)}[c.Verdict]
	fmt.Fprintf(w, "TLS goal (at most %.0f%% lower throughput at %d clients): %s; worst %s %.2fx, geometric mean %.2fx\n",
		(1-TLSGoal)*100, c.Clients, verdict, c.Worst, c.WorstRatio, c.Mean)
	return nil
}
