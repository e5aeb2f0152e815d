package bench

import (
	"fmt"
	"io"
	"strings"
)

// TLSGoal is the lowest throughput of the mutual-TLS cluster over the plaintext one that the
// suite's verdict accepts: at most 15% lower at the suite's highest client count.
const TLSGoal = 0.85

// TLSCost is what mutual TLS costs: the kvtx target's throughput (every link over mutual TLS)
// over kvtx-plain's (the same cluster started with --insecure), measured in the same run,
// workload by workload, at the highest client count both ran.
type TLSCost struct {
	Clients int `json:"clients"`
	// Workloads are the workloads compared, in the order they ran, and Ratios their ratios.
	Workloads []string  `json:"workloads"`
	Ratios    []float64 `json:"ratios"`
	// Worst is the workload with the lowest ratio, and WorstRatio that ratio.
	Worst      string  `json:"worst_workload"`
	WorstRatio float64 `json:"worst_ratio"`
	// Met says whether WorstRatio is at least TLSGoal.
	Met bool `json:"met"`
}

// tlsCost compares kvtx with kvtx-plain, or returns nil when the report lacks either.
func (rep *SuiteReport) tlsCost() *TLSCost {
	clients := 0
	for _, r := range rep.Results {
		if r.Target == TargetKvtx && r.Clients > clients && rep.result(r.Workload, r.Clients, TargetKvtxPlain) != nil {
			clients = r.Clients
		}
	}
	if clients == 0 {
		return nil
	}
	c := &TLSCost{Clients: clients}
	for _, r := range rep.Results {
		p := rep.result(r.Workload, r.Clients, TargetKvtxPlain)
		if r.Target != TargetKvtx || r.Clients != clients || p == nil || p.Throughput <= 0 {
			continue
		}
		x := r.Throughput / p.Throughput
		c.Workloads, c.Ratios = append(c.Workloads, string(r.Workload)), append(c.Ratios, x)
		if c.Worst == "" || x < c.WorstRatio {
			c.Worst, c.WorstRatio = string(r.Workload), x
		}
	}
	if c.Worst == "" {
		return nil
	}
	c.Met = c.WorstRatio >= TLSGoal
	return c
}

// writeTLSCost writes the TLS verdict: each workload's ratio and whether the worst meets
// TLSGoal. It writes nothing when the suite did not run both kvtx and kvtx-plain.
func (rep *SuiteReport) writeTLSCost(w io.Writer) {
	c := rep.TLS
	if c == nil {
		c = rep.tlsCost()
	}
	if c == nil {
		return
	}
	parts := make([]string, len(c.Workloads))
	for i, wl := range c.Workloads {
		parts[i] = fmt.Sprintf("%s %.2fx", wl, c.Ratios[i])
	}
	verdict := "met"
	if !c.Met {
		verdict = "MISSED"
	}
	fmt.Fprintf(w, "\nTLS vs --insecure at %d clients (kvtx throughput over kvtx-plain's): %s\n", c.Clients, strings.Join(parts, ", "))
	fmt.Fprintf(w, "TLS goal (at most %.0f%% lower throughput): %s; worst %s %.2fx\n", (1-TLSGoal)*100, verdict, c.Worst, c.WorstRatio)
}
