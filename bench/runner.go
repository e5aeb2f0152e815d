package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Result is the outcome of one run. Latencies are in microseconds.
type Result struct {
	// Target, Workload and Clients say what ran.
	Target   string   `json:"target"`
	Workload Workload `json:"workload"`
	Clients  int      `json:"clients"`
	// Params are the workload's parameters.
	Params Params `json:"params"`
	// Elapsed is the measured window in seconds.
	Elapsed float64 `json:"elapsed_s"`
	// Ops counts successful operations in the window; Attempts counts every operation.
	Ops      int64 `json:"ops"`
	Attempts int64 `json:"attempts"`
	// Throughput is Ops per second of Elapsed.
	Throughput float64 `json:"throughput_ops_s"`
	// Latency summarises the latencies of the successful operations.
	Latency Latency `json:"latency_us"`
	// ByOp breaks throughput and latency down by operation kind (read and update for the YCSB
	// mixes; one entry for the other workloads).
	ByOp []OpStats `json:"by_op"`
	// Aborts counts aborted operations (nothing written) by reason.
	Aborts map[string]int64 `json:"aborts"`
	// Unknown counts writes whose outcome is unknown: they may have committed.
	Unknown int64 `json:"unknown"`
	// Errors counts other failed operations by reason.
	Errors map[string]int64 `json:"errors"`
	// ErrorSamples holds one message per abort, unknown or error reason, to say what happened.
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
	// ServerCPU is, in a suite, the CPU time the target's processes spent per successful
	// operation, in µs: their CPU time over the whole run (warm-up included) divided by its
	// wall time, over Throughput. ServerCPUOf says which processes were counted.
	ServerCPU   float64 `json:"server_cpu_us_per_op,omitempty"`
	ServerCPUOf string  `json:"server_cpu_of,omitempty"`
}

// Params are the parameters of a run that shape its load.
type Params struct {
	Keys         int          `json:"keys"`
	ValueSize    int          `json:"value_size"`
	TxnKeys      int          `json:"txn_keys,omitempty"`
	ScanKeys     int          `json:"scan_keys,omitempty"`
	CrossShard   float64      `json:"cross_shard,omitempty"`
	Distribution Distribution `json:"distribution"`
	Theta        float64      `json:"theta,omitempty"`
	WarmupS      float64      `json:"warmup_s"`
	DurationS    float64      `json:"duration_s,omitempty"`
	Ops          int64        `json:"ops,omitempty"`
}

// OpStats is the share of one operation kind in a run.
type OpStats struct {
	Op         string  `json:"op"`
	Ops        int64   `json:"ops"`
	Throughput float64 `json:"throughput_ops_s"`
	Latency    Latency `json:"latency_us"`
}

// AbortCount is the total of r.Aborts.
func (r *Result) AbortCount() int64 { return sum(r.Aborts) }

// ErrorCount is the total of r.Errors.
func (r *Result) ErrorCount() int64 { return sum(r.Errors) }

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// opKinds are the operation kinds of a workload, in report order.
func opKinds(w Workload) []string {
	if w.isYCSB() {
		return []string{"read", "update"}
	}
	return []string{string(w)}
}

// worker is one closed-loop client. Its counters are its own until the run ends, except ops,
// fails and interval, which the progress line reads.
type worker struct {
	cfg  *Config
	ks   *keySpace
	sess Session
	rng  *rand.Rand

	hists    []*latencyHist // per op kind, measured window only
	attempts int64
	aborts   map[string]int64
	errs     map[string]int64
	unknown  int64
	samples  map[string]string

	ops, fails atomic.Int64 // every operation, warm-up included (progress line)
	mu         sync.Mutex
	interval   *latencyHist // successful latencies since the last progress line

	// scratch
	idx    []int
	keys   [][]byte
	vals   [][]byte
	vers   []uint64
	keyBuf []byte
	value  []byte
	seq    uint64
}

func newWorker(cfg *Config, ks *keySpace, sess Session, seed uint64, id int) *worker {
	w := &worker{
		cfg: cfg, ks: ks, sess: sess,
		rng:      rand.New(rand.NewPCG(seed, uint64(id)+1)),
		aborts:   map[string]int64{},
		errs:     map[string]int64{},
		samples:  map[string]string{},
		interval: newLatencyHist(),
		value:    make([]byte, cfg.ValueSize),
	}
	for range opKinds(cfg.Workload) {
		w.hists = append(w.hists, newLatencyHist())
	}
	for i := range w.value {
		w.value[i] = byte('a' + w.rng.IntN(26))
	}
	return w
}

// nextValue returns the client's value buffer with a fresh sequence number in front, so that
// successive writes differ. The buffer is reused: sessions must not keep it.
func (w *worker) nextValue() []byte {
	w.seq++
	var d [20]byte
	s := strconv.AppendUint(d[:0], w.seq, 36)
	copy(w.value, s)
	return w.value
}

// setKeys fills w.keys with the keys of w.idx.
func (w *worker) setKeys() {
	w.keyBuf = w.keyBuf[:0]
	w.keys = w.keys[:0]
	for _, i := range w.idx {
		start := len(w.keyBuf)
		w.keyBuf = w.ks.appendKey(w.keyBuf, i)
		w.keys = append(w.keys, w.keyBuf[start:len(w.keyBuf):len(w.keyBuf)])
	}
}

// errNotFound is a get of a key that should have been preloaded.
var errNotFound = &OpError{Outcome: Failed, Reason: "not_found", Err: errors.New("a preloaded key was not found (run with preloading)")}

// op performs one operation and returns its kind's index.
func (w *worker) op(ctx context.Context) (int, error) {
	switch wl := w.cfg.Workload; wl {
	case WorkloadPut:
		w.idx = append(w.idx[:0], w.ks.pick(w.rng))
		w.setKeys()
		return 0, w.sess.Put(ctx, w.keys[0], w.nextValue())
	case WorkloadGet:
		return 0, w.get(ctx)
	case WorkloadScan:
		return 0, w.scan(ctx)
	case WorkloadTxn:
		w.idx = w.ks.pickTxn(w.rng, w.cfg.TxnKeys, w.cfg.CrossShard, w.idx)
		w.setKeys()
		v := w.nextValue()
		w.vals = w.vals[:0]
		for range w.keys {
			w.vals = append(w.vals, v)
		}
		return 0, w.sess.Txn(ctx, w.keys, w.vals)
	case WorkloadCAS:
		return 0, w.transfer(ctx)
	default:
		if w.rng.Float64() < wl.readFraction() {
			return 0, w.get(ctx)
		}
		w.idx = append(w.idx[:0], w.ks.pick(w.rng))
		w.setKeys()
		return 1, w.sess.Put(ctx, w.keys[0], w.nextValue())
	}
}

func (w *worker) get(ctx context.Context) error {
	w.idx = append(w.idx[:0], w.ks.pick(w.rng))
	w.setKeys()
	found, err := w.sess.Get(ctx, w.keys[0])
	if err == nil && !found {
		return errNotFound
	}
	return err
}

// errShortScan is a scan of a range of preloaded keys that returned fewer keys than it holds.
var errShortScan = &OpError{Outcome: Failed, Reason: "short_scan", Err: errors.New("a range of preloaded keys returned fewer keys than it holds (run with preloading)")}

// scan reads cfg.ScanKeys consecutive keys, [key i, key i+ScanKeys), whose first key i is
// chosen by the workload's distribution among the ranges that fit in the key space.
func (w *worker) scan(ctx context.Context) error {
	n := w.cfg.ScanKeys
	starts := w.ks.n - n + 1
	first := w.rng.IntN(starts)
	if w.cfg.Distribution == Zipfian {
		first = w.ks.pick(w.rng) % starts
	}
	w.keyBuf = w.ks.appendKey(w.keyBuf[:0], first)
	cut := len(w.keyBuf)
	w.keyBuf = w.ks.appendKey(w.keyBuf, first+n)
	got, err := w.sess.Scan(ctx, w.keyBuf[:cut:cut], w.keyBuf[cut:], n)
	if err == nil && got != n {
		return errShortScan
	}
	return err
}

// transfer moves one unit between two accounts on different shards: a snapshot read of both
// with their versions, then a transaction conditional on both versions.
func (w *worker) transfer(ctx context.Context) error {
	w.idx = w.ks.pickTxn(w.rng, 2, 1, w.idx)
	w.setKeys()
	vs, err := w.sess.Snapshot(ctx, w.keys)
	if err != nil {
		return err
	}
	if len(vs) != 2 {
		return fmt.Errorf("bench: snapshot of 2 keys returned %d", len(vs))
	}
	from, to := balance(vs[0]), balance(vs[1])
	w.vers = append(w.vers[:0], vs[0].Version, vs[1].Version)
	w.vals = append(w.vals[:0], strconv.AppendInt(nil, from-1, 10), strconv.AppendInt(nil, to+1, 10))
	return w.sess.CondTxn(ctx, w.keys, w.vers, w.vals)
}

// balance reads an account's balance: a decimal number, 0 when missing or unreadable.
func balance(v Versioned) int64 {
	if !v.Found {
		return 0
	}
	n, err := strconv.ParseInt(string(v.Value), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// initialBalance is every account's balance after preloading.
const initialBalance = 1000

// count files a failed measured operation under its outcome and reason.
func (w *worker) count(err error) {
	outcome, reason := classify(err)
	key := reason
	switch outcome {
	case Aborted:
		w.aborts[reason]++
		key = "abort " + reason
	case Unknown:
		w.unknown++
		key = "unknown " + reason
	default:
		w.errs[reason]++
		key = "error " + reason
	}
	if _, ok := w.samples[key]; !ok {
		w.samples[key] = err.Error()
	}
}

// Run runs cfg's workload against t with cfg.Clients closed-loop clients: preloading if the
// workload needs it and cfg.Preload is set, then the warm-up, then the measured window. It
// returns an error only if the run could not be set up or ctx ended; failed operations are
// counted in the Result.
func Run(ctx context.Context, t Target, cfg Config) (*Result, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ks, err := keySpaceFor(t, &cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Preload && cfg.Workload.NeedsPreload() {
		if _, err := preload(ctx, t, &cfg, ks); err != nil {
			return nil, err
		}
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	workers := make([]*worker, cfg.Clients)
	defer func() {
		for _, w := range workers {
			if w != nil {
				w.sess.Close()
			}
		}
	}()
	for i := range workers {
		sess, err := t.NewSession(ctx, i)
		if err != nil {
			return nil, err
		}
		workers[i] = newWorker(&cfg, ks, sess, seed, i)
	}
	label := cfg.Label
	if label == "" {
		label = fmt.Sprintf("%s %s %d clients", t.Name(), cfg.Workload, cfg.Clients)
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	base := time.Now()
	var (
		measureStart atomic.Int64 // ns since base; -1 during the warm-up
		measureEnd   atomic.Int64 // ns since base; the end of the window (duration mode)
		tickets      atomic.Int64 // operations begun in the window (ops mode)
	)
	measureStart.Store(-1)
	measureEnd.Store(1 << 62)
	begin := func() {
		now := int64(time.Since(base))
		if cfg.Ops == 0 {
			measureEnd.Store(now + int64(cfg.Duration))
		}
		measureStart.Store(now)
	}
	if cfg.Warmup == 0 {
		begin()
	}

	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.loop(runCtx, &cfg, base, &measureStart, &measureEnd, &tickets)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	var progressDone chan struct{}
	if cfg.Progress != nil {
		progressDone = make(chan struct{})
		go func() {
			defer close(progressDone)
			progress(cfg.Progress, label, cfg.ProgressInterval, workers, done, func() bool { return measureStart.Load() < 0 })
		}()
	}
	if cfg.Warmup > 0 {
		select {
		case <-time.After(cfg.Warmup):
			begin()
		case <-ctx.Done():
		case <-done:
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		cancel()
		<-done
	}
	end := time.Since(base)
	if progressDone != nil {
		<-progressDone
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("bench: run interrupted: %w", err)
	}
	elapsed := cfg.Duration
	if cfg.Ops > 0 {
		elapsed = end - time.Duration(measureStart.Load())
	}
	return collect(t.Name(), &cfg, workers, elapsed), nil
}

// loop is one client's closed loop. An operation counts if it started at or after the window's
// start and ended by its end; in ops mode each counted operation takes a ticket first.
func (w *worker) loop(ctx context.Context, cfg *Config, base time.Time, start, end, tickets *atomic.Int64) {
	for ctx.Err() == nil {
		t0 := time.Since(base)
		s := start.Load()
		measured := s >= 0 && int64(t0) >= s
		if int64(t0) >= end.Load() {
			return
		}
		if measured && cfg.Ops > 0 && tickets.Add(1) > cfg.Ops {
			return
		}
		opCtx, cancel := context.WithTimeout(ctx, cfg.OpTimeout)
		kind, err := w.op(opCtx)
		cancel()
		t1 := time.Since(base)
		lat := t1 - t0
		w.ops.Add(1)
		if err != nil {
			w.fails.Add(1)
		} else {
			w.mu.Lock()
			w.interval.record(lat)
			w.mu.Unlock()
		}
		if !measured || int64(t1) > end.Load() {
			continue
		}
		if ctx.Err() != nil {
			return // cancelled: the outcome is the run's, not the target's
		}
		w.attempts++
		if err != nil {
			w.count(err)
			continue
		}
		w.hists[kind].record(lat)
	}
}

// progress writes a line every interval until done: operations per second, the p99 of the
// interval and the failures so far.
func progress(out interface{ Write([]byte) (int, error) }, label string, every time.Duration, workers []*worker, done <-chan struct{}, warming func() bool) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	start := time.Now()
	last := start
	var lastOps int64
	iv := newLatencyHist()
	for {
		select {
		case <-done:
			fmt.Fprint(out, "\r\x1b[K")
			return
		case now := <-tick.C:
			var ops, fails int64
			iv.reset()
			for _, w := range workers {
				ops += w.ops.Load()
				fails += w.fails.Load()
				w.mu.Lock()
				iv.merge(w.interval)
				w.interval.reset()
				w.mu.Unlock()
			}
			rate := float64(ops-lastOps) / now.Sub(last).Seconds()
			phase := ""
			if warming() {
				phase = " (warm-up)"
			}
			fmt.Fprintf(out, "\r\x1b[K%s%s %5.1fs  %s ops/s  p99 %s  failed %d", label, phase, now.Sub(start).Seconds(),
				formatRate(rate), formatMicros(iv.quantile(99)), fails)
			last, lastOps = now, ops
		}
	}
}

// collect merges the workers' counters into a Result.
func collect(target string, cfg *Config, workers []*worker, elapsed time.Duration) *Result {
	r := &Result{
		Target: target, Workload: cfg.Workload, Clients: cfg.Clients,
		Params: Params{
			Keys: cfg.Keys, ValueSize: cfg.ValueSize, Distribution: cfg.Distribution,
			WarmupS: cfg.Warmup.Seconds(), Ops: cfg.Ops,
		},
		Elapsed: elapsed.Seconds(),
		Aborts:  map[string]int64{}, Errors: map[string]int64{}, ErrorSamples: map[string]string{},
	}
	if cfg.Ops == 0 {
		r.Params.DurationS = cfg.Duration.Seconds()
	}
	if cfg.Workload == WorkloadTxn {
		r.Params.TxnKeys, r.Params.CrossShard = cfg.TxnKeys, cfg.CrossShard
	}
	if cfg.Workload == WorkloadScan {
		r.Params.ScanKeys = cfg.ScanKeys
	}
	if cfg.Distribution == Zipfian {
		r.Params.Theta = cfg.Theta
	}
	all := newLatencyHist()
	kinds := opKinds(cfg.Workload)
	byKind := make([]*latencyHist, len(kinds))
	for i := range byKind {
		byKind[i] = newLatencyHist()
	}
	for _, w := range workers {
		r.Attempts += w.attempts
		r.Unknown += w.unknown
		for k, v := range w.aborts {
			r.Aborts[k] += v
		}
		for k, v := range w.errs {
			r.Errors[k] += v
		}
		for k, v := range w.samples {
			if _, ok := r.ErrorSamples[k]; !ok {
				r.ErrorSamples[k] = v
			}
		}
		for i, h := range w.hists {
			byKind[i].merge(h)
			all.merge(h)
		}
	}
	r.Ops = all.count()
	secs := elapsed.Seconds()
	if secs > 0 {
		r.Throughput = float64(r.Ops) / secs
	}
	r.Latency = all.summary()
	for i, k := range kinds {
		st := OpStats{Op: k, Ops: byKind[i].count(), Latency: byKind[i].summary()}
		if secs > 0 {
			st.Throughput = float64(st.Ops) / secs
		}
		r.ByOp = append(r.ByOp, st)
	}
	return r
}

// keySpaceFor builds the key space of cfg's workload on t's shards and checks that every shard
// has enough keys for one transaction.
func keySpaceFor(t Target, cfg *Config) (*keySpace, error) {
	m := t.Shards()
	if m == nil {
		m = defaultShards()
	}
	ks, err := newKeySpace(cfg.Workload.keyPrefix(), cfg.Keys, m, cfg.Distribution, cfg.Theta)
	if err != nil {
		return nil, err
	}
	if cfg.Workload == WorkloadTxn {
		for s, idx := range ks.byShard {
			if len(idx) < cfg.TxnKeys {
				return nil, fmt.Errorf("bench: shard %s has %d keys, fewer than the %d keys of a transaction: use more keys", m.Names()[s], len(idx), cfg.TxnKeys)
			}
		}
	}
	return ks, nil
}

// PreloadStats says what Preload wrote.
type PreloadStats struct {
	Keys    int
	Elapsed time.Duration
}

// Preload writes every key of cfg's workload's key space to t: opaque values of cfg.ValueSize
// bytes, or a balance of 1000 for the cas accounts. Keys are written in transactions of up to
// 100 keys of one shard by 8 concurrent sessions; a failed batch is retried up to 5 times
// (rewriting a batch is harmless).
func Preload(ctx context.Context, t Target, cfg Config) (PreloadStats, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return PreloadStats{}, err
	}
	ks, err := keySpaceFor(t, &cfg)
	if err != nil {
		return PreloadStats{}, err
	}
	return preload(ctx, t, &cfg, ks)
}

func preload(ctx context.Context, t Target, cfg *Config, ks *keySpace) (PreloadStats, error) {
	start := time.Now()
	batch := min(100, max(1, (512<<10)/(cfg.ValueSize+len(ks.prefix)+keyDigits)))
	var batches [][]int
	for _, idx := range ks.byShard {
		for i := 0; i < len(idx); i += batch {
			b := make([]int, 0, batch)
			for _, k := range idx[i:min(i+batch, len(idx))] {
				b = append(b, int(k))
			}
			batches = append(batches, b)
		}
	}
	sort.Slice(batches, func(i, j int) bool { return batches[i][0] < batches[j][0] })
	value := make([]byte, cfg.ValueSize)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	if cfg.Workload == WorkloadCAS {
		value = strconv.AppendInt(nil, initialBalance, 10)
	}
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for i := 0; i < min(8, len(batches)); i++ {
		sess, err := t.NewSession(ctx, i)
		if err != nil {
			wg.Wait()
			return PreloadStats{}, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer sess.Close()
			for {
				n := int(next.Add(1)) - 1
				if n >= len(batches) || ctx.Err() != nil {
					return
				}
				keys := make([][]byte, len(batches[n]))
				vals := make([][]byte, len(batches[n]))
				for j, k := range batches[n] {
					keys[j], vals[j] = ks.key(k), value
				}
				var err error
				for try := 0; try < 5; try++ {
					opCtx, cancel := context.WithTimeout(ctx, cfg.OpTimeout)
					err = sess.Txn(opCtx, keys, vals)
					cancel()
					if err == nil {
						break
					}
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("bench: preload %s keys on %s: %w", ks.prefix, t.Name(), err)
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return PreloadStats{Keys: ks.n, Elapsed: time.Since(start)}, firstErr
}
