package chaos

import (
	"fmt"
	"sort"
	"time"

	"github.com/kvtx/kvtx/txn"
)

// summarize fills the report's counts, throughput and recovery times.
func (r *runner) summarize(ops []Op, faultStart, healAt, stopAt time.Time) {
	rep := r.report
	rep.Aborted = map[string]int{}
	rep.ReadFailed = map[string]int{}
	rep.ScansOK, rep.ScanFailed = map[string]int{}, map[string]int{}
	var faulty, quiet int
	for _, op := range ops {
		if op.Kind == "scan" {
			if op.Status == OK {
				rep.ScansOK[op.Workload]++
				rep.ScanKeys += len(op.Keys)
			} else {
				rep.ScanFailed[op.Reason]++
			}
			continue
		}
		if !op.Write {
			if op.Status == OK {
				rep.ReadsOK++
			} else {
				rep.ReadFailed[op.Reason]++
			}
			continue
		}
		rep.Attempted++
		switch op.Status {
		case OK:
			rep.Committed++
			switch {
			case op.Return.Before(healAt):
				faulty++
			case op.Return.Before(stopAt):
				quiet++
			}
		case Failed:
			rep.Aborted[op.Reason]++
		default:
			rep.Unknown++
			if op.Applied {
				rep.UnknownApplied++
			}
		}
	}
	rep.FaultyTPS = float64(faulty) / healAt.Sub(faultStart).Seconds()
	rep.QuietTPS = float64(quiet) / stopAt.Sub(healAt).Seconds()
	r.mu.Lock()
	events := append([]Event(nil), r.events...)
	rep.ResolveTimes = append([]time.Duration(nil), r.resolve...)
	r.mu.Unlock()
	rep.Events = events
	// restart → first commit that touches the restarted process.
	sm := r.c.Config().ShardMap()
	for _, e := range events {
		if e.Kind != "restart" {
			continue
		}
		shard := -1
		if e.Target != txn.MasterName {
			for i, n := range sm.Names() {
				if n == e.Target {
					shard = i
				}
			}
		}
		var first time.Time
		for _, op := range ops {
			if op.Status != OK || !op.Write || op.Invoke.Before(e.At) {
				continue
			}
			if shard >= 0 && !containsInt(op.Shards, shard) {
				continue
			}
			if first.IsZero() || op.Return.Before(first) {
				first = op.Return
			}
		}
		if !first.IsZero() {
			rep.FirstCommitTimes = append(rep.FirstCommitTimes, first.Sub(e.At))
		} else {
			rep.NoCommitAfter++
		}
	}
	kinds := map[string]int{}
	for _, e := range events {
		kinds[e.Kind]++
	}
	var names []string
	for k := range kinds {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		rep.EventCounts = append(rep.EventCounts, fmt.Sprintf("%s=%d", k, kinds[k]))
	}
}

func containsInt(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
