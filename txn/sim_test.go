package txn

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kvtx/kvtx/kv"
	"github.com/kvtx/kvtx/wire"
)

// The deterministic simulation runs the real Coordinator and Participants in one goroutine
// over a simulated network and crashable shards (simStore), on a virtual clock, with a seeded
// random schedule of message loss, duplication, late replies, and crashes of the master or any
// node before or after any send or durable write and while a call waits for its sync round
// (a node's crash is a power loss: it takes back every write not yet synced, such as a
// one-phase Apply's writes before its round), followed by restarts. Everything runs inline
// (simRuntime), and every protocol timeout runs on the virtual clock, so one seed is one
// schedule: a failing seed replays exactly and prints its trace. The workload has writes with
// and without compares, and compare-only transactions on one shard and across shards. After
// each schedule it heals every fault, lets recovery finish, takes one more power loss on every
// node, and checks against the final durable history:
//   - every transaction is all or nothing on every shard, at one commit timestamp;
//   - what the client was told holds (committed is visible at its commit timestamp, its
//     compares held just below it; a definite abort left nothing), and unknown outcomes
//     resolved one way or the other;
//   - every snapshot read returned exactly what the final history holds at its timestamp: no
//     half transaction, and no write landed later at or below a timestamp already read;
//   - every state a shard replied on (a Get's values, the state a compare read, and so the
//     value and version a failed compare reports) is the final history's at that point: no
//     reply rests on a write that a power loss took back; every compare failure the client
//     was told of is one of these;
//   - nothing is left prepared or locked, and the master holds nothing in flight;
//   - no transaction is committed on one shard and aborted on another, or committed at two
//     timestamps (the shards' outcome markers).
//
// Every seed runs under both commit protocols, classic and parallel, over the same schedule of
// faults. Under the parallel protocol, half the seeds end with the master dead for good: every
// in-doubt transaction must then be settled by its participants alone.
//
// KVTX_SIM_SEEDS sets the number of seeds (default 300, make test runs more without the race
// detector); KVTX_SIM_SEED=S replays one seed and logs its trace.

// simCrash unwinds the stack of a process that the simulator crashed.
type simCrash struct{ proc string }

type simEvent struct {
	at   time.Time
	seq  int
	name string
	fn   func()
}

type simNode struct {
	store *simStore
	part  *Participant
	up    bool
	gen   int
}

type simOutcome int

const (
	simCommitted simOutcome = iota
	simAborted
	simUnknown
)

type simWrite struct {
	id       int
	ops      []wire.Op
	cmps     []wire.Compare
	shards   int // shards the transaction touches
	outcome  simOutcome
	commitTS uint64
	told     string
	failed   *wire.Error // the reply, when a compare failed
}

type simRead struct {
	ts     uint64
	keys   [][]byte
	values []wire.KeyValue
}

type sim struct {
	seed   int64
	rng    *rand.Rand
	now    time.Time
	seq    int
	events []simEvent
	trace  []string
	faults bool

	parallel   bool // the parallel commit protocol
	masterDead bool // the master is down for good (after the faults)

	timeouts  Timeouts
	shards    *ShardMap
	names     []string
	keys      [][]byte
	decisions *MemDecisionStore
	master    *Coordinator
	masterUp  bool
	masterGen int
	nodes     map[string]*simNode

	writes       []*simWrite
	reads        []simRead
	observations []simObservation // states the shards replied on
	violations   []string
	depth        int // client operations running, nested in delays
	stats        simStats
}

// simStats counts how often a schedule reached the situations the checks are about.
type simStats struct {
	syncWaits           int // sync points where other calls ran meanwhile
	readWaits           int // reads that waited for a pending Apply's round
	comparesReadPending int // compare checks that read a pending Apply's write
	applyLost           int // pending Applies taken back by a power loss
	compareFailedSeen   int // compare failures the client was told of, matched and checked
	pastDeadline        int // replies that came after the sender's virtual deadline
	masterDead          int // schedules that ended with the master dead for good
	markersForgotten    int // committed outcome markers dropped after every participant synced
	markersSwept        int // aborted outcome markers dropped past the retention
	inDoubtAtDeath      int // transactions prepared on some node when the master died for good
}

func newSim(seed int64, nodes int, parallel bool) *sim {
	s := &sim{
		seed: seed, rng: rand.New(rand.NewSource(seed)), now: time.Unix(1_000_000, 0), faults: true, parallel: parallel,
		timeouts: Timeouts{
			Prepare: 2 * time.Second, CommitWait: time.Second, InDoubt: 300 * time.Millisecond,
			Resolve: 100 * time.Millisecond, LockWait: 2 * time.Second, Request: 2 * time.Second,
		},
		decisions: NewMemDecisionStore(),
		nodes:     map[string]*simNode{},
	}
	for i := 0; i < nodes; i++ {
		s.names = append(s.names, fmt.Sprintf("node%d", i+1))
	}
	s.shards = NewShardMap(s.names)
	for i := 0; i < 2*nodes; i++ {
		s.keys = append(s.keys, []byte(fmt.Sprintf("k%d", i)))
	}
	for _, n := range s.names {
		s.nodes[n] = &simNode{store: newSimStore(s, n)}
		s.startNode(n)
		s.schedule(s.timeouts.Resolve, "tick "+n, s.ticker(n))
	}
	s.startMaster()
	return s
}

func (s *sim) logf(format string, args ...any) {
	s.trace = append(s.trace, fmt.Sprintf("%8.3fs ", s.now.Sub(time.Unix(1_000_000, 0)).Seconds())+fmt.Sprintf(format, args...))
}

func (s *sim) violation(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.logf("VIOLATION: %s", msg)
	s.violations = append(s.violations, msg)
}

func (s *sim) chance(percent int) bool { return s.faults && s.rng.Intn(1000) < percent*10 }

// schedule runs fn at now+d (events at the same time run in the order scheduled).
func (s *sim) schedule(d time.Duration, name string, fn func()) {
	s.seq++
	ev := simEvent{at: s.now.Add(d), seq: s.seq, name: name, fn: fn}
	// After every event due at the same time or earlier: seq only grows.
	i := sort.Search(len(s.events), func(i int) bool { return s.events[i].at.After(ev.at) })
	s.events = slices.Insert(s.events, i, ev)
}

// advance moves the virtual clock forward by d, running every event that falls due.
func (s *sim) advance(d time.Duration) {
	end := s.now.Add(d)
	for len(s.events) > 0 && !s.events[0].at.After(end) {
		ev := s.events[0]
		s.events = s.events[1:]
		s.now = ev.at
		ev.fn()
	}
	if end.After(s.now) { // a nested advance may have gone further already
		s.now = end
	}
}

// ticker runs a node's resolver every Resolve interval.
func (s *sim) ticker(name string) func() {
	return func() {
		n := s.nodes[name]
		if n.up {
			s.asProcess(name, func() { n.part.ResolveOnce(context.Background()) })
		}
		s.schedule(s.timeouts.Resolve, "tick "+name, s.ticker(name))
	}
}

// asProcess runs fn as proc: a crash of proc inside fn ends fn; a crash of another process
// keeps unwinding.
func (s *sim) asProcess(proc string, fn func()) (crashed bool) {
	defer func() {
		if r := recover(); r != nil {
			if c, ok := r.(simCrash); ok && c.proc == proc {
				crashed = true
				return
			}
			panic(r)
		}
	}()
	fn()
	return false
}

func (s *sim) checkAlive(proc string, gen int) {
	if proc == MasterName {
		if !s.masterUp || s.masterGen != gen {
			panic(simCrash{proc})
		}
		return
	}
	if n := s.nodes[proc]; !n.up || n.gen != gen {
		panic(simCrash{proc})
	}
}

// maybeCrash crashes proc at a durable-write point, by chance.
func (s *sim) maybeCrash(proc, what string) {
	if s.chance(2) {
		s.logf("crash %s at %s", proc, what)
		s.crash(proc)
		panic(simCrash{proc})
	}
}

func (s *sim) crash(proc string) {
	if proc == MasterName {
		if s.masterUp {
			s.logf("master down")
		}
		s.masterUp = false
		return
	}
	n := s.nodes[proc]
	if !n.up {
		return
	}
	n.up = false
	delay := time.Duration(s.rng.Intn(2000)) * time.Millisecond
	s.logf("%s down, restart in %v", proc, delay)
	s.schedule(delay, "restart "+proc, func() { s.startNode(proc) })
}

func (s *sim) startNode(name string) {
	n := s.nodes[name]
	if n.up {
		return
	}
	n.gen++
	n.store.restart()
	part, err := NewParticipant(ParticipantConfig{
		Name: name, Shards: s.shards, Store: n.store, Master: simTransport{s, name, n.gen}, Timeouts: s.timeouts,
		Logger: quiet, Runtime: simRuntime{s, name, n.gen},
		// One clock for all: the retention needs no margin for skew, so the markers go as soon
		// as the protocol allows, and the schedules reach that.
		MarkerRetention: LateBound(s.timeouts) + 200*time.Millisecond,
	})
	if err != nil {
		panic(err)
	}
	n.part, n.up = part, true
	s.logf("%s up (gen %d, %d prepared)", name, n.gen, len(n.store.records))
}

func (s *sim) startMaster() {
	if s.masterUp || s.masterDead {
		return
	}
	s.masterGen++
	gen := s.masterGen
	s.asProcess(MasterName, func() {
		coord, err := NewCoordinator(context.Background(), CoordinatorConfig{
			Shards: s.shards, Transport: simTransport{s, MasterName, gen}, Decisions: simDecisions{s.decisions, s, gen},
			Timeouts: s.timeouts, Logger: quiet, Runtime: simRuntime{s, MasterName, gen}, Parallel: s.parallel,
		})
		if err != nil {
			panic(err)
		}
		s.master, s.masterUp = coord, true
		s.logf("master up (gen %d)", gen)
		if _, err := coord.Recover(context.Background()); err != nil {
			panic(err)
		}
		if s.parallel {
			ctx, cancel := simRuntime{s, MasterName, gen}.WithTimeout(context.Background(), s.timeouts.Request)
			coord.LearnTimestamps(ctx)
			cancel()
		}
	})
}

// simDecisions is the master's decision log, with crashes before and after a durable record.
type simDecisions struct {
	*MemDecisionStore
	sim *sim
	gen int
}

func (d simDecisions) Record(ctx context.Context, dec Decision) error {
	d.sim.checkAlive(MasterName, d.gen)
	d.sim.maybeCrash(MasterName, fmt.Sprintf("decision %d before record", dec.TxnID))
	err := d.MemDecisionStore.Record(ctx, dec)
	d.sim.logf("master: decision %d committed at %d", dec.TxnID, dec.CommitTS)
	d.sim.maybeCrash(MasterName, fmt.Sprintf("decision %d after record", dec.TxnID))
	return err
}

// simTransport is the network as one incarnation of one process sees it.
type simTransport struct {
	sim  *sim
	from string
	gen  int
}

func (t simTransport) Call(ctx context.Context, to string, req, resp wire.Message) error {
	s := t.sim
	s.checkAlive(t.from, t.gen)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrNotDelivered, err)
	}
	up := s.masterUp
	if to != MasterName {
		up = s.nodes[to].up
	}
	desc := fmt.Sprintf("%s -> %s %s%s", t.from, to, req.MsgType(), briefMsg(req))
	switch {
	case !up:
		s.logf("%s: %s is down", desc, to)
		return fmt.Errorf("%w: %s down", ErrNotDelivered, to)
	case s.chance(4):
		s.logf("%s: request lost", desc)
		return fmt.Errorf("%w: lost", ErrNotDelivered)
	case t.from == MasterName && s.chance(1):
		s.logf("%s: sender crashes before sending", desc)
		s.crash(MasterName)
		panic(simCrash{MasterName})
	}
	if s.chance(10) {
		// In flight for a while: timers fire, other clients and nodes act meanwhile.
		d := time.Duration(s.rng.Intn(1000)) * time.Millisecond
		s.logf("%s: delayed %v", desc, d)
		s.advance(d)
		s.checkAlive(t.from, t.gen)
		if to != MasterName && !s.nodes[to].up || to == MasterName && !s.masterUp {
			s.logf("%s: %s went down meanwhile", desc, to)
			return fmt.Errorf("%w: %s down", ErrNotDelivered, to)
		}
	}
	out, err, crashed := s.deliver(to, req)
	// Duplicates model re-sent messages. A one-phase Apply is never re-sent (TCP does not
	// duplicate, and the master reports a lost apply reply as unknown instead of retrying), so
	// it is the one request whose handler need not be idempotent.
	if _, apply := req.(*wire.ApplyRequest); !crashed && !apply && s.chance(3) {
		s.logf("%s: duplicated", desc)
		out, err, crashed = s.deliver(to, req)
	}
	switch {
	case crashed:
		s.logf("%s: receiver crashed while handling it", desc)
		return ErrReplyLost
	case s.chance(2):
		s.logf("%s: handled, then the receiver crashes before replying", desc)
		s.crash(to)
		return ErrReplyLost
	case s.chance(4):
		s.logf("%s: handled, reply lost", desc)
		return ErrReplyLost
	case s.chance(3):
		s.logf("%s: handled, reply too late", desc)
		return context.DeadlineExceeded
	}
	s.checkAlive(t.from, t.gen)
	if cerr := ctx.Err(); cerr != nil {
		// The sender's deadline passed while the request was delayed or handled: it hears of
		// the deadline, not of the reply.
		s.logf("%s: handled after the sender's deadline", desc)
		s.stats.pastDeadline++
		return cerr
	}
	if err != nil {
		s.logf("%s: error %v", desc, err)
		return err
	}
	body, merr := wire.Marshal(out)
	if merr != nil {
		return merr
	}
	return wire.Unmarshal(body, resp)
}

// deliver hands a copy of req to the receiver's handler.
func (s *sim) deliver(to string, req wire.Message) (out wire.Message, err error, crashed bool) {
	in, rerr := roundTrip(req)
	if rerr != nil {
		return nil, rerr, false
	}
	var h Handler = s.master
	if to != MasterName {
		h = s.nodes[to].part
	}
	crashed = s.asProcess(to, func() {
		out, err = h.Handle(context.Background(), in)
	})
	if err != nil {
		var werr *wire.Error
		if errors.As(err, &werr) {
			cp := *werr
			err = &cp
		}
	}
	return out, err, crashed
}

func briefMsg(m wire.Message) string {
	switch m := m.(type) {
	case *wire.PrepareRequest:
		return fmt.Sprintf(" txn=%d ops=%d cmps=%d", m.TxnID, len(m.Ops), len(m.Compares))
	case *wire.CommitRequest:
		return fmt.Sprintf(" txn=%d ts=%d", m.TxnID, m.CommitTS)
	case *wire.AbortRequest:
		return fmt.Sprintf(" txn=%d", m.TxnID)
	case *wire.ApplyRequest:
		return fmt.Sprintf(" txn=%d ops=%d", m.TxnID, len(m.Ops))
	case *wire.OutcomeRequest:
		return fmt.Sprintf(" txn=%d from=%s", m.TxnID, m.From)
	case *wire.GetRequest:
		return fmt.Sprintf(" ts=%d keys=%d", m.ReadTS, len(m.Keys))
	}
	return ""
}

// clientWrite runs one transaction of the workload and records what the client was told: a
// write of one to three keys, a third of them with a compare, or (one in six) a compare-only
// transaction of one or two keys, on one shard or across shards.
func (s *sim) clientWrite(id int) {
	perm := s.rng.Perm(len(s.keys))
	w := &simWrite{id: id, outcome: simUnknown}
	req := &wire.TxnRequest{}
	if s.rng.Intn(6) == 0 {
		for _, i := range perm[:1+s.rng.Intn(2)] {
			req.Compares = append(req.Compares, s.randomCompare(s.keys[i]))
		}
	} else {
		n := 1 + s.rng.Intn(3)
		for _, i := range perm[:n] {
			op := wire.Op{Kind: wire.OpPut, Key: s.keys[i], Value: []byte(fmt.Sprintf("w%d", id))}
			if s.rng.Intn(6) == 0 {
				op = wire.Op{Kind: wire.OpDelete, Key: s.keys[i]}
			}
			req.Ops = append(req.Ops, op)
		}
		if s.rng.Intn(3) == 0 {
			req.Compares = append(req.Compares, s.randomCompare(s.keys[perm[n%len(perm)]]))
		}
	}
	w.ops, w.cmps = req.Ops, req.Compares
	shards := map[string]bool{}
	for _, op := range req.Ops {
		shards[ownerOf(s.shards, op.Key)] = true
	}
	for _, c := range req.Compares {
		shards[ownerOf(s.shards, c.Key)] = true
	}
	w.shards = len(shards)
	s.writes = append(s.writes, w)
	s.logf("client: write %d: %s", id, describeOps(req))
	crashed := s.asProcess(MasterName, func() {
		rep, err := s.master.Txn(context.Background(), req)
		var werr *wire.Error
		switch {
		case err == nil:
			w.outcome, w.commitTS, w.told = simCommitted, rep.CommitTS, fmt.Sprintf("committed at %d (%s)", rep.CommitTS, rep.Path)
		case wire.CodeOf(err) == wire.CodeUnknownOutcome:
			w.told = "unknown: " + err.Error()
		default:
			w.outcome, w.told = simAborted, "aborted: "+err.Error()
			if errors.As(err, &werr) && werr.Code == wire.CodeCompareFailed {
				cp := *werr
				w.failed = &cp
			}
		}
	})
	if crashed {
		w.told = "unknown: the master crashed"
	}
	s.logf("client: write %d: %s", id, w.told)
}

// randomCompare returns a compare of key or, half the time, of a key a recent write writes
// (the latest one still in flight, likely pending on its shard, else the latest one), of any
// kind; the version and value compares use what the last snapshot read saw of the key, so
// they hold about as often as they fail.
func (s *sim) randomCompare(key []byte) wire.Compare {
	if n := len(s.writes); n > 0 && s.rng.Intn(2) == 0 {
		hot := s.writes[n-1]
		for i := n - 1; i >= 0; i-- {
			if s.writes[i].told == "" && len(s.writes[i].ops) > 0 {
				hot = s.writes[i]
				break
			}
		}
		if len(hot.ops) > 0 {
			key = hot.ops[s.rng.Intn(len(hot.ops))].Key
		}
	}
	var seen wire.KeyValue
	if len(s.reads) > 0 {
		r := s.reads[len(s.reads)-1]
		for i, k := range r.keys {
			if string(k) == string(key) {
				seen = r.values[i]
			}
		}
	}
	c := wire.Compare{Key: key}
	switch s.rng.Intn(6) {
	case 0:
		c.Kind = wire.CmpExists
	case 1:
		c.Kind = wire.CmpMissing
	case 2:
		c.Kind = wire.CmpVersionGreater // version 0: exists
	case 3:
		c.Kind, c.Version = wire.CmpVersionEqual, seen.Version
	case 4:
		c.Kind, c.Version = wire.CmpVersionLess, seen.Version+1
	default:
		c.Kind, c.Value = wire.CmpValueEqual, seen.Value
		if !seen.Found {
			c.Value = []byte(fmt.Sprintf("w%d", s.rng.Intn(len(s.writes)+1)))
		}
	}
	return c
}

func describeOps(req *wire.TxnRequest) string {
	var parts []string
	for _, c := range req.Compares {
		parts = append(parts, fmt.Sprintf("if(%d %s v=%d %q)", c.Kind, c.Key, c.Version, c.Value))
	}
	for _, op := range req.Ops {
		if op.Kind == wire.OpDelete {
			parts = append(parts, fmt.Sprintf("del %s", op.Key))
		} else {
			parts = append(parts, fmt.Sprintf("put %s=%s", op.Key, op.Value))
		}
	}
	return strings.Join(parts, " ")
}

// clientRead reads every key as one snapshot and records it.
func (s *sim) clientRead() {
	s.asProcess(MasterName, func() {
		rep, err := s.master.Get(context.Background(), &wire.GetRequest{Keys: s.keys})
		if err != nil {
			s.logf("client: read failed: %v", err)
			return
		}
		s.reads = append(s.reads, simRead{ts: rep.ReadTS, keys: s.keys, values: rep.Values})
		var parts []string
		for _, v := range rep.Values {
			parts = append(parts, fmt.Sprintf("%s=%s@%d", v.Key, v.Value, v.Version))
		}
		s.logf("client: read at %d: %s", rep.ReadTS, strings.Join(parts, " "))
	})
}

// run plays the schedule: client operations at random virtual times (an operation can start
// while another is waiting on a delayed message or a sync round), with faults, among them a
// few power losses of a node at random instants (so also while its calls wait for a sync
// round), then healing.
func (s *sim) run(ops int) {
	window := time.Duration(ops) * 150 * time.Millisecond
	for i := 0; i < ops; i++ {
		s.schedule(time.Duration(s.rng.Int63n(int64(window))), fmt.Sprintf("client op %d", i), s.clientOp(i))
	}
	for i := 0; i < 3; i++ {
		name := s.names[s.rng.Intn(len(s.names))]
		s.schedule(time.Duration(s.rng.Int63n(int64(window))), "power loss "+name, func() {
			if s.faults && s.nodes[name].up {
				s.logf("power loss of %s", name)
				s.crash(name) // its calls on the stack end at their next step
			}
		})
	}
	s.advance(window + time.Second)
	s.heal()
}

// clientOp is one client operation; it runs at most three deep inside other operations'
// delays, and waits otherwise.
func (s *sim) clientOp(i int) func() {
	var op func()
	op = func() {
		if s.depth >= 3 {
			s.schedule(50*time.Millisecond, fmt.Sprintf("client op %d (deferred)", i), op)
			return
		}
		s.depth++
		defer func() { s.depth-- }()
		s.startMaster()
		if !s.masterUp {
			s.logf("client: op %d finds the master down", i)
			return
		}
		if s.rng.Intn(10) < 7 {
			s.clientWrite(i)
		} else {
			s.clientRead()
		}
	}
	return op
}

// heal stops injecting faults, restarts everything (under the parallel protocol, half the time
// everything but the master, which stays dead) and lets recovery finish.
func (s *sim) heal() {
	s.faults = false
	if s.parallel && s.rng.Intn(2) == 0 {
		s.crash(MasterName)
		s.masterDead = true
		s.stats.masterDead++
		for _, n := range s.names {
			s.stats.inDoubtAtDeath += len(s.nodes[n].store.records)
		}
		s.logf("heal: the master is dead for good")
	}
	s.logf("heal: no more faults")
	for _, n := range s.names {
		s.startNode(n)
	}
	for i := 0; i < 200; i++ {
		s.startMaster()
		s.advance(s.timeouts.Resolve)
		if s.quiet() {
			s.logf("heal: quiet after %d rounds", i)
			return
		}
	}
	s.violation("not quiet 20 virtual seconds after healing: prepared or in-flight transactions remain")
}

func (s *sim) quiet() bool {
	for _, n := range s.names {
		if st := s.nodes[n].store.Stats(); st.Prepared != 0 || st.LocksHeld != 0 {
			return false
		}
	}
	if s.masterDead {
		return true
	}
	s.master.mu.Lock()
	defer s.master.mu.Unlock()
	return len(s.master.mu.txns) == 0 // every decision forgotten, after the participants synced
}

// stateAt returns what the history vs of key holds at ts: its latest version at or below ts,
// or missing (version 0).
func stateAt(key []byte, vs []simVersion, ts uint64) kv.Value {
	for j := len(vs) - 1; j >= 0; j-- {
		if vs[j].ts <= ts {
			if vs[j].deleted {
				break
			}
			return kv.Value{Key: key, Value: vs[j].value, Version: vs[j].ts, Found: true}
		}
	}
	return kv.Value{Key: key}
}

func sameState(a, b kv.Value) bool {
	return a.Found == b.Found && a.Version == b.Version && string(a.Value) == string(b.Value)
}

func describeState(v kv.Value) string {
	if !v.Found {
		return fmt.Sprintf("missing (version %d)", v.Version)
	}
	return fmt.Sprintf("%q@%d", v.Value, v.Version)
}

// check verifies the invariants against the final durable state of every shard.
func (s *sim) check() {
	// One more power loss on every node: the final history is what survives it. After a quiet
	// cluster nothing should be pending, and nothing may become prepared again.
	for _, n := range s.names {
		st := s.nodes[n].store
		if len(st.pending) > 0 {
			s.logf("final power loss on %s takes back %d pending writes", n, len(st.pending))
		}
		st.restart()
		if s.parallel {
			// A commit whose sync the master did not wait for (it crashed first, and has no
			// decision record to drive it again) comes back prepared: the participants settle
			// it again, at the same timestamp, from their prepare records.
			continue
		}
		if stats := st.Stats(); stats.Prepared != 0 || stats.LocksHeld != 0 {
			s.violation("after a final power loss %s holds %d prepared transactions and %d locks again: a commit the master forgot was not durable",
				n, stats.Prepared, stats.LocksHeld)
		}
	}
	if s.parallel {
		for _, n := range s.names {
			s.nodes[n].up = false
			s.startNode(n)
		}
		for i := 0; i < 200 && !s.quiet(); i++ {
			s.advance(s.timeouts.Resolve)
		}
		if !s.quiet() {
			s.violation("after a final power loss, with the master dead, the participants did not settle their prepared transactions")
		}
	}
	// No transaction finished one way on one shard and another way on another.
	ids := map[uint64]bool{}
	for _, n := range s.names {
		for id := range s.nodes[n].store.outcomes {
			ids[id] = true
		}
	}
	for id := range ids {
		var seen []string
		var committed, aborted bool
		var at uint64
		for _, n := range s.names {
			out, ok := s.nodes[n].store.outcomes[id]
			switch {
			case !ok:
				continue
			case out.State == kv.ResolvedCommitted:
				if committed && out.CommitTS != at {
					s.violation("transaction %d committed at %d and at %d", id, at, out.CommitTS)
				}
				committed, at = true, out.CommitTS
			case out.State == kv.ResolvedAborted:
				aborted = true
			}
			seen = append(seen, fmt.Sprintf("%s:%s", n, out.State))
		}
		if committed && aborted {
			s.violation("transaction %d is both committed and aborted: %s", id, strings.Join(seen, " "))
		}
	}
	// The final history of each key.
	history := func(key []byte) []simVersion {
		return s.nodes[ownerOf(s.shards, key)].store.versions[string(key)]
	}
	for _, key := range s.keys {
		vs := history(key)
		for i := 1; i < len(vs); i++ {
			if vs[i].ts == vs[i-1].ts {
				s.violation("key %s has two versions at %d", key, vs[i].ts)
			}
		}
	}
	for _, w := range s.writes {
		// Where did w's writes land? A put carries w's unique value; a delete is matched by
		// its commit timestamp, once a put of w shows where w committed.
		var found, puts int
		var ts uint64
		for _, op := range w.ops {
			if op.Kind != wire.OpPut {
				continue
			}
			puts++
			for _, v := range history(op.Key) {
				if string(v.value) == string(op.Value) && !v.deleted {
					found++
					if ts != 0 && v.ts != ts {
						s.violation("write %d landed at two timestamps, %d and %d", w.id, ts, v.ts)
					}
					ts = v.ts
				}
			}
		}
		if found != 0 && found != puts {
			s.violation("write %d is on %d of its %d keys: half a transaction", w.id, found, puts)
		}
		if found != 0 {
			for _, op := range w.ops {
				if op.Kind != wire.OpDelete {
					continue
				}
				ok := false
				for _, v := range history(op.Key) {
					ok = ok || (v.ts == ts && v.deleted)
				}
				if !ok {
					s.violation("write %d committed at %d but its delete of %s is missing", w.id, ts, op.Key)
				}
			}
		}
		switch w.outcome {
		case simCommitted:
			if puts > 0 && (found != puts || ts != w.commitTS) {
				s.violation("write %d was told %s but %d of %d puts are visible (at %d)", w.id, w.told, found, puts, ts)
			}
		case simAborted:
			if found != 0 {
				s.violation("write %d was told %s but is visible at %d", w.id, w.told, ts)
			}
		}
		// A committed transaction's compares held on the state just below its commit
		// timestamp: its compare keys were locked from the check until the commit, which
		// raised each shard's maxTS to it. That is also what a compare-only success promises.
		at := ts
		if w.outcome == simCommitted {
			at = w.commitTS
		}
		if at != 0 {
			for i, c := range kvCompares(w.cmps) {
				if state := stateAt(c.Key, history(c.Key), at-1); !simCompareHolds(c, state) {
					s.violation("write %d committed at %d (told %s), but its compare %d on %s does not hold on the final history there: %s",
						w.id, at, w.told, i, c.Key, describeState(state))
				}
			}
		}
		if w.failed != nil {
			s.checkCompareFailed(w, history)
		}
	}
	// Every state a shard replied on is the final history's at that point.
	for _, o := range s.observations {
		want := stateAt([]byte(o.key), history([]byte(o.key)), o.at)
		if sameState(o.got, want) {
			continue
		}
		what := fmt.Sprintf("transaction %d's %s compare read", o.txnID, o.what)
		switch {
		case o.what == "get":
			what = "a get returned"
		case o.failed != nil:
			what = fmt.Sprintf("transaction %d's failed %s compare (%s) read", o.txnID, o.what, o.failed.Detail())
		}
		s.violation("%s: %s %s=%s at %d, but the final history holds %s there", o.node, what, o.key, describeState(o.got), o.at, describeState(want))
	}
	for _, r := range s.reads {
		for i, key := range r.keys {
			want := stateAt(key, history(key), r.ts)
			got := r.values[i]
			if got.Found != want.Found || string(got.Value) != string(want.Value) || got.Version != want.Version {
				s.violation("read at %d saw %s=%q@%d (found %v), but the history holds %q@%d (found %v) there",
					r.ts, key, got.Value, got.Version, got.Found, want.Value, want.Version, want.Found)
			}
		}
	}
}

// checkCompareFailed checks that the compare failure w's client was told of is one a shard
// replied with (same transaction, key, kind and reported state), that the reported value and
// version are what the final history holds where the compare read them, and that they do fail
// the compare.
func (s *sim) checkCompareFailed(w *simWrite, history func([]byte) []simVersion) {
	f := w.failed
	if f.Index < 0 || f.Index >= len(w.cmps) {
		s.violation("write %d was told %s, naming compare %d of %d", w.id, w.told, f.Index, len(w.cmps))
		return
	}
	c := kvCompares(w.cmps[f.Index : f.Index+1])[0]
	for _, o := range s.observations {
		if o.failed == nil || o.txnID != f.TxnID || o.key != string(c.Key) || o.failed.Compare.Kind != c.Kind ||
			!strings.Contains(f.Message, o.failed.Detail()) {
			continue
		}
		if simCompareHolds(c, o.got) {
			s.violation("write %d was told %s, but the state reported, %s, satisfies the compare", w.id, w.told, describeState(o.got))
		}
		if want := stateAt(c.Key, history(c.Key), o.at); !sameState(o.got, want) {
			s.violation("write %d was told %s, but the final history holds %s=%s where the compare read it (at %d)",
				w.id, w.told, c.Key, describeState(want), o.at)
		}
		s.stats.compareFailedSeen++
		return
	}
	s.violation("write %d was told %s, but no shard replied with that compare failure", w.id, w.told)
}

func simSeeds(t *testing.T) (first int64, count int) {
	if v := os.Getenv("KVTX_SIM_SEED"); v != "" {
		seed, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("KVTX_SIM_SEED: %v", err)
		}
		return seed, 1
	}
	count = 300
	if v := os.Getenv("KVTX_SIM_SEEDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("KVTX_SIM_SEEDS: %v", err)
		}
		count = n
	}
	return 1, count
}

// runSim plays one seed under one protocol and returns the simulator.
func runSim(seed int64, parallel bool) (s *sim, failure string) {
	nodes := 2 + int(seed%2) // two or three shards
	s = newSim(seed, nodes, parallel)
	defer func() {
		if r := recover(); r != nil {
			failure = fmt.Sprintf("panic: %v", r)
		}
	}()
	s.run(40)
	s.check()
	return s, strings.Join(s.violations, "\n")
}

// simProtocols are the commit protocols the simulation runs, by name; KVTX_SIM_PROTOCOL selects
// one of them.
var simProtocols = []struct {
	name     string
	parallel bool
}{{ProtocolClassic, false}, {ProtocolParallel, true}}

func TestSimulation(t *testing.T) {
	first, count := simSeeds(t)
	ran := 0
	for _, proto := range simProtocols {
		if p := os.Getenv("KVTX_SIM_PROTOCOL"); p != "" && p != proto.name {
			continue
		}
		ran++
		simulateProtocol(t, proto.name, proto.parallel, first, count)
	}
	if ran == 0 {
		t.Fatalf("KVTX_SIM_PROTOCOL=%s is neither %s nor %s", os.Getenv("KVTX_SIM_PROTOCOL"), ProtocolClassic, ProtocolParallel)
	}
}

// simulateProtocol plays count seeds from first under one protocol and logs what they covered.
func simulateProtocol(t *testing.T, proto string, parallel bool, first int64, count int) {
	var writes, committed, aborted, unknown, reads int
	var cmpOnly, cmpOnlyCross, cmpOnlyCommitted, cmpOnlyCrossCommitted int
	var total simStats
	for seed := first; seed < first+int64(count); seed++ {
		s, failure := runSim(seed, parallel)
		if failure != "" || count == 1 {
			t.Logf("seed %d (%s) trace:\n%s", seed, proto, strings.Join(s.trace, "\n"))
		}
		if failure != "" {
			t.Fatalf("seed %d failed under the %s protocol (replay: KVTX_SIM_SEED=%d KVTX_SIM_PROTOCOL=%s go test -run TestSimulation ./txn/):\n%s",
				seed, proto, seed, proto, failure)
		}
		reads += len(s.reads)
		for _, w := range s.writes {
			writes++
			switch w.outcome {
			case simCommitted:
				committed++
			case simAborted:
				aborted++
			default:
				unknown++
			}
			if len(w.ops) == 0 {
				cmpOnly++
				if w.shards > 1 {
					cmpOnlyCross++
				}
				if w.outcome == simCommitted {
					cmpOnlyCommitted++
					if w.shards > 1 {
						cmpOnlyCrossCommitted++
					}
				}
			}
		}
		st := s.stats
		total.syncWaits += st.syncWaits
		total.readWaits += st.readWaits
		total.comparesReadPending += st.comparesReadPending
		total.applyLost += st.applyLost
		total.compareFailedSeen += st.compareFailedSeen
		total.pastDeadline += st.pastDeadline
		total.masterDead += st.masterDead
		total.markersForgotten += st.markersForgotten
		total.markersSwept += st.markersSwept
		total.inDoubtAtDeath += st.inDoubtAtDeath
	}
	t.Logf("%s: %d seeds: %d writes (%d committed, %d aborted, %d unknown), %d snapshot reads, all invariants held",
		proto, count, writes, committed, aborted, unknown, reads)
	t.Logf("%s: compare-only: %d (%d across shards), %d committed (%d across shards); %d compare failures told and checked",
		proto, cmpOnly, cmpOnlyCross, cmpOnlyCommitted, cmpOnlyCrossCommitted, total.compareFailedSeen)
	t.Logf("%s: sync rounds: %d waits with other calls running, %d reads waited for a pending apply, %d compares read one, %d pending applies lost to power loss",
		proto, total.syncWaits, total.readWaits, total.comparesReadPending, total.applyLost)
	t.Logf("%s: deadlines: %d replies came after the sender's virtual deadline", proto, total.pastDeadline)
	t.Logf("%s: outcome markers: %d committed ones forgotten once synced everywhere, %d aborted ones swept past the retention",
		proto, total.markersForgotten, total.markersSwept)
	if parallel {
		t.Logf("%s: master dead for good in %d seeds, with %d transactions prepared on some node at that moment, all settled by their participants",
			proto, total.masterDead, total.inDoubtAtDeath)
	}
	if committed == 0 || aborted == 0 || reads == 0 {
		t.Fatalf("%s: the schedules exercised too little: %d committed, %d aborted, %d reads", proto, committed, aborted, reads)
	}
	if count >= 300 && (cmpOnlyCommitted == 0 || cmpOnlyCrossCommitted == 0 || total.compareFailedSeen == 0 ||
		total.readWaits == 0 || total.comparesReadPending == 0 || total.applyLost == 0 || total.pastDeadline == 0 ||
		total.markersForgotten == 0 || parallel && (total.masterDead == 0 || total.inDoubtAtDeath == 0 || total.markersSwept == 0)) {
		t.Fatalf("%s: the schedules never reached a case the checks are about: %+v, %d compare-only committed (%d across shards)",
			proto, total, cmpOnlyCommitted, cmpOnlyCrossCommitted)
	}
}

func TestSimulationReplaysExactly(t *testing.T) {
	for _, seed := range []int64{7, 42} {
		a, _ := runSim(seed, seed == 42)
		b, _ := runSim(seed, seed == 42)
		if strings.Join(a.trace, "\n") != strings.Join(b.trace, "\n") {
			t.Fatalf("seed %d produced two different schedules", seed)
		}
		if len(a.trace) < 50 {
			t.Fatalf("seed %d: a trace of %d lines is too short to prove anything", seed, len(a.trace))
		}
	}
}
