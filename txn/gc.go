package txn

import (
	"context"
	"time"

	"github.com/kvtx/kvtx/wire"
)

// gcTick is how often the master samples its oracle and tells the nodes the safe point.
const gcTick = time.Second

// RunGC moves the cluster's GC safe point until ctx is done: every gcTick it samples the
// oracle's last timestamp, and the safe point becomes the timestamp sampled GCRetention ago,
// which it sends to every node (SafePointRequest; a node that misses one gets the next). From
// then on the master refuses reads below it with "compacted", and each node too, once the
// safe point is durable there, after which Badger may drop the versions no read at or above
// it can see.
//
// The safe point never passes an operation in progress: it lies GCRetention (at least a
// second, by default ten minutes) behind a timestamp the oracle had already handed out, and
// every read and transaction uses a timestamp handed out after its start and ends within the
// request timeouts. A client paging a scan at a version older than the retention gets
// "compacted", as etcd's does. After a restart the master samples afresh, so the safe point
// stands still for one retention (the nodes keep theirs).
func (c *Coordinator) RunGC(ctx context.Context) {
	if c.cfg.GCRetention <= 0 {
		return
	}
	type sample struct {
		at time.Time
		ts uint64
	}
	var samples []sample
	for {
		now := c.cfg.Runtime.Now()
		samples = append(samples, sample{now, c.oracle.Last()})
		// The newest sample at least GCRetention old is the safe point; older ones go.
		i := 0
		for i+1 < len(samples) && !samples[i+1].at.After(now.Add(-c.cfg.GCRetention)) {
			i++
		}
		samples = samples[i:]
		if s := samples[0]; !s.at.After(now.Add(-c.cfg.GCRetention)) && s.ts > 0 {
			if s.ts > c.safePoint.Load() {
				c.safePointAt.Store(s.at.UnixNano())
			}
			c.setSafePoint(ctx, s.ts)
		}
		if c.cfg.Runtime.Sleep(ctx, gcTick) != nil {
			return
		}
	}
}

// setSafePoint raises the master's safe point to ts and tells every node.
func (c *Coordinator) setSafePoint(ctx context.Context, ts uint64) {
	for {
		old := c.safePoint.Load()
		if ts <= old || c.safePoint.CompareAndSwap(old, ts) {
			break
		}
	}
	ts = c.safePoint.Load()
	names := c.cfg.Shards.Names()
	fanOut(c.cfg.Runtime, len(names), func(i int) {
		var ack wire.Ack
		if err := c.call(ctx, names[i], &wire.SafePointRequest{SafePoint: ts}, &ack); err != nil {
			c.log.Debug("GC safe point not delivered", "node", names[i], "safe_point", ts, "err", err)
		}
	})
}

// SafePoint returns the master's GC safe point (0: none yet).
func (c *Coordinator) SafePoint() uint64 { return c.safePoint.Load() }

// SafePointAge returns how long ago the oracle handed out the safe point (0: none yet): about
// the retention while GC keeps up, growing while no timestamp is handed out.
func (c *Coordinator) SafePointAge() time.Duration {
	at := c.safePointAt.Load()
	if at == 0 {
		return 0
	}
	return c.cfg.Runtime.Now().Sub(time.Unix(0, at))
}
