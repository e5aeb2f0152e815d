package txn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvtx/kvtx/kv"
	"github.com/kvtx/kvtx/wire"
)

// testCluster runs a coordinator and participants over an InmemTransport, each participant on
// a real kv.Store in a temporary directory. Either side can be crashed and restarted between
// any two steps; the decision store and the shard directories play the disks.
type testCluster struct {
	t         *testing.T
	tr        *InmemTransport
	shards    *ShardMap
	decisions *hookedDecisions
	timeouts  Timeouts
	coord     *Coordinator
	nodes     map[string]*testNode
	// The master's and the nodes' runtimes: the nodes share a clock that a test moves forward
	// to age their prepared transactions without waiting.
	masterRT, nodeRT *testRuntime
	// Set before startMaster (all optional).
	metrics  CoordinatorMetrics
	hooks    Hooks
	parallel bool // the parallel commit protocol
}

// testRuntime is RealRuntime with a clock that a test can move forward (advance) and an
// optional hook called whenever protocol code waits for another transaction (Wait).
type testRuntime struct {
	RealRuntime
	offset atomic.Int64
	onWait atomic.Pointer[func()]
}

func (r *testRuntime) Now() time.Time { return time.Now().Add(time.Duration(r.offset.Load())) }

// advance moves the clock forward by d.
func (r *testRuntime) advance(d time.Duration) { r.offset.Add(int64(d)) }

func (r *testRuntime) Wait(ctx context.Context, done <-chan struct{}, d time.Duration) bool {
	if f := r.onWait.Load(); f != nil {
		(*f)()
	}
	return r.RealRuntime.Wait(ctx, done, d)
}

// waitFor polls cond until it reports done, and fails the test with the state cond last
// described if that takes more than 5 seconds.
func waitFor(t *testing.T, cond func() (done bool, state string)) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		done, state := cond()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %s after 5s", state)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ownerOf returns the name of the node that owns key.
func ownerOf(m *ShardMap, key []byte) string { return m.Names()[m.Shard(key)] }

type testNode struct {
	dir   string
	store *kv.Store
	part  *Participant
}

// hookedDecisions wraps a MemDecisionStore with a hook run before every Record.
type hookedDecisions struct {
	*MemDecisionStore
	beforeRecord atomic.Pointer[func() error]
}

func (h *hookedDecisions) Record(ctx context.Context, d Decision) error {
	if f := h.beforeRecord.Load(); f != nil {
		if err := (*f)(); err != nil {
			return err
		}
	}
	return h.MemDecisionStore.Record(ctx, d)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newTestCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("node%d", i+1)
	}
	c := &testCluster{
		t: t, tr: NewInmemTransport(), shards: NewShardMap(names),
		decisions: &hookedDecisions{MemDecisionStore: NewMemDecisionStore()},
		timeouts: Timeouts{
			Prepare: time.Second, CommitWait: 200 * time.Millisecond, InDoubt: 50 * time.Millisecond,
			Resolve: 10 * time.Millisecond, LockWait: 300 * time.Millisecond, Request: 300 * time.Millisecond,
		},
		nodes:    map[string]*testNode{},
		masterRT: &testRuntime{}, nodeRT: &testRuntime{},
	}
	for _, name := range names {
		c.nodes[name] = &testNode{dir: t.TempDir()}
		c.startNode(name)
	}
	c.startMaster()
	t.Cleanup(func() {
		c.tr.SetFault(nil)
		if c.coord != nil {
			c.coord.Close()
		}
		for _, n := range c.nodes {
			if n.store != nil {
				n.store.Close()
			}
		}
	})
	return c
}

func (c *testCluster) startMaster() {
	c.t.Helper()
	coord, err := NewCoordinator(context.Background(), CoordinatorConfig{
		Shards: c.shards, Transport: c.tr.From(MasterName), Decisions: c.decisions, Timeouts: c.timeouts, Logger: quiet,
		Metrics: c.metrics, Hooks: c.hooks, Runtime: c.masterRT, Parallel: c.parallel,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := coord.Recover(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	c.coord = coord
	c.tr.Register(MasterName, coord)
}

// crashMaster makes the master unreachable and stops its background work; its memory is lost,
// its decision store (the disk) stays.
func (c *testCluster) crashMaster() {
	c.tr.Register(MasterName, nil)
	c.coord.Close()
	c.coord = nil
}

func (c *testCluster) startNode(name string) {
	c.t.Helper()
	n := c.nodes[name]
	store, err := kv.Open(kv.Options{Dir: n.dir, LockWait: c.timeouts.LockWait, Logger: quiet})
	if err != nil {
		c.t.Fatal(err)
	}
	part, err := NewParticipant(ParticipantConfig{
		Name: name, Shards: c.shards, Store: store, Master: c.tr.From(name), Timeouts: c.timeouts, Logger: quiet,
		Runtime: c.nodeRT,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	n.store, n.part = store, part
	c.tr.Register(name, part)
}

// crashNode makes a node unreachable and closes its store: what was synced survives.
func (c *testCluster) crashNode(name string) {
	n := c.nodes[name]
	c.tr.Register(name, nil)
	n.store.Close()
	n.store, n.part = nil, nil
}

// keys returns one key per shard with the given prefix, in shard order.
func (c *testCluster) keys(prefix string) [][]byte {
	out := make([][]byte, c.shards.Len())
	found := 0
	for i := 0; found < len(out); i++ {
		k := []byte(fmt.Sprintf("%s%d", prefix, i))
		if s := c.shards.Shard(k); out[s] == nil {
			out[s] = k
			found++
		}
	}
	return out
}

func (c *testCluster) txn(cmps []wire.Compare, ops ...wire.Op) (*wire.TxnReply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.coord.Txn(ctx, &wire.TxnRequest{Compares: cmps, Ops: ops})
}

func (c *testCluster) read(keys ...[]byte) []wire.KeyValue {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rep, err := c.coord.Get(ctx, &wire.GetRequest{Keys: keys})
	if err != nil {
		c.t.Fatalf("read %q: %v", keys, err)
	}
	return rep.Values
}

// resolveAll runs every participant's resolver, ageing their transactions past the in-doubt
// timeout on the nodes' clock before each round, until nothing is prepared or locked anywhere.
func (c *testCluster) resolveAll() {
	c.t.Helper()
	waitFor(c.t, func() (bool, string) {
		c.nodeRT.advance(c.timeouts.InDoubt)
		busy := 0
		for _, n := range c.nodes {
			if n.part == nil {
				continue
			}
			n.part.ResolveOnce(context.Background())
			busy += len(n.store.Prepared()) + n.store.Stats().LocksHeld
		}
		return busy == 0, fmt.Sprintf("%d prepared transactions or locks left", busy)
	})
}

// waitAcked waits until the master has no transaction in flight: every phase 2 acknowledged.
func (c *testCluster) waitAcked() {
	c.t.Helper()
	waitFor(c.t, func() (bool, string) {
		n := c.inFlight()
		return n == 0, fmt.Sprintf("%d transactions or keys in flight at the master", n)
	})
}

// inFlight counts the transactions the master holds and the keys it holds for phase 2.
func (c *testCluster) inFlight() int {
	c.coord.mu.Lock()
	defer c.coord.mu.Unlock()
	return len(c.coord.mu.txns) + len(c.coord.mu.unacked)
}

func put(k []byte, v string) wire.Op { return wire.Op{Kind: wire.OpPut, Key: k, Value: []byte(v)} }

func codeOf(err error) wire.Code { return wire.CodeOf(err) }

func TestSingleShardWritesTakeTheOnePhasePath(t *testing.T) {
	c := newTestCluster(t, 2)
	k := c.keys("a")
	rep, err := c.txn(nil, put(k[0], "1"))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Path != "1pc" {
		t.Fatalf("path %q, want 1pc", rep.Path)
	}
	got := c.read(k[0])
	if string(got[0].Value) != "1" || got[0].Version != rep.CommitTS {
		t.Fatalf("%+v, want version %d", got[0], rep.CommitTS)
	}
	if d, _ := c.decisions.Load(); len(d) != 0 {
		t.Fatal("a one-phase commit wrote a decision record")
	}
}

func TestCrossShardCommitIsAtomicAndVersioned(t *testing.T) {
	c := newTestCluster(t, 3)
	k := c.keys("a")
	rep, err := c.txn(nil, put(k[0], "x"), put(k[1], "y"), put(k[2], "z"))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Path != "2pc" {
		t.Fatalf("path %q", rep.Path)
	}
	for i, v := range c.read(k...) {
		if !v.Found || v.Version != rep.CommitTS || string(v.Value) != []string{"x", "y", "z"}[i] {
			t.Fatalf("key %d: %+v", i, v)
		}
	}
	c.resolveAll()
	c.waitAcked()
	if d, _ := c.decisions.Load(); len(d) != 0 {
		t.Fatal("the decision record was not forgotten after every acknowledgement")
	}
}

func TestCompareFailureNamesTheRequestsCompareAndWritesNothing(t *testing.T) {
	c := newTestCluster(t, 2)
	k := c.keys("a")
	if _, err := c.txn(nil, put(k[0], "1"), put(k[1], "1")); err != nil {
		t.Fatal(err)
	}
	cmps := []wire.Compare{
		{Kind: wire.CmpExists, Key: k[0]},
		{Kind: wire.CmpExists, Key: k[1]},
		{Kind: wire.CmpValueEqual, Key: k[1], Value: []byte("2")}, // fails
	}
	_, err := c.txn(cmps, put(k[0], "9"), put(k[1], "9"))
	var werr *wire.Error
	if !errors.As(err, &werr) || werr.Code != wire.CodeCompareFailed || werr.Index != 2 {
		t.Fatalf("want compare 2 failed, got %v (%+v)", err, werr)
	}
	for _, v := range c.read(k...) {
		if string(v.Value) != "1" {
			t.Fatalf("a failed compare wrote %q", v.Value)
		}
	}
	c.resolveAll()
}

func TestPrepareConflictAbortsAtOnce(t *testing.T) {
	c := newTestCluster(t, 2)
	k := c.keys("a")
	// Another transaction (an id the oracle will not reach in this test) holds k[1] prepared.
	const other = 1 << 40
	owner := ownerOf(c.shards, k[1])
	if _, err := c.nodes[owner].store.Prepare(context.Background(), kv.PrepareRecord{TxnID: other, StartTS: other, Ops: []kv.Op{{Kind: kv.OpPut, Key: k[1], Value: []byte("held")}}}, nil); err != nil {
		t.Fatal(err)
	}
	_, err := c.txn(nil, put(k[0], "v"), put(k[1], "v"))
	var werr *wire.Error
	if !errors.As(err, &werr) || werr.Code != wire.CodeConflict || !strings.Contains(werr.Message, fmt.Sprint(other)) {
		t.Fatalf("want a conflict naming transaction %d, got %v", other, err)
	}
	if err := c.nodes[owner].store.Abort(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	for _, v := range c.read(k...) {
		if v.Found {
			t.Fatalf("an aborted transaction wrote %q", v.Key)
		}
	}
	c.resolveAll()
}

func TestLostCommitMessagesAreRetriedUntilAcknowledged(t *testing.T) {
	c := newTestCluster(t, 2)
	k := c.keys("a")
	var dropped atomic.Int32
	c.tr.SetFault(func(from, to string, req wire.Message) Fault {
		if _, ok := req.(*wire.CommitRequest); ok && to == "node2" && dropped.Add(1) <= 3 {
			if dropped.Load()%2 == 0 {
				return DropReply
			}
			return DropRequest
		}
		return Deliver
	})
	rep, err := c.txn(nil, put(k[0], "a"), put(k[1], "b"))
	if err != nil {
		t.Fatal(err)
	}
	c.resolveAll()
	c.waitAcked()
	for _, v := range c.read(k...) {
		if v.Version != rep.CommitTS {
			t.Fatalf("%+v not committed at %d", v, rep.CommitTS)
		}
	}
	if dropped.Load() < 4 {
		t.Fatalf("only %d commit messages to node2", dropped.Load())
	}
}

func TestDuplicatedMessagesAreHarmless(t *testing.T) {
	c := newTestCluster(t, 2)
	k := c.keys("a")
	c.tr.SetFault(func(from, to string, req wire.Message) Fault { return Duplicate })
	for i := 0; i < 5; i++ {
		if _, err := c.txn(nil, put(k[0], fmt.Sprint(i)), put(k[1], fmt.Sprint(i))); err != nil {
			t.Fatalf("txn %d: %v", i, err)
		}
	}
	got := c.read(k...)
	if string(got[0].Value) != "4" || string(got[1].Value) != "4" || got[0].Version != got[1].Version {
		t.Fatalf("%+v", got)
	}
	c.tr.SetFault(nil)
	c.resolveAll()
}

func TestLostVoteAbortsAndTheParticipantLearnsItByAsking(t *testing.T) {
	c := newTestCluster(t, 2)
	k := c.keys("a")
	c.tr.SetFault(func(from, to string, req wire.Message) Fault {
		switch req.(type) {
		case *wire.PrepareRequest:
			if to == "node2" {
				return DropReply // node2 prepares durably; its yes is lost
			}
		case *wire.AbortRequest:
			return DropRequest // and so is every abort
		}
		return Deliver
	})
	_, err := c.txn(nil, put(k[0], "a"), put(k[1], "b"))
	if codeOf(err) != wire.CodeUnavailable {
		t.Fatalf("want unavailable, got %v", err)
	}
	if got := len(c.nodes["node2"].store.Prepared()); got != 1 {
		t.Fatalf("node2 should hold the prepared transaction, holds %d", got)
	}
	c.tr.SetFault(nil)
	c.resolveAll()
	for _, v := range c.read(k...) {
		if v.Found {
			t.Fatalf("aborted write visible: %+v", v)
		}
	}
}

func TestMasterRestartAfterDecisionRedrivesCommit(t *testing.T) {
	c := newTestCluster(t, 2)
	k := c.keys("a")
	c.tr.SetFault(func(from, to string, req wire.Message) Fault {
		if _, ok := req.(*wire.CommitRequest); ok {
			return DropRequest
		}
		return Deliver
	})
	rep, err := c.txn(nil, put(k[0], "a"), put(k[1], "b"))
	if err != nil {
		t.Fatalf("a durable decision is reported committed even before phase 2: %v", err)
	}
	master := c.coord.Status(context.Background()).Processes[0]
	if len(master.Prepared) != 1 {
		t.Fatalf("the master's status lists %d transactions, want 1", len(master.Prepared))
	}
	if phase, waiting := master.Prepared[0].State, master.Prepared[0].Waiting; phase != "committed" || waiting != "commit acknowledgements" {
		t.Fatalf("the master's status shows the transaction %q, waiting for %q; want committed, waiting for commit acknowledgements", phase, waiting)
	}
	c.crashMaster()
	c.tr.SetFault(nil)
	for _, n := range c.nodes {
		if len(n.store.Prepared()) != 1 {
			t.Fatal("participants should still hold the prepared transaction")
		}
	}
	c.startMaster()
	c.resolveAll()
	for _, v := range c.read(k...) {
		if v.Version != rep.CommitTS {
			t.Fatalf("%+v not committed at %d after master restart", v, rep.CommitTS)
		}
	}
}

func TestMasterCrashBeforeDecisionAborts(t *testing.T) {
	c := newTestCluster(t, 2)
	k := c.keys("a")
	block := make(chan struct{})
	// The master dies while writing its decision: the record never reaches the disk.
	hook := func() error { <-block; return errors.New("crashed before the record was durable") }
	c.decisions.beforeRecord.Store(&hook)
	done := make(chan error, 1)
	go func() {
		_, err := c.txn(nil, put(k[0], "a"), put(k[1], "b"))
		done <- err
	}()
	// Wait for both votes, then the master "dies" before its decision is durable.
	waitFor(t, func() (bool, string) {
		n := len(c.nodes["node1"].store.Prepared()) + len(c.nodes["node2"].store.Prepared())
		return n == 2, fmt.Sprintf("%d of 2 participants prepared", n)
	})
	// While the master is deciding, an ask is answered "pending", never "aborted".
	rep := c.coord.Outcome(&wire.OutcomeRequest{TxnID: c.nodes["node1"].store.Prepared()[0].TxnID})
	if rep.State != wire.OutcomePending {
		t.Fatalf("undecided transaction reported %s", rep.State)
	}
	txnID := c.nodes["node1"].store.Prepared()[0].TxnID
	c.tr.Register(MasterName, nil)
	close(block)
	<-done
	c.crashMaster()
	c.decisions.beforeRecord.Store(nil)
	// Participants stay in doubt while the master is down.
	c.nodeRT.advance(c.timeouts.InDoubt)
	if n := c.nodes["node1"].part.ResolveOnce(context.Background()); n != 1 {
		t.Fatalf("in doubt with the master down: %d, want 1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err := c.nodes["node1"].store.Get(ctx, [][]byte{k[0]}, txnID+1000)
	cancel()
	if !errors.Is(err, kv.ErrLocked) {
		t.Fatalf("a read of an in-doubt key must not return a value: %v", err)
	}
	c.startMaster()
	c.resolveAll()
	for _, v := range c.read(k...) {
		if v.Found {
			t.Fatalf("transaction without a decision record became visible: %+v", v)
		}
	}
}

func TestNodeRestartWithPreparedTransactionAsksTheMaster(t *testing.T) {
	c := newTestCluster(t, 2)
	k := c.keys("a")
	c.tr.SetFault(func(from, to string, req wire.Message) Fault {
		if _, ok := req.(*wire.CommitRequest); ok && to == "node2" {
			return DropRequest
		}
		return Deliver
	})
	rep, err := c.txn(nil, put(k[0], "a"), put(k[1], "b"))
	if err != nil {
		t.Fatal(err)
	}
	c.crashNode("node2")
	c.crashMaster() // and the master too, so only the node's own recovery can finish it
	c.tr.SetFault(nil)
	c.startMaster()
	c.startNode("node2")
	prepared := c.nodes["node2"].store.Prepared()
	if len(prepared) != 1 || !prepared[0].Recovered {
		t.Fatalf("node2 should recover its prepared transaction from disk: %+v", prepared)
	}
	c.resolveAll()
	for _, v := range c.read(k...) {
		if v.Version != rep.CommitTS {
			t.Fatalf("%+v, want version %d", v, rep.CommitTS)
		}
	}
}

// overLimitRequests are requests that break a limit or the request format, each with the
// code it is refused with.
func overLimitRequests() []struct {
	name string
	req  *wire.TxnRequest
	code wire.Code
} {
	big := make([]byte, 5000)
	cases := []struct {
		name string
		req  *wire.TxnRequest
		code wire.Code
	}{
		{"empty", &wire.TxnRequest{}, wire.CodeBadRequest},
		{"empty key", &wire.TxnRequest{Ops: []wire.Op{put(nil, "v")}}, wire.CodeBadRequest},
		{"big key", &wire.TxnRequest{Ops: []wire.Op{put(big, "v")}}, wire.CodeTooLarge},
		{"big value", &wire.TxnRequest{Ops: []wire.Op{{Kind: wire.OpPut, Key: []byte("k"), Value: make([]byte, 1<<20+1)}}}, wire.CodeTooLarge},
		{"bad kind", &wire.TxnRequest{Ops: []wire.Op{{Kind: 9, Key: []byte("k")}}}, wire.CodeBadRequest},
		{"bad compare", &wire.TxnRequest{Compares: []wire.Compare{{Kind: 0, Key: []byte("k")}}}, wire.CodeBadRequest},
	}
	many := &wire.TxnRequest{}
	for i := 0; i < 1025; i++ {
		many.Ops = append(many.Ops, put([]byte(fmt.Sprint(i)), "v"))
	}
	return append(cases, struct {
		name string
		req  *wire.TxnRequest
		code wire.Code
	}{"too many ops", many, wire.CodeTooLarge})
}

// Requests that break a limit or the request format are refused by the master before it
// sends anything to a node.
func TestRequestsOverTheLimitsAreRefusedBeforeAnyNodeSeesThem(t *testing.T) {
	c := newTestCluster(t, 2)
	for _, tc := range overLimitRequests() {
		_, err := c.coord.Txn(context.Background(), tc.req)
		if codeOf(err) != tc.code {
			t.Errorf("%s: got %v, want %s", tc.name, err, tc.code)
		}
	}
	for _, n := range c.nodes {
		if n.store.Stats().MaxTS != 0 && len(n.store.Prepared()) != 0 {
			t.Fatal("a refused request reached a node")
		}
	}
}

// A participant checks what reaches it as the master does: a prepare or a one-phase apply
// that breaks a limit is refused with the master's code, whoever sent it.
func TestAParticipantRefusesWhatTheMasterRefuses(t *testing.T) {
	c := newTestCluster(t, 2)
	part := c.nodes["node1"].part
	const id = 1 << 40
	for _, tc := range overLimitRequests() {
		for _, req := range []wire.Message{
			&wire.PrepareRequest{TxnID: id, StartTS: id, Compares: tc.req.Compares, Ops: tc.req.Ops, Participants: []string{"node1", "node2"}},
			&wire.ApplyRequest{TxnID: id, TS: id, Compares: tc.req.Compares, Ops: tc.req.Ops},
		} {
			if _, err := part.Handle(context.Background(), req); codeOf(err) != tc.code {
				t.Errorf("%s %s: got %v, want %s", tc.name, req.MsgType(), err, tc.code)
			}
		}
	}
	if n := len(c.nodes["node1"].store.Prepared()); n != 0 {
		t.Fatalf("%d refused prepares left prepared", n)
	}
}

// At master.after-first-commit one participant has acknowledged its commit and the master has
// recorded nothing: while a hook holds the master there, the transaction stays committed but
// not applied, and when the master dies there, the next one drives the commit to the others.
func TestAMasterThatDiesAfterTheFirstCommitHasItsPhase2FinishedAfterRestart(t *testing.T) {
	c := newTestCluster(t, 2)
	k := c.keys("first")
	first := ownerOf(c.shards, k[0])
	reached, release := make(chan struct{}), make(chan struct{})
	var points []string
	var mu sync.Mutex
	c.crashMaster()
	c.hooks = Hooks{AtPoint: func(p string) {
		mu.Lock()
		points = append(points, p)
		mu.Unlock()
		if p == PointMasterAfterFirstCommit {
			close(reached)
			<-release
		}
	}}
	c.startMaster()
	// Only the first participant gets its commit.
	c.tr.SetFault(func(from, to string, req wire.Message) Fault {
		switch req.(type) {
		case *wire.CommitRequest, *wire.CommitBatchRequest:
			if to != first {
				return DropRequest
			}
		}
		return Deliver
	})
	rep, err := c.txn(nil, put(k[0], "a"), put(k[1], "b"))
	if err != nil {
		t.Fatal(err)
	}
	<-reached
	if inFlight, unacked := c.coord.InFlight(); inFlight != 1 || unacked != 1 {
		t.Fatalf("while held after the first acknowledgement: %d in flight, %d unacknowledged; want 1, 1", inFlight, unacked)
	}
	if got := c.coord.Outcome(&wire.OutcomeRequest{TxnID: rep.TxnID}); got.State != wire.OutcomeCommitted {
		t.Fatalf("outcome %s while phase 2 is under way", got.State)
	}
	if n := len(c.nodes[first].store.Prepared()); n != 0 {
		t.Fatalf("%s acknowledged its commit but holds %d prepared", first, n)
	}
	mu.Lock()
	want := []string{PointMasterBeforePrepare, PointMasterAfterVotes, PointMasterAfterDecision, PointMasterBeforePhase2, PointMasterAfterFirstCommit}
	if !slices.Equal(points, want) {
		t.Errorf("points reached %v, want %v", points, want)
	}
	mu.Unlock()
	// The master dies here: nothing it does after this reaches anyone.
	c.tr.Register(MasterName, nil)
	close(release)
	c.crashMaster()
	c.tr.SetFault(nil)
	c.hooks = Hooks{}
	c.startMaster()
	c.resolveAll()
	for _, v := range c.read(k...) {
		if v.Version != rep.CommitTS {
			t.Fatalf("%+v not committed at %d after the master's restart", v, rep.CommitTS)
		}
	}
	c.waitAcked()
}

// TestRandomFaultsKeepTheBankBalanced runs concurrent cross-shard transfers while the
// transport drops, duplicates and loses messages at random, then heals and checks that money
// was neither created nor destroyed and that nothing is left locked.
func TestRandomFaultsKeepTheBankBalanced(t *testing.T) {
	for seed := int64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			c := newTestCluster(t, 2)
			const accounts = 6
			keys := make([][]byte, accounts)
			var ops []wire.Op
			for i := range keys {
				keys[i] = []byte(fmt.Sprintf("acct%d", i))
				ops = append(ops, put(keys[i], "100"))
			}
			if _, err := c.txn(nil, ops...); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			rng := rand.New(rand.NewSource(seed))
			c.tr.SetFault(func(from, to string, req wire.Message) Fault {
				mu.Lock()
				defer mu.Unlock()
				switch r := rng.Intn(100); {
				case r < 5:
					return DropRequest
				case r < 10:
					return DropReply
				case r < 15:
					return Duplicate
				}
				return Deliver
			})
			var wg sync.WaitGroup
			var committed, unknown atomic.Int32
			for w := 0; w < 4; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for i := 0; i < 15; i++ {
						a, b := keys[(w+i)%accounts], keys[(w+2*i+1)%accounts]
						if string(a) == string(b) {
							continue
						}
						ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
						rep, err := c.coord.Get(ctx, &wire.GetRequest{Keys: [][]byte{a, b}})
						cancel()
						if err != nil {
							continue
						}
						va, vb := atoi(rep.Values[0].Value), atoi(rep.Values[1].Value)
						_, err = c.txn([]wire.Compare{
							{Kind: wire.CmpVersionEqual, Key: a, Version: rep.Values[0].Version},
							{Kind: wire.CmpVersionEqual, Key: b, Version: rep.Values[1].Version},
						}, put(a, fmt.Sprint(va-1)), put(b, fmt.Sprint(vb+1)))
						switch {
						case err == nil:
							committed.Add(1)
						case codeOf(err) == wire.CodeUnknownOutcome:
							unknown.Add(1)
						}
					}
				}(w)
			}
			wg.Wait()
			c.tr.SetFault(nil)
			c.resolveAll()
			total := 0
			for _, v := range c.read(keys...) {
				total += atoi(v.Value)
			}
			if total != 100*accounts {
				t.Fatalf("total %d, want %d (committed %d, unknown %d)", total, 100*accounts, committed.Load(), unknown.Load())
			}
			if committed.Load() == 0 {
				t.Fatal("no transfer committed: the test proved nothing")
			}
			t.Logf("seed %d: %d transfers committed, %d unknown", seed, committed.Load(), unknown.Load())
		})
	}
}

func atoi(b []byte) int {
	n := 0
	neg := false
	for i, ch := range b {
		if i == 0 && ch == '-' {
			neg = true
			continue
		}
		n = n*10 + int(ch-'0')
	}
	if neg {
		return -n
	}
	return n
}

// handlerFunc adapts a function to a Handler.
type handlerFunc func(ctx context.Context, req wire.Message) (wire.Message, error)

func (f handlerFunc) Handle(ctx context.Context, req wire.Message) (wire.Message, error) {
	return f(ctx, req)
}

// TestSlowVoteTimesOutAndTheLatePrepareIsHarmless holds one participant's prepare until the
// master has given up on its vote and aborted, then delivers it. A late prepare that meets the
// abort is refused; one whose abort was lost leaves a prepared transaction that the
// participant resolves by asking. Either way nothing is written and the keys are free again.
func TestSlowVoteTimesOutAndTheLatePrepareIsHarmless(t *testing.T) {
	for _, abortLost := range []bool{false, true} {
		name := "the abort arrives first"
		if abortLost {
			name = "the abort is lost"
		}
		t.Run(name, func(t *testing.T) {
			c := newTestCluster(t, 2)
			k := c.keys("a")
			release := make(chan struct{})
			c.tr.SetFault(func(from, to string, req wire.Message) Fault {
				switch req.(type) {
				case *wire.PrepareRequest:
					if to == "node2" {
						<-release
					}
				case *wire.AbortRequest:
					if abortLost && to == "node2" {
						return DropRequest
					}
				}
				return Deliver
			})
			node2 := c.nodes["node2"].part
			late := make(chan error, 1)
			c.tr.Register("node2", handlerFunc(func(ctx context.Context, req wire.Message) (wire.Message, error) {
				out, err := node2.Handle(ctx, req)
				if _, ok := req.(*wire.PrepareRequest); ok {
					late <- err
				}
				return out, err
			}))
			start := time.Now()
			_, err := c.txn(nil, put(k[0], "a"), put(k[1], "b"))
			if codeOf(err) != wire.CodeUnavailable || !strings.Contains(err.Error(), "node2") {
				t.Fatalf("want node2 unavailable (no vote in time), got %v", err)
			}
			if d, bound := time.Since(start), min(c.timeouts.Prepare, c.timeouts.Request); d < bound {
				t.Fatalf("aborted after %v, before the vote was due (%v)", d, bound)
			}
			c.waitAcked() // the abort has reached node2, or its attempts ran out
			close(release)
			lateErr := <-late
			prepared := len(c.nodes["node2"].store.Prepared())
			if abortLost {
				if lateErr != nil || prepared != 1 {
					t.Fatalf("a late prepare with no abort before it: %v, %d prepared; want a yes vote and one prepared", lateErr, prepared)
				}
			} else if codeOf(lateErr) != wire.CodeAborted || prepared != 0 {
				t.Fatalf("a late prepare after the abort: %v, %d prepared; want it refused as aborted", lateErr, prepared)
			}
			c.tr.SetFault(nil)
			c.resolveAll()
			for _, v := range c.read(k...) {
				if v.Found {
					t.Fatalf("aborted write visible: %+v", v)
				}
			}
			if _, err := c.txn(nil, put(k[0], "c"), put(k[1], "d")); err != nil {
				t.Fatalf("the keys are free again: %v", err)
			}
		})
	}
}

// commitGate holds every phase-2 commit of a transaction until the gate is opened up to it.
type commitGate struct {
	mu   sync.Mutex
	cond sync.Cond
	upTo uint64
}

func newCommitGate() *commitGate {
	g := &commitGate{}
	g.cond.L = &g.mu
	return g
}

// hold blocks a commit request until the gate is open to all of its transactions.
func (g *commitGate) hold(req wire.Message) {
	var id uint64
	switch m := req.(type) {
	case *wire.CommitRequest:
		id = m.TxnID
	case *wire.CommitBatchRequest:
		for _, cr := range m.Commits {
			id = max(id, cr.TxnID)
		}
	default:
		return
	}
	g.mu.Lock()
	for id > g.upTo {
		g.cond.Wait()
	}
	g.mu.Unlock()
}

// open lets the commits of every transaction up to id through.
func (g *commitGate) open(id uint64) {
	g.mu.Lock()
	g.upTo = max(g.upTo, id)
	g.cond.Broadcast()
	g.mu.Unlock()
}

// TestBackToBackWritesDoNotConflictWithTheirOwnPhase2 proves that a client is told
// "committed" once the outcome is durable, and that neither its next transaction on the same
// keys nor a read of them waits for the first one's phase 2, or fails on its locks: the master
// sends the commit it knows of along with the request, and the node applies it first. Every
// transaction's phase-2 messages are held back until the end.
func TestBackToBackWritesDoNotConflictWithTheirOwnPhase2(t *testing.T) {
	for _, parallel := range []bool{false, true} {
		t.Run(fmt.Sprintf("parallel=%v", parallel), func(t *testing.T) {
			c := newTestCluster(t, 2)
			if parallel {
				c.crashMaster()
				c.parallel = true
				c.startMaster()
			}
			k := c.keys("a")
			gate := newCommitGate()
			c.tr.SetFault(func(from, to string, req wire.Message) Fault {
				gate.hold(req)
				return Deliver
			})
			var waits atomic.Int32
			onWait := func() { waits.Add(1) }
			c.masterRT.onWait.Store(&onWait)
			var last *wire.TxnReply
			for i := 0; i < 5; i++ {
				rep, err := c.txn(nil, put(k[0], fmt.Sprint(i)), put(k[1], fmt.Sprint(i)))
				if err != nil {
					t.Fatalf("write %d on the keys of the previous one: %v", i, err)
				}
				last = rep
			}
			if n := waits.Load(); n != 0 {
				t.Fatalf("%d writes waited for the previous one's phase 2, want none", n)
			}
			// A read right after the reply, every phase 2 still held back, sees the last write.
			got := c.read(k...)
			for _, v := range got {
				if string(v.Value) != "4" || v.Version != last.CommitTS {
					t.Fatalf("read after the last commit: %+v, want 4 at %d", v, last.CommitTS)
				}
			}
			gate.open(math.MaxUint64)
			c.waitAcked()
			c.resolveAll()
		})
	}
}

// refusingNode is a participant that refuses every commit of one transaction, as a node with a
// bug would, and serves everything else.
type refusingNode struct {
	*Participant
	txn atomic.Uint64
}

func (r *refusingNode) Handle(ctx context.Context, req wire.Message) (wire.Message, error) {
	bad := r.txn.Load()
	switch m := req.(type) {
	case *wire.CommitRequest:
		if m.TxnID == bad {
			return nil, wire.Errorf(wire.CodeInternal, "refusing transaction %d", bad)
		}
	case *wire.CommitBatchRequest:
		for _, cr := range m.Commits {
			if cr.TxnID == bad {
				return nil, wire.Errorf(wire.CodeInternal, "refusing transaction %d", bad)
			}
		}
	}
	return r.Participant.Handle(ctx, req)
}

// A commit that a node refuses holds up only its own transaction: the commits decided after it
// reach the node, and their transactions are applied.
func TestARefusedCommitDoesNotHoldUpTheOthers(t *testing.T) {
	c := newTestCluster(t, 2)
	ref := &refusingNode{Participant: c.nodes["node1"].part}
	ref.txn.Store(math.MaxUint64)
	c.tr.Register("node1", ref)
	bad := c.keys("bad")
	// The refused transaction's number is its start timestamp, which is known only once it
	// runs: refuse whichever transaction is prepared first.
	var first atomic.Bool
	c.tr.SetFault(func(from, to string, req wire.Message) Fault {
		if p, ok := req.(*wire.PrepareRequest); ok && to == "node1" && first.CompareAndSwap(false, true) {
			ref.txn.Store(p.TxnID)
		}
		return Deliver
	})
	if _, err := c.txn(nil, put(bad[0], "x"), put(bad[1], "x")); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		k := c.keys(fmt.Sprint("ok", i))
		rep, err := c.txn(nil, put(k[0], "v"), put(k[1], "v"))
		if err != nil {
			t.Fatalf("transaction %d after the refused one: %v", i, err)
		}
		for _, v := range c.read(k...) { // waits for node1's prepare lock until its commit lands
			if v.Version != rep.CommitTS {
				t.Fatalf("transaction %d: %+v not committed at %d", i, v, rep.CommitTS)
			}
		}
	}
	// Every acknowledgement but the refused transaction's arrives.
	waitFor(t, func() (bool, string) {
		c.coord.mu.Lock()
		n := len(c.coord.mu.unacked)
		c.coord.mu.Unlock()
		return n == len(bad), fmt.Sprintf("%d keys waiting for phase 2, want only the refused transaction's %d", n, len(bad))
	})
	ref.txn.Store(math.MaxUint64) // the bug is fixed: the refused commit goes through
	c.waitAcked()
}

// A node that lost a prepare record (its data directory was wiped) answers the master's Commit
// with "not prepared here" rather than a silent success. The master counts and logs it, and
// does not retry it forever: the other participant's writes are applied and the transaction is
// acknowledged.
func TestACommitToANodeThatLostItsPrepareRecordIsCountedNotRetried(t *testing.T) {
	c := newTestCluster(t, 2)
	c.crashMaster()
	counts := &notPreparedCounter{byNode: map[string]int{}}
	c.metrics = counts
	c.startMaster()
	k := c.keys("lost")
	c.tr.SetFault(func(from, to string, req wire.Message) Fault {
		switch req.(type) {
		case *wire.CommitRequest, *wire.CommitBatchRequest:
			return DropRequest
		}
		return Deliver
	})
	rep, err := c.txn(nil, put(k[0], "a"), put(k[1], "b"))
	if err != nil {
		t.Fatal(err)
	}
	c.crashNode("node2")
	c.nodes["node2"].dir = t.TempDir() // the disk is replaced: the prepare record is gone
	c.startNode("node2")
	c.tr.SetFault(nil)
	c.waitAcked()
	if n := counts.count("node2"); n != 1 {
		t.Fatalf("commits node2 refused as never prepared: %d, want 1", n)
	}
	if v := c.read(k[0])[0]; v.Version != rep.CommitTS {
		t.Fatalf("node1's share %+v not committed at %d", v, rep.CommitTS)
	}
}

// notPreparedCounter is a CoordinatorMetrics that counts, by node, the commits refused because
// the node never prepared the transaction.
type notPreparedCounter struct {
	noMetrics
	mu     sync.Mutex
	byNode map[string]int
}

func (m *notPreparedCounter) CommitNotPrepared(node string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.byNode[node]++
}

func (m *notPreparedCounter) count(node string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.byNode[node]
}
