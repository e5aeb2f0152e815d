package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/client"
)

// SoakRun is one run of a soak: its GC setting, its samples and what its writers saw.
type SoakRun struct {
	// GC is the cluster's gc section.
	GC txn.GC `json:"gc"`
	// Names are the processes, in the order of every sample's Procs: the master, then the
	// nodes in shard order.
	Names []string `json:"names"`
	// Samples are taken every SoakConfig.SampleEvery from the moment the cluster is up, and
	// once more at the end.
	Samples []SoakSample `json:"samples"`
	// Puts and Txns count the successful operations after the preload (Preloaded keys).
	Puts, Txns, Preloaded int64
	// Aborts counts the operations that wrote nothing, by reason; Unknown those whose outcome
	// is unknown; Errors the rest, by reason, with a few ErrorSamples.
	Aborts       map[string]int64 `json:"aborts,omitempty"`
	Unknown      int64            `json:"unknown"`
	Errors       map[string]int64 `json:"errors,omitempty"`
	ErrorSamples []string         `json:"error_samples,omitempty"`
	// MarkerTS is the commit timestamp of the first of two writes of a marker key made just
	// after the preload. OldRead is what a read at MarkerTS returned at the end of the run:
	// "compacted", "value" (the first write's value) or another outcome; NewRead what a read of
	// the present returned ("value": the second write's value).
	MarkerTS         uint64 `json:"marker_ts"`
	OldRead, NewRead string
}

// SoakSample is the state of every process at one moment of a run, and what the writers had
// done by then.
type SoakSample struct {
	// At is the time since the cluster came up.
	At time.Duration `json:"at_ns"`
	// Procs holds one entry per process, in SoakRun.Names order.
	Procs []ProcSample `json:"procs"`
	// Live is each node's live data: for every key of its shard written so far, the key and its
	// latest value (the larger of two values when a write's outcome is unknown).
	Live []int64 `json:"live_bytes"`
	// Written is the key and value bytes written to each node so far, every version counted.
	Written []int64 `json:"written_bytes"`
	// Ops is the successful operations so far, the preload included.
	Ops int64 `json:"ops"`
}

// Label names the run by its GC setting.
func (r *SoakRun) Label() string {
	if r.GC.Off {
		return "gc off"
	}
	return fmt.Sprintf("gc %v", r.GC.Retention)
}

// soakMarker is the key written twice after the preload, whose first version the end of a run
// reads again.
var soakMarker = []byte("soak-marker")

// soakState is what the writers of one run share.
type soakState struct {
	cfg     SoakConfig
	ks      *keySpace
	sizes   []atomic.Int64 // per key: the latest value's size, 0 until written
	written []atomic.Int64 // per shard
	ops     atomic.Int64
	pool    []byte // random bytes that values are cut from

	mu struct {
		sync.Mutex
		aborts, errors map[string]int64
		unknown        int64
		samples        []string
	}
}

// drive runs the workload against cl for cfg.Duration from begin, sampling as it goes, then
// reads the marker back.
func (r *SoakRun) drive(ctx context.Context, cfg SoakConfig, cl *SoakCluster, begin time.Time, logf func(string, ...any)) error {
	for _, p := range cl.Processes {
		r.Names = append(r.Names, p.Name)
	}
	tg, err := openKvtx(ctx, TargetConfig{Endpoint: cl.Endpoint, TLS: cl.TLS})
	if err != nil {
		return err
	}
	defer tg.Close()
	if got, want := tg.Shards().Names(), r.Names[1:]; !slices.Equal(got, want) {
		return fmt.Errorf("bench: soak: the master reports the shards %v, the cluster has the nodes %v", got, want)
	}
	ks, err := newKeySpace("soak/", cfg.Keys, tg.Shards(), Zipfian, cfg.Theta)
	if err != nil {
		return err
	}
	st := &soakState{cfg: cfg, ks: ks, sizes: make([]atomic.Int64, cfg.Keys), written: make([]atomic.Int64, tg.Shards().Len())}
	st.mu.aborts, st.mu.errors = map[string]int64{}, map[string]int64{}
	seed := rand.New(rand.NewPCG(cfg.Seed, 0)) // the same choices in both runs
	st.pool = make([]byte, 4<<20)
	for i := range st.pool {
		st.pool[i] = byte(seed.Uint32())
	}

	end := begin.Add(cfg.Duration)
	sampled := make(chan struct{})
	sctx, stopSampling := context.WithCancel(ctx)
	go func() {
		defer close(sampled)
		for at := begin; ; at = at.Add(cfg.SampleEvery) {
			if !sleepUntil(sctx, at) {
				return
			}
			s := st.sample(cl, time.Since(begin))
			r.Samples = append(r.Samples, s)
			logf("soak: %s: %s", r.Label(), s.line(r.Names))
		}
	}()
	defer func() { stopSampling(); <-sampled }()

	sessions := make([]Session, cfg.Clients)
	for i := range sessions {
		if sessions[i], err = tg.NewSession(ctx, i); err != nil {
			return err
		}
	}
	// Preload: every key once, so that live data is the whole key space from here on.
	var next atomic.Int64
	st.parallel(sessions, func(s Session, rng *rand.Rand) bool {
		i := int(next.Add(1) - 1)
		if i >= cfg.Keys {
			return false
		}
		st.write(ctx, s, rng, []int{i})
		return true
	}, seed)
	r.Preloaded = st.ops.Load()
	if ctx.Err() != nil {
		return errSoakStopped
	}
	admin, err := tg.conn(ctx, 0)
	if err != nil {
		return err
	}
	first, err := admin.Put(ctx, soakMarker, []byte("first"))
	if err != nil {
		return fmt.Errorf("bench: soak: write the marker: %w", err)
	}
	if _, err := admin.Put(ctx, soakMarker, []byte("second")); err != nil {
		return fmt.Errorf("bench: soak: write the marker again: %w", err)
	}
	r.MarkerTS = first.CommitTS

	var puts, txns atomic.Int64
	st.parallel(sessions, func(s Session, rng *rand.Rand) bool {
		if time.Now().After(end) || ctx.Err() != nil || st.reachedTarget() {
			return false
		}
		var idx []int
		if rng.Float64() < cfg.TxnFraction {
			idx = ks.pickTxn(rng, 2, 1, nil)
		} else {
			idx = []int{ks.pick(rng)}
		}
		if st.write(ctx, s, rng, idx) {
			if len(idx) > 1 {
				txns.Add(1)
			} else {
				puts.Add(1)
			}
		}
		return true
	}, seed)
	r.Puts, r.Txns = puts.Load(), txns.Load()
	if ctx.Err() != nil {
		return errSoakStopped
	}
	stopSampling()
	<-sampled
	r.Samples = append(r.Samples, st.sample(cl, time.Since(begin)))
	logf("soak: %s: %s (final)", r.Label(), r.Samples[len(r.Samples)-1].line(r.Names))

	kvs, err := admin.ReadAt(ctx, r.MarkerTS, soakMarker)
	r.OldRead = readOutcome(kvs, err, "first")
	kvs, _, err = admin.Snapshot(ctx, soakMarker)
	r.NewRead = readOutcome(kvs, err, "second")
	st.mu.Lock()
	r.Aborts, r.Errors, r.Unknown, r.ErrorSamples = st.mu.aborts, st.mu.errors, st.mu.unknown, st.mu.samples
	st.mu.Unlock()
	return nil
}

// readOutcome names the outcome of a read of the marker: "value" when it returned want,
// "compacted" when the version was below the safe point, otherwise what it returned.
func readOutcome(kvs []client.KeyValue, err error, want string) string {
	switch {
	case errors.Is(err, client.ErrCompacted):
		return "compacted"
	case err != nil:
		return "error: " + err.Error()
	case len(kvs) != 1 || !kvs[0].Found:
		return "not found"
	case string(kvs[0].Value) == want:
		return "value"
	}
	return fmt.Sprintf("value %q, want %q", kvs[0].Value, want)
}

// sleepUntil sleeps until t and reports whether ctx is still live.
func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// parallel runs step in a loop on every session, each with a random source of its own, until
// step returns false.
func (st *soakState) parallel(sessions []Session, step func(Session, *rand.Rand) bool, seed *rand.Rand) {
	var wg sync.WaitGroup
	for _, s := range sessions {
		rng := rand.New(rand.NewPCG(seed.Uint64(), seed.Uint64()))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for step(s, rng) {
			}
		}()
	}
	wg.Wait()
}

// write writes the keys of idx (a put for one, a transaction for more), each value small or
// large at random, and accounts for it. It reports whether the write succeeded.
func (st *soakState) write(ctx context.Context, s Session, rng *rand.Rand, idx []int) bool {
	keys := make([][]byte, len(idx))
	values := make([][]byte, len(idx))
	for j, i := range idx {
		keys[j] = st.ks.key(i)
		n := st.cfg.SmallValue
		if rng.Float64() < st.cfg.LargeFraction {
			n = st.cfg.LargeValue
		}
		off := rng.IntN(len(st.pool) - n + 1)
		values[j] = st.pool[off : off+n]
	}
	octx, cancel := context.WithTimeout(ctx, st.cfg.Timeout)
	var err error
	if len(idx) == 1 {
		err = s.Put(octx, keys[0], values[0])
	} else {
		err = s.Txn(octx, keys, values)
	}
	cancel()
	outcome := Outcome(-1)
	var oe *OpError
	if err != nil {
		if !errors.As(err, &oe) {
			oe = &OpError{Outcome: Failed, Reason: "error", Err: err}
		}
		outcome = oe.Outcome
	}
	if err == nil || outcome == Unknown {
		for j, i := range idx {
			n := int64(len(values[j]))
			if err == nil {
				st.sizes[i].Store(n)
			} else {
				for old := st.sizes[i].Load(); n > old && !st.sizes[i].CompareAndSwap(old, n); old = st.sizes[i].Load() {
				}
			}
			st.written[st.ks.shardOf[i]].Add(int64(len(keys[j])) + n)
		}
	}
	if err == nil {
		st.ops.Add(1)
		return true
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	switch outcome {
	case Aborted:
		st.mu.aborts[oe.Reason]++
	case Unknown:
		st.mu.unknown++
	default:
		st.mu.errors[oe.Reason]++
		if len(st.mu.samples) < 5 {
			st.mu.samples = append(st.mu.samples, err.Error())
		}
	}
	return false
}

// reachedTarget reports whether every node has been written SoakConfig.WriteTarget bytes.
func (st *soakState) reachedTarget() bool {
	if st.cfg.WriteTarget <= 0 {
		return false
	}
	for i := range st.written {
		if st.written[i].Load() < st.cfg.WriteTarget {
			return false
		}
	}
	return true
}

// sample measures every process of cl and the writers' counters.
func (st *soakState) sample(cl *SoakCluster, at time.Duration) SoakSample {
	s := SoakSample{At: at, Ops: st.ops.Load()}
	for _, p := range cl.Processes {
		s.Procs = append(s.Procs, sampleProcess(p))
	}
	s.Live = make([]int64, len(st.written))
	for i := range st.sizes {
		if n := st.sizes[i].Load(); n > 0 {
			s.Live[st.ks.shardOf[i]] += n + int64(len(st.ks.prefix)+keyDigits)
		}
	}
	for i := range st.written {
		s.Written = append(s.Written, st.written[i].Load())
	}
	return s
}
