package bench

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// SweepReport is one workload run at several client counts against one target.
type SweepReport struct {
	Target   string    `json:"target"`
	Workload Workload  `json:"workload"`
	Results  []*Result `json:"results"`
}

// ParseClientCounts parses a comma-separated list of client counts such as "1,4,16,64".
func ParseClientCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bench: client counts must be positive integers separated by commas, not %q", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// Sweep runs cfg's workload against t once per client count, preloading first (once) if the
// workload needs it and cfg.Preload is set. onResult, if set, is called after each run.
func Sweep(ctx context.Context, t Target, cfg Config, clients []int, onResult func(*Result)) (*SweepReport, error) {
	if len(clients) == 0 {
		return nil, fmt.Errorf("bench: a sweep needs at least one client count")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Preload && cfg.Workload.NeedsPreload() {
		if _, err := Preload(ctx, t, cfg); err != nil {
			return nil, err
		}
	}
	cfg.Preload = false
	rep := &SweepReport{Target: t.Name(), Workload: cfg.Workload}
	for _, c := range clients {
		cfg.Clients = c
		r, err := Run(ctx, t, cfg)
		if err != nil {
			return nil, err
		}
		rep.Results = append(rep.Results, r)
		if onResult != nil {
			onResult(r)
		}
	}
	return rep, nil
}

// Chart returns the sweep as a chart series: throughput against p99 latency, each point
// labelled with its client count.
func (s *SweepReport) Chart() ChartSeries {
	cs := ChartSeries{Name: s.Target}
	for _, r := range s.Results {
		cs.Points = append(cs.Points, ChartPoint{X: r.Throughput, Y: float64(r.Latency.P99) / 1000, Label: fmt.Sprintf("%dc", r.Clients)})
	}
	return cs
}

// WriteSVG draws the sweep's p99 latency against its throughput.
func (s *SweepReport) WriteSVG(w io.Writer) error {
	title := fmt.Sprintf("%s %s: p99 latency vs throughput (labels: clients)", s.Target, s.Workload)
	return WriteSVG(w, title, "p99 latency (ms)", []ChartSeries{s.Chart()})
}
