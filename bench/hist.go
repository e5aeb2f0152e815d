package bench

import (
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram bounds: latencies are recorded in microseconds from 1µs to 5 minutes with three
// significant digits (a value is off by at most 0.1%). Longer latencies are clamped to the top.
const (
	histMinMicros = 1
	histMaxMicros = int64(5 * time.Minute / time.Microsecond)
	histDigits    = 3
)

// latencyHist is an HDR histogram of latencies in microseconds with the exact maximum. It is
// not safe for concurrent use.
type latencyHist struct {
	h   *hdrhistogram.Histogram
	max int64
}

func newLatencyHist() *latencyHist {
	return &latencyHist{h: hdrhistogram.New(histMinMicros, histMaxMicros, histDigits)}
}

// record adds one latency.
func (l *latencyHist) record(d time.Duration) {
	us := int64(d / time.Microsecond)
	us = min(max(us, histMinMicros), histMaxMicros)
	_ = l.h.RecordValue(us) // in range by the clamp
	l.max = max(l.max, us)
}

// merge adds every value of o.
func (l *latencyHist) merge(o *latencyHist) {
	l.h.Merge(o.h)
	l.max = max(l.max, o.max)
}

func (l *latencyHist) reset() {
	l.h.Reset()
	l.max = 0
}

func (l *latencyHist) count() int64 { return l.h.TotalCount() }

// quantile returns the latency at percentile p in [0, 100], in microseconds.
func (l *latencyHist) quantile(p float64) int64 { return l.h.ValueAtQuantile(p) }

// summary returns the latency summary of the recorded values.
func (l *latencyHist) summary() Latency {
	if l.count() == 0 {
		return Latency{}
	}
	// A quantile is the highest value of its HDR bucket, which may lie above the exact maximum.
	q := func(p float64) int64 { return min(l.quantile(p), l.max) }
	return Latency{P50: q(50), P95: q(95), P99: q(99), P999: q(99.9), Max: l.max, Mean: l.h.Mean()}
}

// Latency summarises a latency distribution, in microseconds.
type Latency struct {
	P50  int64   `json:"p50"`
	P95  int64   `json:"p95"`
	P99  int64   `json:"p99"`
	P999 int64   `json:"p99_9"`
	Max  int64   `json:"max"`
	Mean float64 `json:"mean"`
}
