package txn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
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
	// Runtime runs background work and sleeps (default RealRuntime).
	Runtime Runtime
	// Hooks are called at the coordinator's named points (optional).
	Hooks Hooks
}

// Coordinator is the master's protocol: it routes reads and writes, runs the one-phase fast
// path for single-shard transactions and presumed-abort two-phase commit for the others, and
// answers participants that ask for the outcome of a transaction. It is safe for concurrent
// use.
type Coordinator struct {
	cfg    CoordinatorConfig
	oracle *Oracle
	log    *slog.Logger

	ctx    context.Context // cancelled by Close: stops phase-2 drivers
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu struct {
		sync.Mutex
		txns map[uint64]*txnState // cross-shard transactions being prepared or committed
		// unacked maps each key of a committed or aborted transaction whose phase 2 is still
		// under way to it: a later transaction on the key waits for that phase 2 instead of
		// meeting its locks.
		unacked map[string]*txnState
		// forget lists applied transactions whose decisions wait for the participants' sync.
		forget      []uint64
		forgetTimer bool // a forgetApplied is scheduled
		// committers send each participant's phase-2 commits, batching those that queue up.
		committers map[string]*committer
	}
}

// txnState is the master's memory of a cross-shard transaction. A transaction that is not in
// the map and has no decision record is aborted.
type txnState struct {
	participants []string
	committed    bool   // the decision record is durable
	commitTS     uint64 // with committed
	unknown      bool   // the decision record may or may not be durable: pending until restart
	applied      bool   // every participant acknowledged the commit; forgotten after their sync
	started      time.Time
	done         chan struct{} // closed when every participant acknowledged the commit
	keys         []string      // written and compared keys, while phase 2 is under way
	id           uint64        // the transaction, once phase 2 starts
	acksLeft     int           // participants yet to acknowledge the commit
	acksReceived int           // acknowledgements received, recorded or not
	phase2Start  time.Time
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
	oracle, err := NewOracle(ctx, cfg.Decisions)
	if err != nil {
		return nil, err
	}
	c := &Coordinator{cfg: cfg, oracle: oracle, log: cfg.Logger}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.mu.txns = map[uint64]*txnState{}
	c.mu.unacked = map[string]*txnState{}
	c.mu.committers = map[string]*committer{}
	return c, nil
}

// Oracle returns the coordinator's timestamp oracle.
func (c *Coordinator) Oracle() *Oracle { return c.oracle }

// Recover loads every durable commit decision and drives its phase 2 again in the background,
// until every participant acknowledges. It must run before the master answers any Outcome
// request, or a committed transaction could be reported aborted.
func (c *Coordinator) Recover(ctx context.Context) (int, error) {
	decisions, err := c.cfg.Decisions.Load()
	if err != nil {
		return 0, fmt.Errorf("txn: load decisions: %w", err)
	}
	// Register every decision before driving any: a participant that asks about one of them
	// meanwhile must hear "committed", never the presumed "aborted".
	states := make([]*txnState, len(decisions))
	for i, d := range decisions {
		if err := c.oracle.Observe(ctx, d.CommitTS); err != nil {
			return 0, err
		}
		states[i] = &txnState{participants: d.Participants, committed: true, commitTS: d.CommitTS, started: time.Now(), done: make(chan struct{})}
		c.mu.Lock()
		c.mu.txns[d.TxnID] = states[i]
		c.mu.Unlock()
	}
	for i, d := range decisions {
		c.cfg.TxnLog.Event(d.TxnID, "recovered", d.Participants, "outcome=committed", fmt.Sprintf("commit_ts=%d", d.CommitTS))
		c.cfg.Metrics.Recovered("redrive_commit")
		c.log.Info("re-driving committed transaction", "txn", d.TxnID, "commit_ts", d.CommitTS, "participants", d.Participants)
		c.startPhase2(d.TxnID, states[i])
	}
	return len(decisions), nil
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
	case *wire.TxnRequest:
		return c.Txn(ctx, m)
	case *wire.OutcomeRequest:
		return c.Outcome(m), nil
	case *wire.StatusRequest:
		return c.Status(ctx), nil
	default:
		return nil, wire.Errorf(wire.CodeUnknownMessage, "the master does not serve %s requests", req.MsgType())
	}
}

// Get reads keys as one atomic snapshot at a fresh read timestamp: each shard reads at the same
// timestamp and waits for older prepare locks, so the result never holds half a transaction.
func (c *Coordinator) Get(ctx context.Context, req *wire.GetRequest) (*wire.GetReply, error) {
	if len(req.Keys) == 0 {
		return nil, wire.Errorf(wire.CodeBadRequest, "get needs at least one key")
	}
	if len(req.Keys) > c.cfg.Limits.MaxTxnOps {
		return nil, wire.Errorf(wire.CodeTooLarge, "get of %d keys exceeds the limit of %d (max_txn_ops)", len(req.Keys), c.cfg.Limits.MaxTxnOps)
	}
	for _, k := range req.Keys {
		if err := c.checkKey(k); err != nil {
			return nil, err
		}
	}
	ts := req.ReadTS
	if ts == 0 {
		var err error
		if ts, err = c.oracle.Next(ctx); err != nil {
			return nil, wire.Errorf(wire.CodeInternal, "allocate read timestamp: %v", err)
		}
	} else if ts > c.oracle.Last() {
		return nil, wire.Errorf(wire.CodeBadRequest, "read timestamp %d is in the future", ts)
	}
	// Group the keys by shard, remembering each key's place in the request.
	type shardKeys struct {
		keys [][]byte
		pos  []int
	}
	groups := make([]shardKeys, c.cfg.Shards.Len())
	for i, k := range req.Keys {
		s := c.cfg.Shards.Shard(k)
		groups[s].keys = append(groups[s].keys, k)
		groups[s].pos = append(groups[s].pos, i)
	}
	out := make([]wire.KeyValue, len(req.Keys))
	names := c.cfg.Shards.Names()
	errs := make([]error, len(groups))
	var busy []int // the shards holding any of the keys
	for s := range groups {
		if len(groups[s].keys) > 0 {
			busy = append(busy, s)
		}
	}
	fanOut(c.cfg.Runtime, len(busy), func(i int) {
		s := busy[i]
		var rep wire.GetReply
		err := c.call(ctx, names[s], &wire.GetRequest{Keys: groups[s].keys, ReadTS: ts}, &rep)
		if err == nil && len(rep.Values) != len(groups[s].keys) {
			err = wire.Errorf(wire.CodeInternal, "%s returned %d values for %d keys", names[s], len(rep.Values), len(groups[s].keys))
		}
		if err != nil {
			errs[s] = readError(names[s], err)
			return
		}
		for j, v := range rep.Values {
			out[groups[s].pos[j]] = v
		}
	})
	if err := errors.Join(errs...); err != nil {
		return nil, firstError(errs)
	}
	return &wire.GetReply{Values: out, ReadTS: ts}, nil
}

// readError turns a failed read on a node into the error the client gets: reads change
// nothing, so any failure to reach a node is "unavailable" (safe to retry).
func readError(node string, err error) error {
	var werr *wire.Error
	if errors.As(err, &werr) {
		return werr
	}
	return wire.Errorf(wire.CodeUnavailable, "node %s unavailable: %v", node, err)
}

func firstError(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// shardTxn is the part of a transaction that one shard executes.
type shardTxn struct {
	node   string
	cmps   []wire.Compare
	cmpIdx []int // index of each compare in the client's request
	ops    []wire.Op
}

func (c *Coordinator) checkKey(k []byte) error {
	if len(k) == 0 {
		return wire.Errorf(wire.CodeBadRequest, "empty key")
	}
	if len(k) > c.cfg.Limits.MaxKeyBytes {
		return wire.Errorf(wire.CodeTooLarge, "key of %d bytes exceeds the limit of %d bytes (max_key_bytes)", len(k), c.cfg.Limits.MaxKeyBytes)
	}
	return nil
}

// validate checks a transaction against the limits before anything is sent anywhere.
func (c *Coordinator) validate(req *wire.TxnRequest) error {
	l := c.cfg.Limits
	n := len(req.Ops) + len(req.Compares)
	if len(req.Ops) == 0 && len(req.Compares) == 0 {
		return wire.Errorf(wire.CodeBadRequest, "empty transaction: no operations and no compares")
	}
	if n > l.MaxTxnOps {
		return wire.Errorf(wire.CodeTooLarge, "transaction of %d operations and compares exceeds the limit of %d (max_txn_ops)", n, l.MaxTxnOps)
	}
	total := 0
	for i, op := range req.Ops {
		if op.Kind != wire.OpPut && op.Kind != wire.OpDelete {
			return wire.Errorf(wire.CodeBadRequest, "operation %d: unknown kind %d", i, op.Kind)
		}
		if err := c.checkKey(op.Key); err != nil {
			return err
		}
		if len(op.Value) > l.MaxValueBytes {
			return wire.Errorf(wire.CodeTooLarge, "value of %d bytes for key %q exceeds the limit of %d bytes (max_value_bytes)", len(op.Value), shortKey(op.Key), l.MaxValueBytes)
		}
		if op.Kind == wire.OpDelete && len(op.Value) > 0 {
			return wire.Errorf(wire.CodeBadRequest, "operation %d: a delete carries no value", i)
		}
		total += len(op.Key) + len(op.Value)
	}
	for i, cmp := range req.Compares {
		if cmp.Kind < wire.CmpValueEqual || cmp.Kind > wire.CmpMissing {
			return wire.Errorf(wire.CodeBadRequest, "compare %d: unknown kind %d", i, cmp.Kind)
		}
		if err := c.checkKey(cmp.Key); err != nil {
			return err
		}
		if len(cmp.Value) > l.MaxValueBytes {
			return wire.Errorf(wire.CodeTooLarge, "compare value of %d bytes exceeds the limit of %d bytes (max_value_bytes)", len(cmp.Value), l.MaxValueBytes)
		}
		total += len(cmp.Key) + len(cmp.Value)
	}
	if total > l.MaxTxnBytes {
		return wire.Errorf(wire.CodeTooLarge, "transaction of %d bytes exceeds the limit of %d bytes (max_txn_bytes)", total, l.MaxTxnBytes)
	}
	return nil
}

func shortKey(k []byte) string {
	if len(k) > 32 {
		return string(k[:32]) + "…"
	}
	return string(k)
}

// split groups a transaction's compares and operations by shard, in shard order.
func (c *Coordinator) split(req *wire.TxnRequest) []shardTxn {
	names := c.cfg.Shards.Names()
	parts := make([]*shardTxn, len(names))
	get := func(k []byte) *shardTxn {
		s := c.cfg.Shards.Shard(k)
		if parts[s] == nil {
			parts[s] = &shardTxn{node: names[s]}
		}
		return parts[s]
	}
	for i, cmp := range req.Compares {
		p := get(cmp.Key)
		p.cmps = append(p.cmps, cmp)
		p.cmpIdx = append(p.cmpIdx, i)
	}
	for _, op := range req.Ops {
		p := get(op.Key)
		p.ops = append(p.ops, op)
	}
	var out []shardTxn
	for _, p := range parts {
		if p != nil {
			out = append(out, *p)
		}
	}
	return out
}

// Txn executes a write transaction atomically across shards. The error, if any, is a
// *wire.Error whose code tells the client the outcome: CodeCompareFailed, CodeConflict,
// CodeUnavailable and CodeAborted mean nothing was written (safe to retry);
// CodeUnknownOutcome means it may have committed; other codes reject the request itself.
func (c *Coordinator) Txn(ctx context.Context, req *wire.TxnRequest) (*wire.TxnReply, error) {
	if err := c.validate(req); err != nil {
		return nil, err
	}
	parts := c.split(req)
	if len(parts) == 1 {
		return c.onePhase(ctx, parts[0])
	}
	return c.twoPhase(ctx, parts)
}

func (c *Coordinator) onePhase(ctx context.Context, p shardTxn) (*wire.TxnReply, error) {
	start := time.Now()
	ts, err := c.oracle.Next(ctx)
	if err != nil {
		return nil, wire.Errorf(wire.CodeInternal, "allocate timestamp: %v", err)
	}
	var rep wire.ApplyReply
	err = c.call(ctx, p.node, &wire.ApplyRequest{TxnID: ts, TS: ts, Compares: p.cmps, Ops: p.ops}, &rep)
	if err != nil {
		werr := c.voteError(ts, p, err, true)
		c.cfg.Metrics.TxnDone("1pc", outcomeOf(werr), time.Since(start))
		return nil, werr
	}
	if err := c.oracle.Observe(ctx, rep.CommitTS); err != nil {
		// The write is durable on its node; only the oracle's mark failed. Report unknown
		// rather than committed: a later read might not be ordered after it.
		c.cfg.Metrics.TxnDone("1pc", "unknown", time.Since(start))
		return nil, &wire.Error{Code: wire.CodeUnknownOutcome, TxnID: ts, Message: fmt.Sprintf("transaction %d applied on %s, but the oracle failed: %v", ts, p.node, err)}
	}
	c.cfg.Metrics.TxnDone("1pc", "committed", time.Since(start))
	return &wire.TxnReply{TxnID: ts, CommitTS: rep.CommitTS, Path: "1pc"}, nil
}

func outcomeOf(err error) string {
	if wire.CodeOf(err) == wire.CodeUnknownOutcome {
		return "unknown"
	}
	return "aborted"
}

// voteError turns a participant's refusal or a transport failure into the client's error.
// For a one-phase apply a lost reply means the outcome is unknown; for a prepare it only means
// the vote is missing, and the master aborts.
func (c *Coordinator) voteError(txnID uint64, p shardTxn, err error, onePhase bool) *wire.Error {
	var werr *wire.Error
	if errors.As(err, &werr) {
		out := *werr
		out.TxnID = txnID
		switch werr.Code {
		case wire.CodeCompareFailed:
			if werr.Index >= 0 && werr.Index < len(p.cmpIdx) {
				out.Index = p.cmpIdx[werr.Index]
			}
			out.Message = fmt.Sprintf("compare %d failed: %s", out.Index, werr.Message)
		case wire.CodeLocked:
			out.Code = wire.CodeConflict
		case wire.CodeShuttingDown, wire.CodeVersionMismatch:
			out.Code = wire.CodeUnavailable
			out.Message = fmt.Sprintf("node %s unavailable: %s", p.node, werr.Message)
		case wire.CodeInternal, wire.CodeTimeout:
			if onePhase {
				out.Code = wire.CodeUnknownOutcome
				out.Message = fmt.Sprintf("node %s failed while applying: %s", p.node, werr.Message)
			} else {
				out.Code = wire.CodeAborted
				out.Message = fmt.Sprintf("node %s could not prepare: %s", p.node, werr.Message)
			}
		}
		return &out
	}
	if errors.Is(err, ErrNotDelivered) {
		return &wire.Error{Code: wire.CodeUnavailable, TxnID: txnID, Message: fmt.Sprintf("node %s unavailable: %v", p.node, err)}
	}
	if onePhase {
		return &wire.Error{Code: wire.CodeUnknownOutcome, TxnID: txnID, Message: fmt.Sprintf("node %s did not answer, the write may have been applied: %v", p.node, err)}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &wire.Error{Code: wire.CodeUnavailable, TxnID: txnID, Message: fmt.Sprintf("node %s did not vote in time", p.node)}
	}
	return &wire.Error{Code: wire.CodeUnavailable, TxnID: txnID, Message: fmt.Sprintf("node %s unavailable: %v", p.node, err)}
}

// votePriority orders refusals so that the client hears the most useful reason.
func votePriority(code wire.Code) int {
	switch code {
	case wire.CodeCompareFailed:
		return 0
	case wire.CodeConflict:
		return 1
	case wire.CodeUnavailable:
		return 3
	default:
		return 2
	}
}

func (c *Coordinator) twoPhase(ctx context.Context, parts []shardTxn) (*wire.TxnReply, error) {
	start := time.Now()
	txnID, err := c.oracle.Next(ctx)
	if err != nil {
		return nil, wire.Errorf(wire.CodeInternal, "allocate timestamp: %v", err)
	}
	names := make([]string, len(parts))
	for i, p := range parts {
		names[i] = p.node
	}
	keys := txnKeys(parts)
	c.waitUnacked(ctx, keys)
	st := &txnState{participants: names, started: start, done: make(chan struct{})}
	c.mu.Lock()
	c.mu.txns[txnID] = st
	c.mu.Unlock()
	c.cfg.Hooks.at(PointMasterBeforePrepare)
	c.cfg.TxnLog.Event(txnID, "prepare", names)

	// Phase 1: every participant in parallel, bounded by the prepare timeout.
	prepCtx, cancel := context.WithTimeout(ctx, c.cfg.Timeouts.Prepare)
	minTS := make([]uint64, len(parts))
	errs := make([]error, len(parts))
	fanOut(c.cfg.Runtime, len(parts), func(i int) {
		p := parts[i]
		var rep wire.PrepareReply
		err := c.call(prepCtx, p.node, &wire.PrepareRequest{TxnID: txnID, StartTS: txnID, Compares: p.cmps, Ops: p.ops, Participants: names}, &rep)
		minTS[i], errs[i] = rep.MinCommitTS, err
	})
	cancel()
	c.cfg.Metrics.PhaseDone("prepare", time.Since(start))

	var refusal *wire.Error
	for i, err := range errs {
		if err == nil {
			continue
		}
		werr := c.voteError(txnID, parts[i], err, false)
		if refusal == nil || votePriority(werr.Code) < votePriority(refusal.Code) {
			refusal = werr
		}
	}
	if refusal == nil && ctx.Err() != nil {
		refusal = &wire.Error{Code: wire.CodeAborted, TxnID: txnID, Message: "the client gave up before the decision"}
	}
	if refusal != nil {
		c.abort(txnID, st, keys, refusal)
		c.cfg.Metrics.TxnDone("2pc", "aborted", time.Since(start))
		return nil, refusal
	}
	c.cfg.Hooks.at(PointMasterAfterVotes)

	// Decision: the commit timestamp is above every participant's served reads (MinCommitTS)
	// and above every timestamp handed out so far.
	decStart := time.Now()
	commitTS, err := c.oracle.Next(ctx)
	if err == nil {
		commitTS = max(commitTS, slices.Max(minTS))
		err = c.oracle.Observe(ctx, commitTS)
	}
	if err != nil {
		werr := &wire.Error{Code: wire.CodeAborted, TxnID: txnID, Message: fmt.Sprintf("allocate commit timestamp: %v", err)}
		c.abort(txnID, st, keys, werr)
		c.cfg.Metrics.TxnDone("2pc", "aborted", time.Since(start))
		return nil, werr
	}
	// The record must become durable even if the client goes away meanwhile.
	if err := c.cfg.Decisions.Record(context.WithoutCancel(ctx), Decision{TxnID: txnID, CommitTS: commitTS, Participants: names}); err != nil {
		// The record may or may not be on disk: only a restart can tell. Until then the
		// transaction stays pending for participants that ask, which keep their locks.
		c.mu.Lock()
		st.unknown = true
		c.mu.Unlock()
		c.log.Error("decision record failed: outcome unknown until the master restarts", "txn", txnID, "err", err)
		c.cfg.TxnLog.Event(txnID, "decision", names, "outcome=unknown", fmt.Sprintf("error=%q", err.Error()))
		c.cfg.Metrics.TxnDone("2pc", "unknown", time.Since(start))
		return nil, &wire.Error{Code: wire.CodeUnknownOutcome, TxnID: txnID, Message: fmt.Sprintf("the decision record could not be written: %v", err)}
	}
	c.mu.Lock()
	st.committed, st.commitTS, st.keys = true, commitTS, keys
	for _, k := range keys {
		c.mu.unacked[k] = st
	}
	c.mu.Unlock()
	c.cfg.Metrics.PhaseDone("decision", time.Since(decStart))
	c.cfg.Hooks.at(PointMasterAfterDecision)
	c.cfg.TxnLog.Event(txnID, "decision", names, "outcome=committed", fmt.Sprintf("commit_ts=%d", commitTS))

	// The decision is durable: the transaction is committed. Phase 2 runs in the background;
	// readers wait for its locks, and later writers of its keys wait for it at the master.
	c.startPhase2(txnID, st)
	c.cfg.Metrics.TxnDone("2pc", "committed", time.Since(start))
	return &wire.TxnReply{TxnID: txnID, CommitTS: commitTS, Path: "2pc"}, nil
}

// txnKeys returns the distinct keys a transaction writes or compares.
func txnKeys(parts []shardTxn) []string {
	seen := map[string]bool{}
	var keys []string
	add := func(k []byte) {
		if !seen[string(k)] {
			seen[string(k)] = true
			keys = append(keys, string(k))
		}
	}
	for _, p := range parts {
		for _, op := range p.ops {
			add(op.Key)
		}
		for _, cmp := range p.cmps {
			add(cmp.Key)
		}
	}
	return keys
}

// waitUnacked waits, up to CommitWait, until no key is held by a committed transaction whose
// phase 2 is still under way: its prepare locks would make this transaction's prepare
// conflict, although the outcome is already known.
func (c *Coordinator) waitUnacked(ctx context.Context, keys []string) {
	deadline := c.cfg.Runtime.Now().Add(c.cfg.Timeouts.CommitWait)
	for {
		c.mu.Lock()
		var st *txnState
		for _, k := range keys {
			if st = c.mu.unacked[k]; st != nil {
				break
			}
		}
		c.mu.Unlock()
		if st == nil {
			return
		}
		left := deadline.Sub(c.cfg.Runtime.Now())
		if left <= 0 || !c.cfg.Runtime.Wait(ctx, st.done, left) {
			return // phase 2 is stuck (a node is down): let the prepare find out
		}
	}
}

// abort forgets a transaction that will never commit (presumed abort: no record) and tells
// the participants, best effort: one that misses the message asks later and hears "aborted".
//
// Until the participants have acknowledged the abort (or the attempts run out), its keys are
// registered as unacknowledged, so that the client's retry waits for the locks to go instead of
// meeting them.
func (c *Coordinator) abort(txnID uint64, st *txnState, keys []string, reason *wire.Error) {
	names := st.participants
	c.mu.Lock()
	delete(c.mu.txns, txnID)
	st.keys = keys
	for _, k := range keys {
		c.mu.unacked[k] = st
	}
	c.mu.Unlock()
	c.cfg.TxnLog.Event(txnID, "abort", names, fmt.Sprintf("reason=%s", reason.Code), fmt.Sprintf("detail=%q", reason.Message))
	c.wg.Add(1)
	c.cfg.Runtime.Go(func() {
		defer c.wg.Done()
		fanOut(c.cfg.Runtime, len(names), func(i int) {
			c.retry(names[i], &wire.AbortRequest{TxnID: txnID}, 3)
		})
		c.releaseKeys(st)
		close(st.done)
	})
}

// releaseKeys forgets st's keys as unacknowledged.
func (c *Coordinator) releaseKeys(st *txnState) {
	c.mu.Lock()
	for _, k := range st.keys {
		if c.mu.unacked[k] == st {
			delete(c.mu.unacked, k)
		}
	}
	c.mu.Unlock()
}

// startPhase2 sends Commit to every participant until each acknowledges, then forgets the
// decision. It runs in the background until done or until Close.
func (c *Coordinator) startPhase2(txnID uint64, st *txnState) {
	c.mu.Lock()
	st.id, st.acksLeft, st.phase2Start = txnID, len(st.participants), time.Now()
	c.mu.Unlock()
	for _, n := range st.participants {
		c.queueCommit(n, st)
	}
}

// committer sends the phase-2 commits of one participant. Commits decided while a request is
// in flight queue up and go out together in the next one: under load, one request, one reply
// and one dispatch at the node carry many transactions; when idle, nothing waits.
type committer struct {
	mu      sync.Mutex
	queue   []*txnState
	running bool // a drainCommits is sending
}

// maxCommitBatch bounds the commits in one request, far below the frame limit.
const maxCommitBatch = 1024

// queueCommit queues st's commit for node and starts a sender if none is running.
func (c *Coordinator) queueCommit(node string, st *txnState) {
	c.mu.Lock()
	cm := c.mu.committers[node]
	if cm == nil {
		cm = &committer{}
		c.mu.committers[node] = cm
	}
	c.mu.Unlock()
	cm.mu.Lock()
	cm.queue = append(cm.queue, st)
	start := !cm.running
	cm.running = true
	cm.mu.Unlock()
	if start {
		c.wg.Add(1)
		c.cfg.Runtime.Go(func() { c.drainCommits(node, cm) })
	}
}

// drainCommits sends cm's queued commits to node, a batch per request, each until it is
// acknowledged, and returns when the queue is empty or the coordinator closes (the next
// Recover drives the rest again).
func (c *Coordinator) drainCommits(node string, cm *committer) {
	defer c.wg.Done()
	for {
		cm.mu.Lock()
		n := min(len(cm.queue), maxCommitBatch)
		if n == 0 {
			cm.running = false
			cm.mu.Unlock()
			return
		}
		batch := slices.Clone(cm.queue[:n])
		cm.queue = slices.Delete(cm.queue, 0, n)
		cm.mu.Unlock()
		var req wire.Message
		if len(batch) == 1 {
			req = &wire.CommitRequest{TxnID: batch[0].id, CommitTS: batch[0].commitTS}
		} else {
			commits := make([]wire.CommitRequest, len(batch))
			for i, st := range batch {
				commits[i] = wire.CommitRequest{TxnID: st.id, CommitTS: st.commitTS}
			}
			req = &wire.CommitBatchRequest{Commits: commits}
		}
		if !c.sendCommits(node, req, batch) {
			return
		}
	}
}

// sendCommits sends req, the commits of batch, to node until it is acknowledged, and records
// the acknowledgements. If node refuses it (an error other than a connection failure, which
// only a bug causes), each commit is retried on its own, in the background, so that the refused
// one does not hold up the others or those queued behind them. It reports false only when the
// coordinator closes.
func (c *Coordinator) sendCommits(node string, req wire.Message, batch []*txnState) bool {
	acked, err := c.retryUnless(node, req, 0, refused)
	switch {
	case acked:
		for _, st := range batch {
			c.commitAcked(st)
		}
	case err != nil:
		c.log.Warn("commit refused: retrying each commit alone", "node", node, "commits", len(batch), "err", err)
		for _, st := range batch {
			c.wg.Add(1)
			c.cfg.Runtime.Go(func() {
				defer c.wg.Done()
				acked, err := c.retryUnless(node, &wire.CommitRequest{TxnID: st.id, CommitTS: st.commitTS}, 0, notPrepared)
				if err != nil {
					// Retrying cannot help: the node has no record of the transaction to commit.
					c.log.Error("commit refused: the node never prepared this transaction; its shard misses the transaction's writes",
						"node", node, "txn", st.id, "commit_ts", st.commitTS, "err", err)
					c.cfg.Metrics.CommitNotPrepared(node)
					acked = true
				}
				if acked {
					c.commitAcked(st)
				}
			})
		}
	default:
		return false // closing
	}
	return true
}

// refused reports whether err is a node's refusal of a request, rather than a sign that it
// could not serve it now (unreachable, timed out, shutting down), after which a retry may
// succeed.
func refused(err error) bool {
	var werr *wire.Error
	return errors.As(err, &werr) && !transientCode(werr.Code)
}

// notPrepared reports whether err is a node's answer that it never prepared the transaction
// it was asked to commit.
func notPrepared(err error) bool {
	var werr *wire.Error
	return errors.As(err, &werr) && werr.Code == wire.CodeNotFound
}

// transientCode reports whether a node's error code says it could not serve the request now
// (a retry may succeed) rather than that it refuses it.
func transientCode(code wire.Code) bool {
	switch code {
	case wire.CodeUnavailable, wire.CodeTimeout, wire.CodeShuttingDown:
		return true
	}
	return false
}

// commitAcked records one participant's acknowledgement of st's commit; after the last one
// the transaction is applied: its keys are free for later writers, and its decision is
// forgotten after the participants' next sync.
//
// The first acknowledgement reaches PointMasterAfterFirstCommit before it is recorded: while a
// hook blocks there, the transaction cannot be applied.
func (c *Coordinator) commitAcked(st *txnState) {
	c.mu.Lock()
	st.acksReceived++
	first := st.acksReceived == 1
	c.mu.Unlock()
	if first {
		c.cfg.Hooks.at(PointMasterAfterFirstCommit)
	}
	c.mu.Lock()
	st.acksLeft--
	if st.acksLeft > 0 {
		c.mu.Unlock()
		return
	}
	st.applied = true
	c.mu.forget = append(c.mu.forget, st.id)
	startTimer := !c.mu.forgetTimer
	c.mu.forgetTimer = true
	c.mu.Unlock()
	c.cfg.TxnLog.Event(st.id, "acknowledged", st.participants)
	c.releaseKeys(st)
	c.cfg.Metrics.PhaseDone("commit", time.Since(st.phase2Start))
	close(st.done)
	if startTimer {
		c.wg.Add(1)
		c.cfg.Runtime.Go(func() {
			defer c.wg.Done()
			if c.cfg.Runtime.Sleep(c.ctx, ForgetDelay) == nil {
				c.forgetApplied()
			}
		})
	}
}

// ForgetDelay is how long the master gathers acknowledged commits before it asks their
// participants to sync and forgets the decisions: one sync request per node per batch.
const ForgetDelay = 50 * time.Millisecond

// forgetApplied forgets the decisions of the transactions whose commits every participant has
// acknowledged, once each participant has answered a SyncRequest listing them. Participants
// apply commits without waiting for a sync, so until then a crash of a participant's machine
// could bring a transaction back prepared, and it would ask; the SyncRequest re-applies any
// such commit before it syncs, so a restart between the acknowledgement and the sync is safe.
func (c *Coordinator) forgetApplied() {
	c.mu.Lock()
	batch := c.mu.forget
	c.mu.forget = nil
	c.mu.forgetTimer = false
	commits := map[string][]wire.CommitRequest{}
	for _, id := range batch {
		st := c.mu.txns[id]
		for _, n := range st.participants {
			commits[n] = append(commits[n], wire.CommitRequest{TxnID: id, CommitTS: st.commitTS})
		}
	}
	c.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	names := make([]string, 0, len(commits))
	for n := range commits {
		names = append(names, n)
	}
	sort.Strings(names)
	ok := make([]bool, len(names))
	fanOut(c.cfg.Runtime, len(names), func(i int) {
		ok[i] = c.retry(names[i], &wire.SyncRequest{Commits: commits[names[i]]}, 0)
	})
	if slices.Contains(ok, false) {
		return // closing: the decisions stay in the log and are driven again after a restart
	}
	if err := c.cfg.Decisions.Forget(batch...); err != nil {
		c.log.Warn("forget decisions", "txns", len(batch), "err", err)
	}
	c.mu.Lock()
	for _, id := range batch {
		delete(c.mu.txns, id)
	}
	c.mu.Unlock()
}

// retry sends req to node until it is acknowledged, the coordinator closes, or (with
// attempts > 0) the attempts run out. It reports whether node acknowledged.
func (c *Coordinator) retry(node string, req wire.Message, attempts int) bool {
	acked, _ := c.retryUnless(node, req, attempts, nil)
	return acked
}

// retryUnless is retry that also stops at an error for which stop (if not nil) is true,
// returning it.
func (c *Coordinator) retryUnless(node string, req wire.Message, attempts int, stop func(error) bool) (bool, error) {
	backoff := 5 * time.Millisecond
	for i := 0; attempts == 0 || i < attempts; i++ {
		var ack wire.Ack
		err := c.call(c.ctx, node, req, &ack)
		if err == nil {
			return true, nil
		}
		if c.ctx.Err() != nil {
			return false, nil
		}
		if stop != nil && stop(err) {
			return false, err
		}
		c.log.Debug("phase 2 retry", "node", node, "msg", req.MsgType(), "err", err)
		if c.cfg.Runtime.Sleep(c.ctx, backoff) != nil {
			return false, nil
		}
		backoff = min(backoff*2, time.Second)
	}
	return false, nil
}

// call sends one request to a node, bounded by the request timeout.
func (c *Coordinator) call(ctx context.Context, node string, req, resp wire.Message) error {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= c.cfg.Timeouts.Request {
		// Already bounded at least as tightly (the prepare timeout): a context and its timer
		// per call cost 6% of the master's CPU under load.
		return c.cfg.Transport.Call(ctx, node, req, resp)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeouts.Request)
	defer cancel()
	return c.cfg.Transport.Call(ctx, node, req, resp)
}

// Outcome answers a participant that asks about a transaction it prepared. It never says
// "aborted" for a transaction the master may still commit: a transaction being prepared, or
// whose decision record could not be confirmed, is "pending".
func (c *Coordinator) Outcome(req *wire.OutcomeRequest) *wire.OutcomeReply {
	c.mu.Lock()
	st := c.mu.txns[req.TxnID]
	var rep wire.OutcomeReply
	switch {
	case st == nil:
		rep.State = wire.OutcomeAborted
	case st.committed:
		rep.State, rep.CommitTS = wire.OutcomeCommitted, st.commitTS
	default:
		rep.State = wire.OutcomePending
	}
	c.mu.Unlock()
	c.log.Debug("outcome asked", "txn", req.TxnID, "from", req.From, "state", rep.State)
	return &rep
}

// InFlight counts the two-phase transactions the master is driving and, among them, the
// committed ones that some participant has not acknowledged yet. It costs a pass over them
// under the coordinator's mutex: the metrics read it at scrape time.
func (c *Coordinator) InFlight() (inFlight, unacked int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.mu.txns {
		if st.applied {
			continue
		}
		inFlight++
		if st.committed {
			unacked++
		}
	}
	return inFlight, unacked
}

// Status reports the master and every node. A node that does not answer within a second is
// reported down with the reason.
func (c *Coordinator) Status(ctx context.Context) *wire.StatusReply {
	self := wire.ProcessStatus{Name: MasterName, Role: "master", Up: true, Addr: c.cfg.Directory[MasterName].Listen, MetricsAddr: c.cfg.Directory[MasterName].Metrics}
	c.mu.Lock()
	now := time.Now()
	for id, st := range c.mu.txns {
		info := wire.TxnInfo{TxnID: id, StartTS: id, AgeMillis: now.Sub(st.started).Milliseconds(), Participants: st.participants}
		switch {
		case st.unknown:
			info.InDoubt, info.Waiting = true, "decision record unconfirmed until restart"
		case st.applied:
			info.Waiting = "participants' sync, to forget the decision"
		case st.committed:
			info.Waiting = "commit acknowledgements"
		default:
			info.Waiting = "votes"
		}
		self.Prepared = append(self.Prepared, info)
	}
	c.mu.Unlock()
	sort.Slice(self.Prepared, func(i, j int) bool { return self.Prepared[i].TxnID < self.Prepared[j].TxnID })
	names := c.cfg.Shards.Names()
	nodes := make([]wire.ProcessStatus, len(names))
	fanOut(c.cfg.Runtime, len(names), func(i int) {
		n := names[i]
		sctx, cancel := context.WithTimeout(ctx, time.Second)
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
		nodes[i].Addr, nodes[i].MetricsAddr = c.cfg.Directory[n].Listen, c.cfg.Directory[n].Metrics
	})
	return &wire.StatusReply{Processes: append([]wire.ProcessStatus{self}, nodes...)}
}
