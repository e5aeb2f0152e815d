package txn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kvtx/kvtx/kv"
	"github.com/kvtx/kvtx/wire"
)

// Storage is what a participant needs of its shard; *kv.Store implements it.
type Storage interface {
	Get(ctx context.Context, keys [][]byte, ts uint64) ([]kv.Value, error)
	Scan(ctx context.Context, start, end []byte, ts uint64, opts kv.ScanOptions) ([]kv.Value, bool, error)
	Apply(ctx context.Context, txnID, ts uint64, cmps []kv.Compare, ops []kv.Op) (uint64, error)
	Prepare(ctx context.Context, rec kv.PrepareRecord, cmps []kv.Compare) (uint64, error)
	Commit(ctx context.Context, txnID, commitTS uint64) error
	CommitNoSync(ctx context.Context, txnID, commitTS uint64) error
	Sync(ctx context.Context) error
	Abort(ctx context.Context, txnID uint64) error
	Resolve(ctx context.Context, txnID uint64) (kv.Resolution, error)
	ForgetOutcomes(commits map[uint64]uint64) (int, error)
	SweepOutcomes(before time.Time) (int, error)
	SetSafePoint(ctx context.Context, ts uint64) error
	Prepared() []kv.PreparedTxn
	Stats() kv.Stats
}

var _ Storage = (*kv.Store)(nil)

// ParticipantConfig holds everything a Participant needs; every side effect is injected.
type ParticipantConfig struct {
	// Name is this node's name in the shard map.
	Name string
	// Shards is the cluster's shard map; keys of other shards are refused.
	Shards *ShardMap
	// Store is this node's shard.
	Store Storage
	// Master reaches the master (as MasterName) to ask for outcomes.
	Master Transport
	// Peers reaches the other nodes by name, to settle transactions of the parallel commit
	// protocol among the participants (default Master, which then must reach them too).
	Peers Transport
	// Limits and Timeouts: zero fields take their defaults.
	Limits   Limits
	Timeouts Timeouts
	// Metrics, TxnLog and Logger are optional.
	Metrics ParticipantMetrics
	TxnLog  TxnLog
	Logger  *slog.Logger
	// Runtime runs background work and measures every timeout (default RealRuntime).
	Runtime Runtime
	// Hooks are called at the participant's named points (optional).
	Hooks Hooks
	// MarkerRetention is how long an "aborted" outcome marker is kept (default 10 times
	// LateBound(Timeouts)): past LateBound no prepare of the transaction can succeed, and the
	// rest is the margin for clocks that disagree.
	MarkerRetention time.Duration
}

// Participant is a node's side of the protocol: reads at a timestamp, one-phase apply,
// prepare/commit/abort, and termination of prepared transactions whose outcome it has not
// heard: by asking the master (classic protocol), or the other participants (parallel
// protocol, terminate.go). A participant never decides a prepared transaction alone.
type Participant struct {
	cfg   ParticipantConfig
	shard int
	log   *slog.Logger
	bound oracleBound // of the master's oracle, learned from the master (bound.go)

	mu struct {
		sync.Mutex
		asks      map[uint64]*askState // prepared transactions this node has asked about
		lastSweep time.Time            // of the aborted outcome markers
	}
}

// maxAskBackoff caps the wait between two asks about one in-doubt transaction: once the master
// is back, every in-doubt transaction is resolved within about this long. An ask of a master
// that is down fails at once, so asking every second costs little.
const maxAskBackoff = time.Second

type askState struct {
	next    time.Time // do not ask again before
	backoff time.Duration
	inDoubt bool   // the last ask got no final answer
	reason  string // why, for status
}

var _ Handler = (*Participant)(nil)

// NewParticipant validates cfg.
func NewParticipant(cfg ParticipantConfig) (*Participant, error) {
	if cfg.Shards == nil || cfg.Store == nil || cfg.Master == nil {
		return nil, errors.New("txn: participant needs Shards, Store and Master")
	}
	shard := -1
	for i, n := range cfg.Shards.Names() {
		if n == cfg.Name {
			shard = i
		}
	}
	if shard < 0 {
		return nil, fmt.Errorf("txn: node %q is not in the shard map %v", cfg.Name, cfg.Shards.Names())
	}
	protocolDefaults(&cfg.Limits, &cfg.Timeouts, &cfg.Logger, &cfg.Runtime)
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	if cfg.TxnLog == nil {
		cfg.TxnLog = noTxnLog{}
	}
	if cfg.Peers == nil {
		cfg.Peers = cfg.Master
	}
	if cfg.MarkerRetention <= 0 {
		cfg.MarkerRetention = 10 * LateBound(cfg.Timeouts)
	}
	p := &Participant{cfg: cfg, shard: shard, log: cfg.Logger}
	p.mu.asks = map[uint64]*askState{}
	return p, nil
}

// Handle dispatches one request from the master.
func (p *Participant) Handle(ctx context.Context, req wire.Message) (wire.Message, error) {
	switch m := req.(type) {
	case *wire.GetRequest:
		return p.get(ctx, m)
	case *wire.ScanRequest:
		return p.scan(ctx, m)
	case *wire.ApplyRequest:
		return p.apply(ctx, m)
	case *wire.PrepareRequest:
		return p.prepare(ctx, m)
	case *wire.CommitRequest:
		return p.commit(ctx, m)
	case *wire.CommitBatchRequest:
		if err := p.checkCommitTSs(ctx, m.Commits); err != nil {
			return nil, p.stepDone("commit", err)
		}
		for i := range m.Commits {
			if _, err := p.commit(ctx, &m.Commits[i]); err != nil {
				return nil, err // the master sends the whole batch again: Commit is idempotent
			}
		}
		return &wire.Ack{}, nil
	case *wire.AbortRequest:
		return p.abort(ctx, m)
	case *wire.OutcomeRequest:
		return p.outcome(ctx, m)
	case *wire.SafePointRequest:
		if err := p.checkTS(ctx, "safe point", m.SafePoint); err != nil {
			return nil, err
		}
		if err := p.cfg.Store.SetSafePoint(ctx, m.SafePoint); err != nil {
			return nil, storeError(err)
		}
		return &wire.Ack{}, nil
	case *wire.StatusRequest:
		return &wire.StatusReply{Processes: []wire.ProcessStatus{p.Status()}}, nil
	case *wire.SyncRequest:
		return p.sync(ctx, m)
	case *wire.RestoreBeginRequest:
		return p.restoreBegin()
	case *wire.RestoreRequest:
		return p.restore(ctx, m)
	default:
		return nil, wire.Errorf(wire.CodeUnknownMessage, "a node does not serve %s requests", req.MsgType())
	}
}

// checkShard refuses keys that this node's shard does not own.
func (p *Participant) checkShard(keys ...[]byte) error {
	for _, k := range keys {
		if s := p.cfg.Shards.Shard(k); s != p.shard {
			return wire.Errorf(wire.CodeWrongShard, "key %q belongs to %s, not %s", shortKey(k), p.cfg.Shards.Names()[s], p.cfg.Name)
		}
	}
	return nil
}

// checkTxn checks the part of a transaction that this node executes, as the master did.
func (p *Participant) checkTxn(cmps []wire.Compare, ops []wire.Op) error {
	if err := checkTxn(p.cfg.Limits, cmps, ops); err != nil {
		return err
	}
	for _, c := range cmps {
		if err := p.checkShard(c.Key); err != nil {
			return err
		}
	}
	for _, op := range ops {
		if err := p.checkShard(op.Key); err != nil {
			return err
		}
	}
	return nil
}

func (p *Participant) get(ctx context.Context, req *wire.GetRequest) (*wire.GetReply, error) {
	if req.ReadTS == 0 {
		return nil, wire.Errorf(wire.CodeBadRequest, "a node read needs a read timestamp")
	}
	if err := checkRead(p.cfg.Limits, req.Keys); err != nil {
		return nil, err
	}
	if err := p.checkShard(req.Keys...); err != nil {
		return nil, err
	}
	if err := p.checkTS(ctx, "read timestamp", req.ReadTS); err != nil {
		return nil, err
	}
	if err := p.checkCommitTSs(ctx, req.Committed); err != nil {
		return nil, err
	}
	p.applyCommitted(ctx, req.Committed)
	vals, err := p.cfg.Store.Get(ctx, req.Keys, req.ReadTS)
	if err != nil {
		return nil, storeError(err)
	}
	out := make([]wire.KeyValue, len(vals))
	for i, v := range vals {
		out[i] = wire.KeyValue{Key: v.Key, Value: v.Value, Version: v.Version, Found: v.Found}
	}
	return &wire.GetReply{Values: out, ReadTS: req.ReadTS}, nil
}

func (p *Participant) apply(ctx context.Context, req *wire.ApplyRequest) (*wire.ApplyReply, error) {
	if err := p.checkTxn(req.Compares, req.Ops); err != nil {
		return nil, err
	}
	if err := p.checkTS(ctx, "apply timestamp", req.TS); err != nil {
		return nil, p.stepDone("apply", err)
	}
	if err := p.checkCommitTSs(ctx, req.Committed); err != nil {
		return nil, p.stepDone("apply", err)
	}
	p.applyCommitted(ctx, req.Committed)
	ts, err := p.cfg.Store.Apply(ctx, req.TxnID, req.TS, kvCompares(req.Compares), kvOps(req.Ops))
	if err = p.stepDone("apply", err); err != nil {
		return nil, err
	}
	return &wire.ApplyReply{CommitTS: ts}, nil
}

func (p *Participant) prepare(ctx context.Context, req *wire.PrepareRequest) (*wire.PrepareReply, error) {
	if err := p.checkTxn(req.Compares, req.Ops); err != nil {
		return nil, p.stepDone("prepare", err)
	}
	if err := p.checkParticipants(req.Participants); err != nil {
		return nil, p.stepDone("prepare", err)
	}
	if req.Parallel {
		if err := p.checkAge(req.SentAt); err != nil {
			return nil, p.stepDone("prepare", err)
		}
	}
	if err := p.checkTS(ctx, "start timestamp", req.StartTS); err != nil {
		return nil, p.stepDone("prepare", err)
	}
	if err := p.checkCommitTSs(ctx, req.Committed); err != nil {
		return nil, p.stepDone("prepare", err)
	}
	p.applyCommitted(ctx, req.Committed)
	p.cfg.Hooks.at(PointNodeBeforePrepareRecord)
	rec := kv.PrepareRecord{TxnID: req.TxnID, StartTS: req.StartTS, Ops: kvOps(req.Ops), Participants: req.Participants,
		PreparedAt: p.cfg.Runtime.Now(), Parallel: req.Parallel}
	// Once the record is being written, finish: a vote the master never hears is harmless,
	// a record written but reported as failed would only hold locks until asked about.
	minTS, err := p.cfg.Store.Prepare(context.WithoutCancel(ctx), rec, kvCompares(req.Compares))
	if err != nil {
		p.cfg.TxnLog.Event(req.TxnID, "vote", req.Participants, "vote=no", fmt.Sprintf("reason=%q", err.Error()))
		return nil, p.stepDone("prepare", err)
	}
	p.stepDone("prepare", nil)
	p.cfg.Hooks.at(PointNodeAfterPrepareRecord)
	p.cfg.TxnLog.Event(req.TxnID, "vote", req.Participants, "vote=yes", fmt.Sprintf("min_commit_ts=%d", minTS))
	return &wire.PrepareReply{MinCommitTS: minTS}, nil
}

// checkParticipants checks a prepare's participant list, on which the parallel protocol's
// termination rests (committed once every one named holds a yes vote): distinct nodes of the
// shard map, this one among them.
func (p *Participant) checkParticipants(names []string) error {
	self := false
	for i, n := range names {
		if !slices.Contains(p.cfg.Shards.Names(), n) || slices.Contains(names[:i], n) {
			return wire.Errorf(wire.CodeBadRequest, "prepare names participant %q twice or outside the shard map %v", n, p.cfg.Shards.Names())
		}
		self = self || n == p.cfg.Name
	}
	if !self {
		return wire.Errorf(wire.CodeBadRequest, "prepare's participants %v do not name %s", names, p.cfg.Name)
	}
	return nil
}

// commit applies a commit the master sent. It does not wait for a sync: the master keeps its
// decision until a SyncRequest to this node has been answered after the acknowledgement.
func (p *Participant) commit(ctx context.Context, req *wire.CommitRequest) (*wire.Ack, error) {
	if err := p.checkTS(ctx, "commit timestamp", req.CommitTS); err != nil {
		return nil, p.stepDone("commit", err)
	}
	p.cfg.Hooks.at(PointNodeBeforeCommitApply)
	err := p.cfg.Store.CommitNoSync(context.WithoutCancel(ctx), req.TxnID, req.CommitTS)
	if err = p.stepDone("commit", err); err != nil {
		return nil, err
	}
	p.cfg.Hooks.at(PointNodeAfterCommitApply)
	p.forget(req.TxnID)
	p.cfg.TxnLog.Event(req.TxnID, "commit", nil, fmt.Sprintf("commit_ts=%d", req.CommitTS))
	return &wire.Ack{}, nil
}

// applyCommitted applies the commits the master sent along with a request, for transactions it
// knows are committed whose locks the request may meet, as their phase 2 would (without a sync:
// the master still drives their phase 2 and its Sync). A failure only leaves the lock to that
// phase 2.
func (p *Participant) applyCommitted(ctx context.Context, commits []wire.CommitRequest) {
	for _, c := range commits {
		if err := p.cfg.Store.CommitNoSync(context.WithoutCancel(ctx), c.TxnID, c.CommitTS); err != nil && !errors.Is(err, kv.ErrNotPrepared) {
			p.log.Debug("commit carried by a request", "txn", c.TxnID, "commit_ts", c.CommitTS, "err", err)
		}
	}
}

// sync makes the listed commits durable: a commit this node applied without syncing and then
// lost in a crash left the transaction prepared again, so it is applied again first. One this
// node never prepared (the master has already counted it when its Commit was refused) has
// nothing to apply.
func (p *Participant) sync(ctx context.Context, req *wire.SyncRequest) (*wire.Ack, error) {
	if err := p.checkCommitTSs(ctx, req.Commits); err != nil {
		return nil, err
	}
	for _, c := range req.Commits {
		err := p.cfg.Store.CommitNoSync(context.WithoutCancel(ctx), c.TxnID, c.CommitTS)
		if err != nil && !errors.Is(err, kv.ErrNotPrepared) {
			return nil, storeError(err)
		}
	}
	if err := p.cfg.Store.Sync(context.WithoutCancel(ctx)); err != nil {
		return nil, storeError(err)
	}
	if len(req.Forget) > 0 {
		forget := make(map[uint64]uint64, len(req.Forget))
		for _, c := range req.Forget {
			forget[c.TxnID] = c.CommitTS
		}
		if _, err := p.cfg.Store.ForgetOutcomes(forget); err != nil {
			p.log.Warn("forget outcome markers", "txns", len(forget), "err", err)
		}
	}
	return &wire.Ack{}, nil
}

func (p *Participant) abort(ctx context.Context, req *wire.AbortRequest) (*wire.Ack, error) {
	err := p.cfg.Store.Abort(context.WithoutCancel(ctx), req.TxnID)
	if err = p.stepDone("abort", err); err != nil {
		return nil, err
	}
	p.forget(req.TxnID)
	p.cfg.TxnLog.Event(req.TxnID, "abort", nil)
	return &wire.Ack{}, nil
}

func (p *Participant) forget(txnID uint64) {
	p.mu.Lock()
	delete(p.mu.asks, txnID)
	p.mu.Unlock()
}

// stepDone records one step of a transaction with the code of its reply and returns the
// reply's error: err as a *wire.Error, or nil.
func (p *Participant) stepDone(step string, err error) error {
	if err != nil {
		var werr *wire.Error
		if !errors.As(err, &werr) {
			err = storeError(err)
			if werr = err.(*wire.Error); werr.Code == wire.CodeSpaceExceeded {
				werr.Message = "node " + p.cfg.Name + ": " + werr.Message
			}
		}
	}
	p.cfg.Metrics.Step(step, wire.CodeOf(err))
	return err
}

// AlarmNoSpace is the alarm a node raises while it is at or over its disk quota
// (StorageConfig.QuotaBytes) and refuses new writes.
const AlarmNoSpace = "nospace"

// storeError maps a kv error to its wire code.
func storeError(err error) error {
	var cf *kv.CompareFailedError
	switch {
	case errors.As(err, &cf):
		return &wire.Error{Code: wire.CodeCompareFailed, Index: cf.Index, Message: cf.Detail()}
	case errors.Is(err, kv.ErrLocked):
		var le *kv.LockedError
		e := &wire.Error{Code: wire.CodeLocked, Message: err.Error()}
		if errors.As(err, &le) {
			e.TxnID = le.TxnID
		}
		return e
	case errors.Is(err, kv.ErrConflict):
		return &wire.Error{Code: wire.CodeConflict, Message: err.Error()}
	case errors.Is(err, kv.ErrAborted):
		return &wire.Error{Code: wire.CodeAborted, Message: err.Error()}
	case errors.Is(err, kv.ErrCompacted):
		return &wire.Error{Code: wire.CodeCompacted, Message: err.Error()}
	case errors.Is(err, kv.ErrTooLarge):
		return &wire.Error{Code: wire.CodeTooLarge, Message: err.Error()}
	case errors.Is(err, kv.ErrSpaceExceeded):
		return &wire.Error{Code: wire.CodeSpaceExceeded, Message: strings.TrimPrefix(err.Error(), "kv: ") +
			"; new writes are refused until the GC frees space (storage.quota_bytes)"}
	case errors.Is(err, kv.ErrNotPrepared):
		return &wire.Error{Code: wire.CodeNotFound, Message: err.Error()}
	case errors.Is(err, kv.ErrInvalidArgument):
		return &wire.Error{Code: wire.CodeBadRequest, Message: err.Error()}
	case errors.Is(err, kv.ErrClosed):
		return &wire.Error{Code: wire.CodeShuttingDown, Message: err.Error()}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return &wire.Error{Code: wire.CodeTimeout, Message: err.Error()}
	default:
		return &wire.Error{Code: wire.CodeInternal, Message: err.Error()}
	}
}

func kvOps(ops []wire.Op) []kv.Op {
	out := make([]kv.Op, len(ops))
	for i, op := range ops {
		out[i] = kv.Op{Kind: kv.OpKind(op.Kind), Key: op.Key, Value: op.Value}
	}
	return out
}

func kvCompares(cmps []wire.Compare) []kv.Compare {
	out := make([]kv.Compare, len(cmps))
	for i, c := range cmps {
		out[i] = kv.Compare{Kind: kv.CompareKind(c.Kind), Key: c.Key, Value: c.Value, Version: c.Version}
	}
	return out
}

// Run resolves prepared transactions until ctx is done: a Resolve interval after each round
// (ResolveOnce) it runs the next. While the master cannot answer, the locks stay and the
// transaction is reported in doubt.
func (p *Participant) Run(ctx context.Context) {
	for {
		p.ResolveOnce(ctx)
		if p.cfg.Runtime.Sleep(ctx, p.cfg.Timeouts.Resolve) != nil {
			return
		}
	}
}

// ResolveOnce asks the master once about every prepared transaction that is due (prepared
// longer than the in-doubt timeout, or recovered from disk, and not asked about within its
// backoff), commits or aborts it as told, and returns how many are still in doubt.
func (p *Participant) ResolveOnce(ctx context.Context) int {
	now := p.cfg.Runtime.Now()
	prepared := p.cfg.Store.Prepared()
	live := make(map[uint64]bool, len(prepared))
	var due []kv.PreparedTxn
	p.mu.Lock()
	for _, t := range prepared {
		live[t.TxnID] = true
		if !t.Recovered && now.Sub(t.PreparedAt) < p.cfg.Timeouts.InDoubt {
			continue
		}
		a := p.mu.asks[t.TxnID]
		if a == nil {
			a = &askState{backoff: p.cfg.Timeouts.Resolve}
			p.mu.asks[t.TxnID] = a
		}
		if now.Before(a.next) {
			continue
		}
		due = append(due, t)
	}
	for id := range p.mu.asks {
		if !live[id] {
			delete(p.mu.asks, id)
		}
	}
	p.mu.Unlock()

	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, t := range due {
		wg.Add(1)
		sem <- struct{}{}
		p.cfg.Runtime.Go(func() {
			defer func() { <-sem; wg.Done() }()
			p.resolve(ctx, t)
		})
	}
	wg.Wait()

	p.mu.Lock()
	inDoubt := 0
	for _, a := range p.mu.asks {
		if a.inDoubt {
			inDoubt++
		}
	}
	p.mu.Unlock()
	p.cfg.Metrics.InDoubt(inDoubt)
	p.sweepMarkers(now)
	return inDoubt
}

// sweepMarkers drops, about every tenth of the retention, the aborted outcome markers older
// than MarkerRetention.
func (p *Participant) sweepMarkers(now time.Time) {
	p.mu.Lock()
	due := now.Sub(p.mu.lastSweep) >= p.cfg.MarkerRetention/10
	if due {
		p.mu.lastSweep = now
	}
	p.mu.Unlock()
	if !due {
		return
	}
	if n, err := p.cfg.Store.SweepOutcomes(now.Add(-p.cfg.MarkerRetention)); err != nil {
		p.log.Warn("sweep outcome markers", "err", err)
	} else if n > 0 {
		p.log.Debug("swept aborted outcome markers", "count", n)
	}
}

func (p *Participant) resolve(ctx context.Context, t kv.PreparedTxn) {
	actx, cancel := p.cfg.Runtime.WithTimeout(ctx, p.cfg.Timeouts.Request)
	defer cancel()
	var rep wire.OutcomeReply
	var err error
	if t.Parallel {
		rep, err = p.askPeers(actx, t)
	} else {
		err = p.cfg.Master.Call(actx, MasterName, &wire.OutcomeRequest{TxnID: t.TxnID, From: p.cfg.Name}, &rep)
	}
	var reason string
	switch {
	case err != nil && t.Parallel:
		reason = err.Error()
	case err != nil:
		reason = fmt.Sprintf("master unreachable: %v", err)
	case rep.State == wire.OutcomeCommitted:
		if err := p.cfg.Store.Commit(ctx, t.TxnID, rep.CommitTS); err != nil {
			reason = fmt.Sprintf("commit failed: %v", err)
			break
		}
		p.cfg.Metrics.Recovered("commit")
		p.cfg.TxnLog.Event(t.TxnID, "recovered", t.Participants, "outcome=committed", fmt.Sprintf("commit_ts=%d", rep.CommitTS))
		p.log.Info("resolved prepared transaction", "txn", t.TxnID, "outcome", "committed", "commit_ts", rep.CommitTS)
		p.forget(t.TxnID)
		return
	case rep.State == wire.OutcomeAborted:
		if err := p.cfg.Store.Abort(ctx, t.TxnID); err != nil {
			reason = fmt.Sprintf("abort failed: %v", err)
			break
		}
		p.cfg.Metrics.Recovered("abort")
		p.cfg.TxnLog.Event(t.TxnID, "recovered", t.Participants, "outcome=aborted")
		p.log.Info("resolved prepared transaction", "txn", t.TxnID, "outcome", "aborted")
		p.forget(t.TxnID)
		return
	default:
		reason = "master has not decided yet"
	}
	p.mu.Lock()
	if a := p.mu.asks[t.TxnID]; a != nil {
		a.inDoubt, a.reason = true, reason
		a.next = p.cfg.Runtime.Now().Add(a.backoff)
		a.backoff = min(a.backoff*2, maxAskBackoff)
	}
	p.mu.Unlock()
	p.log.Warn("transaction in doubt", "txn", t.TxnID, "reason", reason)
}

// Status describes this node: its prepared transactions, which of them are in doubt and why.
func (p *Participant) Status() wire.ProcessStatus {
	st := p.cfg.Store.Stats()
	out := wire.ProcessStatus{Name: p.cfg.Name, Role: "node", Up: true, LocksHeld: st.LocksHeld, MaxTS: st.MaxTS,
		DataBytes: st.DiskBytes, QuotaBytes: st.QuotaBytes, SafePoint: st.SafePoint}
	if st.SpaceAlarm {
		out.Alarms = append(out.Alarms, AlarmNoSpace)
	}
	now := p.cfg.Runtime.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.cfg.Store.Prepared() {
		info := wire.TxnInfo{TxnID: t.TxnID, StartTS: t.StartTS, AgeMillis: now.Sub(t.PreparedAt).Milliseconds(), Keys: t.Keys, Participants: t.Participants, Waiting: "decision from master"}
		if t.Parallel {
			info.Waiting = "phase 2 from master, or the other participants' records"
		}
		if a := p.mu.asks[t.TxnID]; a != nil && a.inDoubt {
			info.InDoubt, info.Waiting = true, a.reason
			out.InDoubt++
		}
		out.Prepared = append(out.Prepared, info)
	}
	return out
}
