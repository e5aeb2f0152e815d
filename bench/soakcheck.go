package bench

import (
	"errors"
	"fmt"
	"time"
)

// The checks of a soak. None of them depends on how fast the machine is: the disk bound and the
// discard check compare bytes on disk with bytes written, and the flatness check compares the
// highest values of two halves of a run with each other.

// boundTables is how many memtable-sized files the disk bound allows a node beside its data:
// the active memtable's WAL and one being flushed (2), the 5 level-0 tables at which Badger
// starts compacting level 0 (NumLevelZeroTables), and one more flushed while that compaction
// runs.
const boundTables = 8

// retainedSlack is how far the safe point may trail the newest timestamp beyond the retention:
// the master's GC tick (1s) and the time the new safe point takes to reach the nodes, rounded
// up.
const retainedSlack = 2 * time.Second

// DiskBound returns the bound of SoakReport.Check on node n's store (its data directory without
// the transaction log) at sample i of run r:
//
//	boundTables × MemTableSize + 2 × (live + 2 × retained)
//
// where live is the node's live data (Live) and retained the most the clients wrote to it in
// any window of the retention plus retainedSlack plus one sample interval, up to sample i: the
// versions that GC must keep. Why: memtable WAL files and level-0 tables are at most
// MemTableSize each (boundTables of them, see there); below level 0, after a compaction,
// Badger keeps one version per key at or below the safe point (at most live) and every version
// above it (at most 2 × retained: each value is written at most twice, once in a transaction's
// prepare record and once as the committed version); and a compaction's output exists beside
// its input until it ends (the factor 2). The bound does not grow with the number of writes
// made, only with the rate of writes (through retained). The master stores no user data: its
// bound is the constant term. n indexes the nodes (0 is the first node); n = -1 is the master.
func (rep *SoakReport) DiskBound(r *SoakRun, n, i int) int64 {
	c := int64(boundTables) * rep.Config.MemTableSize
	if n < 0 {
		return c
	}
	return c + 2*(r.Samples[i].Live[n]+2*r.retained(n, i, rep.Config.Retention+retainedSlack+rep.Config.SampleEvery))
}

// retained is the most bytes written to node n within window, over the windows that end at the
// samples up to i.
func (r *SoakRun) retained(n, i int, window time.Duration) int64 {
	var most int64
	j := 0 // the latest sample at least window before sample k, if any
	for k := 0; k <= i; k++ {
		for j+1 < k && r.Samples[j+1].At <= r.Samples[k].At-window {
			j++
		}
		w := r.Samples[k].Written[n]
		if r.Samples[j].At <= r.Samples[k].At-window {
			w -= r.Samples[j].Written[n]
		}
		most = max(most, w)
	}
	return most
}

// discardRatio is a node's lowest store over written ratio in a run, over the samples after
// it has been written two memtables: without GC every version stays on disk, so the store
// never falls below what was written to it (more, with prepare records); with GC, each
// compaction drops the versions below the safe point and the store falls to a fraction of it.
func (rep *SoakReport) discardRatio(r *SoakRun, n int) (float64, bool) {
	lowest, ok := 0.0, false
	for _, s := range r.Samples {
		w := s.Written[n]
		if w < 2*rep.Config.MemTableSize {
			continue
		}
		ratio := float64(s.Procs[1+n].Store()) / float64(w)
		if !ok || ratio < lowest {
			lowest, ok = ratio, true
		}
	}
	return lowest, ok
}

// maxDiscardRatio is the most the GC-on run's discard ratio may be, as a fraction of the GC-off
// run's.
const maxDiscardRatio = 0.5

// CheckMechanism checks what GC promises, as the short soak of make test does: in the GC-on
// run a read at the marker's first version is refused as compacted and the present is read,
// every node's store falls to at most maxDiscardRatio of the GC-off run's store per byte
// written (versions are really dropped from disk); in the GC-off run the first version is
// still read. Both runs must have had no errors but aborts. It returns every failure, joined.
func (rep *SoakReport) CheckMechanism() error {
	if len(rep.Runs) != 2 {
		return fmt.Errorf("bench: soak: %d runs, want 2 (GC on, GC off)", len(rep.Runs))
	}
	on, off := rep.Runs[0], rep.Runs[1]
	var errs []error
	fail := func(format string, a ...any) { errs = append(errs, fmt.Errorf("bench: soak: "+format, a...)) }
	for _, r := range rep.Runs {
		if len(r.Errors) > 0 {
			fail("%s: errors %v, e.g. %v", r.Label(), r.Errors, r.ErrorSamples)
		}
		if r.NewRead != "value" {
			fail("%s: a read of the marker's latest version: %s", r.Label(), r.NewRead)
		}
	}
	if on.OldRead != "compacted" {
		fail("%s: a read at the marker's first version (ts %d), older than the retention: %s, want compacted", on.Label(), on.MarkerTS, on.OldRead)
	}
	if off.OldRead != "value" {
		fail("%s: a read at the marker's first version (ts %d): %s, want its value", off.Label(), off.MarkerTS, off.OldRead)
	}
	for n, name := range on.Names[1:] {
		rOn, okOn := rep.discardRatio(on, n)
		rOff, okOff := rep.discardRatio(off, n)
		switch {
		case !okOn || !okOff:
			fail("%s: fewer than two memtables (%s) written in a run: too short to compare", name, mib(2*rep.Config.MemTableSize))
		case rOn > maxDiscardRatio*rOff:
			fail("%s: GC dropped too little from disk: its store was at least %.2f of the bytes written with GC on, %.2f with GC off (want at most %.1f times)", name, rOn, rOff, maxDiscardRatio)
		}
	}
	return errors.Join(errs...)
}

// Check runs CheckMechanism and holds the GC-on run to the long soak's criteria (RunFailures).
// The GC-off run is the comparison and is not held to them.
func (rep *SoakReport) Check() error {
	errs := []error{rep.CheckMechanism()}
	if len(rep.Runs) > 0 {
		for _, f := range rep.RunFailures(rep.Runs[0]) {
			errs = append(errs, fmt.Errorf("bench: soak: %s: %s", rep.Runs[0].Label(), f))
		}
	}
	return errors.Join(errs...)
}

// RunFailures returns what run r fails of the long soak's criteria, one line per process and
// criterion: (a) every process's store stays under DiskBound at every sample; (b) every node's
// anonymous RSS stays under AnonLimit at every sample; (c) store, RSS and goroutines stay
// flat: after the warm-up, each process's highest value in the second half of the rest of the
// run is at most Growth times its highest in the first half, plus MemTableSize, RSSSlack or
// GoroutineSlack. The maxima are used because a sampled value swings with each garbage
// collection, memtable rotation and compaction (the store is a saw: it climbs by a memtable at
// each flush and falls at each level-0 compaction), while the highest over a window of several
// swings is steady, and growth lifts the later one by an amount that grows with the run. Each
// half must span a few compactions: about a minute at least on a 2-core machine, so runs of 3
// minutes or more.
func (rep *SoakReport) RunFailures(r *SoakRun) []string {
	cfg := rep.Config
	var out []string
	for p, name := range r.Names {
		var over, overAnon int
		var worst, worstAnon SoakSample
		var worstBound int64
		for i, s := range r.Samples {
			ps := s.Procs[p]
			if b := rep.DiskBound(r, p-1, i); ps.Store() > b {
				if over == 0 || ps.Store()-b > worst.Procs[p].Store()-worstBound {
					worst, worstBound = s, b
				}
				over++
			}
			if p > 0 && ps.Anon > cfg.AnonLimit {
				if overAnon == 0 || ps.Anon > worstAnon.Procs[p].Anon {
					worstAnon = s
				}
				overAnon++
			}
		}
		if over > 0 {
			out = append(out, fmt.Sprintf("%s's store is over the disk bound in %d of %d samples, e.g. %s at %v (bound %s)",
				name, over, len(r.Samples), mib(worst.Procs[p].Store()), worst.At.Round(time.Second), mib(worstBound)))
		}
		if overAnon > 0 {
			out = append(out, fmt.Sprintf("%s's anonymous RSS is over the limit %s in %d of %d samples, highest %s at %v",
				name, mib(cfg.AnonLimit), overAnon, len(r.Samples), mib(worstAnon.Procs[p].Anon), worstAnon.At.Round(time.Second)))
		}
	}
	first, second := r.halves(cfg.Warmup)
	if len(first) == 0 || len(second) == 0 {
		return append(out, fmt.Sprintf("too few samples after the warm-up (%v) for the flatness check", cfg.Warmup))
	}
	for p, name := range r.Names {
		for _, q := range []struct {
			what  string
			slack float64
			value func(ProcSample) float64
			print func(float64) string
		}{
			{"store", float64(cfg.MemTableSize), func(s ProcSample) float64 { return float64(s.Store()) }, func(v float64) string { return mib(int64(v)) }},
			{"RSS", float64(cfg.RSSSlack), func(s ProcSample) float64 { return float64(s.RSS) }, func(v float64) string { return mib(int64(v)) }},
			{"goroutines", float64(cfg.GoroutineSlack), func(s ProcSample) float64 { return float64(s.Goroutines) }, func(v float64) string { return fmt.Sprintf("%.0f", v) }},
		} {
			f := func(s SoakSample) float64 { return q.value(s.Procs[p]) }
			if a, b := maxOf(first, f), maxOf(second, f); b > cfg.Growth*a+q.slack {
				out = append(out, fmt.Sprintf("%s's %s grew: highest %s in the first half after the warm-up, %s in the second (at most %s allowed)",
					name, q.what, q.print(a), q.print(b), q.print(cfg.Growth*a+q.slack)))
			}
		}
	}
	return out
}

// halves splits the samples after warmup into those of the first and the second half of the
// rest of the run, by time.
func (r *SoakRun) halves(warmup time.Duration) (first, second []SoakSample) {
	if len(r.Samples) == 0 {
		return nil, nil
	}
	mid := warmup + (r.Samples[len(r.Samples)-1].At-warmup)/2
	for _, s := range r.Samples {
		switch {
		case s.At < warmup:
		case s.At < mid:
			first = append(first, s)
		default:
			second = append(second, s)
		}
	}
	return first, second
}

func maxOf(ss []SoakSample, f func(SoakSample) float64) float64 {
	m := 0.0
	for _, s := range ss {
		m = max(m, f(s))
	}
	return m
}
