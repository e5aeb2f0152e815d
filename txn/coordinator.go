package txn

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvtx/kvtx/wire"
)

// CoordinatorConfig holds everything a Coordinator needs; every side effect is injected.
type CoordinatorConfig struct {
	// Shards routes keys to nodes.
	Shards *ShardMap
	// Transport reaches the nodes by name.
	Transport Transport
	// Decisions is the durable decision log and oracle mark.
	Decisions DecisionStore
	// Limits bound requests; zero fields take their defaults.
	Limits Limits
	// Timeouts are the protocol's clocks; zero fields take their defaults.
	Timeouts Timeouts
	// Metrics, TxnLog and Logger are optional.
	Metrics CoordinatorMetrics
	TxnLog  TxnLog
	Logger  *slog.Logger
	// Directory, optional, gives the addresses Status reports, by process name.
	Directory map[string]Process
	// Runtime runs background work and measures every timeout (default RealRuntime).
	Runtime Runtime
	// Hooks are called at the coordinator's named points (optional).
	Hooks Hooks
	// Parallel selects the parallel commit protocol for cross-shard transactions (parallel.go);
	// false is classic presumed-abort two-phase commit.
	Parallel bool
	// GCRetention, if positive, is how far the GC safe point trails the newest timestamp in
	// time (RunGC); zero keeps every version.
	GCRetention time.Duration
	// SyncBacklog bounds the applied transactions that may wait for one node's sync before the
	// master forgets them (default DefaultSyncBacklog); while a node has that many, new
	// cross-shard transactions on it are refused as unavailable (forget.go).
	SyncBacklog int
}

// Coordinator is the master's protocol: it routes reads and writes, runs the one-phase fast
// path for single-shard transactions and presumed-abort two-phase commit for the others, and
// answers participants that ask for the outcome of a transaction. It is safe for concurrent
// use.
type Coordinator struct {
	cfg         CoordinatorConfig
	oracle      *Oracle
	log         *slog.Logger
	safePoint   atomic.Uint64 // reads below it are refused (gc.go)
	safePointAt atomic.Int64  // when the oracle handed out the safe point, Unix nanoseconds

	ctx    context.Context // cancelled by Close: stops phase-2 drivers
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu struct {
		sync.Mutex
		// txns holds the cross-shard transactions in phase preparing, committed, unknown or
		// applied, by id.
		txns map[uint64]*txnState
		// unacked maps each key of a committed or aborting transaction whose phase 2 is still
		// under way to it: a later transaction on the key waits for that phase 2 instead of
		// meeting its locks.
		unacked map[string]*txnState
		// syncers hold, per node, the applied transactions that wait for its sync (forget.go).
		syncers map[string]*syncer
		// committers send each participant's phase-2 commits, batching those that queue up.
		committers map[string]*committer
		// forgetMarkers holds, per node, the commits that every participant has synced, for
		// the node's next Sync to drop their outcome markers.
		forgetMarkers map[string][]wire.CommitRequest
	}
}

var _ Handler = (*Coordinator)(nil)

// NewCoordinator validates cfg and loads the oracle. Call Recover before serving requests.
func NewCoordinator(ctx context.Context, cfg CoordinatorConfig) (*Coordinator, error) {
	if cfg.Shards == nil || cfg.Shards.Len() == 0 || cfg.Transport == nil || cfg.Decisions == nil {
		return nil, errors.New("txn: coordinator needs Shards, Transport and Decisions")
	}
	protocolDefaults(&cfg.Limits, &cfg.Timeouts, &cfg.Logger, &cfg.Runtime)
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	if cfg.TxnLog == nil {
		cfg.TxnLog = noTxnLog{}
	}
	if cfg.SyncBacklog <= 0 {
		cfg.SyncBacklog = DefaultSyncBacklog
	}
	oracle, err := NewOracle(ctx, cfg.Decisions)
	if err != nil {
		return nil, err
	}
	c := &Coordinator{cfg: cfg, oracle: oracle, log: cfg.Logger}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.mu.txns = map[uint64]*txnState{}
	c.mu.unacked = map[string]*txnState{}
	c.mu.committers = map[string]*committer{}
	c.mu.forgetMarkers = map[string][]wire.CommitRequest{}
	c.mu.syncers = map[string]*syncer{}
	return c, nil
}

// Close stops the phase-2 drivers and waits for them. Unacknowledged commits stay in the
// decision log and are driven again by the next Recover.
func (c *Coordinator) Close() {
	c.cancel()
	c.wg.Wait()
}

// Handle dispatches one request from a client or a node.
func (c *Coordinator) Handle(ctx context.Context, req wire.Message) (wire.Message, error) {
	switch m := req.(type) {
	case *wire.GetRequest:
		return c.Get(ctx, m)
	case *wire.ScanRequest:
		return c.Scan(ctx, m)
	case *wire.TxnRequest:
		return c.Txn(ctx, m)
	case *wire.OutcomeRequest:
		return c.Outcome(m), nil
	case *wire.OracleBoundRequest:
		return &wire.OracleBoundReply{Bound: c.oracle.Bound()}, nil
	case *wire.StatusRequest:
		return c.Status(ctx), nil
	case *wire.RestoreBeginRequest:
		return c.RestoreBegin(ctx, m)
	case *wire.RestoreRequest:
		return c.Restore(ctx, m)
	default:
		return nil, wire.Errorf(wire.CodeUnknownMessage, "the master does not serve %s requests", req.MsgType())
	}
}

// call sends one request to a node, bounded by the request timeout. A context already bounded
// at least as tightly (by the prepare timeout) gets no timer of its own.
func (c *Coordinator) call(ctx context.Context, node string, req, resp wire.Message) error {
	if dl, ok := ctx.Deadline(); ok && dl.Sub(c.cfg.Runtime.Now()) <= c.cfg.Timeouts.Request {
		return c.cfg.Transport.Call(ctx, node, req, resp)
	}
	ctx, cancel := c.cfg.Runtime.WithTimeout(ctx, c.cfg.Timeouts.Request)
	defer cancel()
	return c.cfg.Transport.Call(ctx, node, req, resp)
}

// since returns the time elapsed since t on the coordinator's clock.
func (c *Coordinator) since(t time.Time) time.Duration { return c.cfg.Runtime.Now().Sub(t) }

// InFlight counts the two-phase transactions the master is driving and, among them, the
// committed ones that some participant has not acknowledged yet. It costs a pass over them
// under the coordinator's mutex: the metrics read it at scrape time.
func (c *Coordinator) InFlight() (inFlight, unacked int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.mu.txns {
		switch st.phase {
		case phaseCommitted:
			unacked++
			inFlight++
		case phasePreparing, phaseUnknown:
			inFlight++
		}
	}
	return inFlight, unacked
}

// statusTimeout bounds the master's wait for one node's status.
const statusTimeout = time.Second

// Status reports the master and every node. A node that does not answer within
// statusTimeout is reported down with the reason.
func (c *Coordinator) Status(ctx context.Context) *wire.StatusReply {
	self := wire.ProcessStatus{Name: MasterName, Role: "master", Up: true, Addr: c.cfg.Directory[MasterName].DialAddr(), MetricsAddr: c.cfg.Directory[MasterName].Metrics}
	c.mu.Lock()
	now := c.cfg.Runtime.Now()
	for id, st := range c.mu.txns {
		self.Prepared = append(self.Prepared, statusInfo(wire.TxnInfo{
			TxnID: id, StartTS: id, AgeMillis: now.Sub(st.started).Milliseconds(), Participants: st.participants,
			InDoubt: st.phase == phaseUnknown,
		}, st))
	}
	c.mu.Unlock()
	sort.Slice(self.Prepared, func(i, j int) bool { return self.Prepared[i].TxnID < self.Prepared[j].TxnID })
	names := c.cfg.Shards.Names()
	nodes := make([]wire.ProcessStatus, len(names))
	fanOut(c.cfg.Runtime, len(names), func(i int) {
		n := names[i]
		sctx, cancel := c.cfg.Runtime.WithTimeout(ctx, statusTimeout)
		defer cancel()
		var rep wire.StatusReply
		err := c.cfg.Transport.Call(sctx, n, &wire.StatusRequest{}, &rep)
		if err != nil || len(rep.Processes) == 0 {
			msg := "no status"
			if err != nil {
				msg = err.Error()
			}
			nodes[i] = wire.ProcessStatus{Name: n, Role: "node", Up: false, Error: msg}
		} else {
			nodes[i] = rep.Processes[0]
		}
		nodes[i].Addr, nodes[i].MetricsAddr = c.cfg.Directory[n].DialAddr(), c.cfg.Directory[n].Metrics
	})
	return &wire.StatusReply{Processes: append([]wire.ProcessStatus{self}, nodes...)}
}
