package chaos

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/kvtx/kvtx/txn/client"
)

// readMarkers reads every write's marker key and records whether it was applied.
func (r *runner) readMarkers(ctx context.Context) error {
	ops := r.rec.Ops()
	var ids []int64
	var keys [][]byte
	for _, op := range ops {
		if op.Write {
			for _, m := range op.Markers {
				ids = append(ids, op.ID)
				keys = append(keys, []byte(m))
			}
		}
	}
	found := map[int64]int{}
	for lo := 0; lo < len(keys); lo += 500 {
		hi := min(lo+500, len(keys))
		var kvs []client.KeyValue
		var err error
		for try := 0; try < 10; try++ {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			kvs, _, err = r.admin.Snapshot(cctx, keys[lo:hi]...)
			cancel()
			if err == nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("chaos: read markers: %w", err)
		}
		for i, kv := range kvs {
			if kv.Found {
				found[ids[lo+i]]++
			}
		}
	}
	r.rec.setApplied(found)
	return nil
}

// checkMarkers checks every write against its markers: an acknowledged write must have all of
// them (else it is lost), a failed one none, and no write only some (half applied).
func (r *runner) checkMarkers(ops []Op) {
	rep := r.report
	rep.invariant(invMarkerAcked)
	rep.invariant(invMarkerFailed)
	rep.invariant(invHalfApplied)
	for _, op := range ops {
		if !op.Write {
			continue
		}
		n, f := len(op.Markers), op.MarkersFound
		if op.Status == OK {
			rep.AckedChecked++
			if f < n {
				rep.Lost++
				rep.violate(invMarkerAcked, fmt.Sprintf("%s %s %d committed at %s but %d of its %d markers are missing (%s)", op.Workload, op.Kind, op.ID, op.Return.Format("15:04:05.000"), n-f, n, strings.Join(op.Markers, " ")))
			}
		}
		if f > 0 && f < n {
			rep.HalfApplied++
			rep.violate(invHalfApplied, fmt.Sprintf("%s %s %d (%s) has %d of its %d markers (%s)", op.Workload, op.Kind, op.ID, op.Status, f, n, strings.Join(op.Markers, " ")))
		}
		if op.Status == Failed && f > 0 {
			rep.violate(invMarkerFailed, fmt.Sprintf("%s %s %d failed (%s: %s) but %d of its %d markers are there (%s)", op.Workload, op.Kind, op.ID, op.Reason, op.Err, f, n, strings.Join(op.Markers, " ")))
		}
	}
}
