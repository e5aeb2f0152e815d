package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kvtx/kvtx/cmd/internal/cluster"
	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/client"
)

// Config describes one chaos run: one cluster, one fault kind, every workload.
type Config struct {
	// Binaries are the programs to run (cluster.Build); the kinds that may cut the power
	// (NeedsPowerLoss) also use its lossyfs, the others keep plain data directories.
	Binaries cluster.Binaries
	// Dir receives the cluster's files, the report and, on a linearizability failure,
	// porcupine's visualization.
	Dir string
	// Fault is the kind of fault injected.
	Fault FaultKind
	// Seed drives the fault schedule and the clients' choices; the same seed replays the
	// same schedule.
	Seed uint64
	// FaultDuration is how long faults are injected (default 20s); QuietDuration how long the
	// clients keep running after the heal (default 3s).
	FaultDuration, QuietDuration time.Duration
	// Nodes is the number of shard nodes (default 2).
	Nodes int
	// CommitProtocol is the cluster's commit_protocol (default: the built-in default, parallel).
	CommitProtocol string
	// Clients per workload (defaults: bank 3, append 2, register 3).
	BankClients, AppendClients, RegisterClients int
	// PorcupineTimeout bounds the linearizability check (default 60s).
	PorcupineTimeout time.Duration
	// RecoveryTimeout bounds the wait for in-doubt transactions to resolve after a heal
	// (default 30s); past it the run fails.
	RecoveryTimeout time.Duration
	// Logf, if set, receives progress lines.
	Logf func(format string, args ...any)
}

func (c *Config) setDefaults() {
	if c.FaultDuration <= 0 {
		c.FaultDuration = 20 * time.Second
	}
	if c.QuietDuration <= 0 {
		c.QuietDuration = 3 * time.Second
	}
	if c.Nodes <= 0 {
		c.Nodes = 2
	}
	if c.BankClients <= 0 {
		c.BankClients = 3
	}
	if c.AppendClients <= 0 {
		c.AppendClients = 2
	}
	if c.RegisterClients <= 0 {
		c.RegisterClients = 3
	}
	if c.PorcupineTimeout <= 0 {
		c.PorcupineTimeout = 60 * time.Second
	}
	if c.RecoveryTimeout <= 0 {
		c.RecoveryTimeout = 30 * time.Second
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
}

// runner is the state of one Run.
type runner struct {
	cfg     Config
	c       *cluster.Cluster
	admin   *client.Client // direct to the master, for status and final reads
	rec     *Recorder
	blaster *Blaster
	hostile *Hostile
	report  *Report

	// down holds, for each process whose last restart failed, how many failed in a row and
	// when to try again. Only the goroutine that runs the steps uses it.
	down map[string]*downState

	mu      sync.Mutex
	events  []Event
	resolve []time.Duration
	watches sync.WaitGroup
}

// downState is a process that does not come back: restarts back off, up to maxRestartBackoff.
type downState struct {
	failures int
	next     time.Time
}

// maxRestartBackoff bounds the wait between two restarts of a process that keeps failing.
const maxRestartBackoff = 5 * time.Second

func (r *runner) event(kind, target, detail string) {
	r.mu.Lock()
	r.events = append(r.events, Event{At: time.Now(), Kind: kind, Target: target, Detail: detail})
	r.mu.Unlock()
	r.cfg.Logf("chaos: %s %s %s", kind, target, detail)
}

// Run starts a cluster, runs every workload under the configured faults, heals, waits for
// recovery, checks the history and returns the report. The error is for a run that could not
// be carried out (a binary that does not start); violations are in the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	r := &runner{cfg: cfg, rec: &Recorder{}, down: map[string]*downState{}}
	rep := &Report{Fault: cfg.Fault, Seed: cfg.Seed, FaultDuration: cfg.FaultDuration, QuietDuration: cfg.QuietDuration, Dir: cfg.Dir}
	r.report = rep
	started := time.Now()
	if NeedsPowerLoss(cfg.Fault) {
		rep.invariant(invPowerCut)
	}
	c, err := cluster.New(cluster.Config{
		Binaries: cfg.Binaries, Dir: filepath.Join(cfg.Dir, "cluster"), Nodes: cfg.Nodes,
		FaultProxies: true, LossyDisks: NeedsPowerLoss(cfg.Fault), CommitProtocol: cfg.CommitProtocol,
	})
	if err != nil {
		return nil, err
	}
	r.c = c
	r.blaster = NewBlaster(c)
	r.hostile = NewHostile(c)
	defer c.Close() // for a run that ends early; a finished one has closed it
	if err := c.StartAll(ctx); err != nil {
		return nil, err
	}
	if r.admin, err = dial(ctx, c, c.Config().Master.DialAddr(), "chaos-admin"); err != nil {
		return nil, fmt.Errorf("chaos: dial master: %w", err)
	}
	defer r.admin.Close()
	sm := c.Config().ShardMap()
	reg := NewRegister(sm, 4)
	reg.Timeout, reg.Dir = cfg.PorcupineTimeout, cfg.Dir
	workloads := []struct {
		w       Workload
		clients int
	}{{NewBank(sm, 8, 100), cfg.BankClients}, {NewAppend(sm, 3), cfg.AppendClients}, {reg, cfg.RegisterClients}}
	for _, w := range workloads {
		if err := w.w.Setup(ctx, r.admin); err != nil {
			return nil, err
		}
	}
	steps := Schedule(cfg.Fault, cfg.Seed, cfg.FaultDuration, cfg.Nodes, c.Config().Timeouts)
	for _, s := range steps {
		rep.Schedule = append(rep.Schedule, s.String())
	}

	// Clients run until stop is closed; an operation in flight then finishes normally.
	stop := make(chan struct{})
	var clients sync.WaitGroup
	for wi, w := range workloads {
		for i := 0; i < w.clients; i++ {
			clients.Add(1)
			go func(w Workload, id int, stream uint64) {
				defer clients.Done()
				rng := rand.New(rand.NewPCG(cfg.Seed, stream))
				var cl *client.Client
				for n := 0; n < 1_000_000; n++ {
					select {
					case <-stop:
						if cl != nil {
							cl.Close()
						}
						return
					default:
					}
					if cl == nil {
						dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
						cl, _ = dial(dctx, c, c.ClientAddr(), fmt.Sprintf("chaos-%s-%d", w.Name(), id))
						cancel()
						if cl == nil {
							time.Sleep(100 * time.Millisecond)
							continue
						}
					}
					if err := w.Step(context.Background(), cl, rng, id, r.rec); errors.Is(err, client.ErrUnavailable) {
						time.Sleep(time.Duration(10+rng.IntN(40)) * time.Millisecond) // do not spin while the master is unreachable
					}
				}
			}(w.w, i, uint64(wi)<<32|uint64(i))
		}
	}

	// Faulty phase.
	faultStart := time.Now()
	r.execute(ctx, faultStart, steps)
	if d := time.Until(faultStart.Add(cfg.FaultDuration)); d > 0 {
		r.supervise(d)
	}
	// Heal everything.
	healAt := time.Now()
	r.heal()
	rep.FaultPhase = healAt.Sub(faultStart)
	r.supervise(cfg.QuietDuration)
	stopAt := time.Now()
	close(stop)
	clients.Wait()
	r.watches.Wait()
	// No prepared transaction may be left once everything is back.
	quietIn, quietErr := r.waitNoPrepared(cfg.RecoveryTimeout)
	rep.invariant(invNoPrepared)
	if quietErr != nil {
		rep.violate(invNoPrepared, quietErr.Error())
	}
	rep.FinalQuiet = quietIn

	// Resolve every write through its markers, then check. A cluster that cannot be read
	// (a process that does not come back) fails the run with what it could check.
	rep.invariant(invFinalReads)
	markersErr := r.readMarkers(ctx)
	ops := r.rec.Ops()
	if markersErr != nil {
		rep.ChecksSkipped = "the markers could not be read after healing"
		rep.violate(invFinalReads, markersErr.Error()+"; the write checks were skipped")
	} else {
		for _, w := range workloads {
			if err := w.w.Check(ctx, r.admin, ops, rep); err != nil {
				rep.violate(invFinalReads, fmt.Sprintf("%s: %v; its checks were skipped", w.w.Name(), err))
			}
		}
		r.checkMarkers(ops)
	}
	r.summarize(ops, faultStart, healAt, stopAt)

	unclean := c.StopAll(10 * time.Second)
	disksErr := c.Close()
	rep.invariant(invNoCrash)
	rep.invariant(invRestart)
	rep.invariant(invCleanShutdown)
	for _, e := range c.Exits() {
		rep.Exits = append(rep.Exits, e)
		if !e.Expected {
			rep.violate(invNoCrash, fmt.Sprintf("%s run %d exited by itself at %s: %v", e.Name, e.Run, e.At.Format("15:04:05.000"), e.Err))
		}
	}
	for _, n := range unclean {
		rep.violate(invCleanShutdown, n+" did not exit 0 within 10s of SIGTERM")
	}
	for _, err := range joined(disksErr) {
		rep.violate(invCleanShutdown, err.Error()) // a lossy file system that did not unmount
	}
	rep.Blasts = r.blaster.Summary()
	rep.Hostile = r.hostile.Summary()
	if r.cfg.Fault == FaultBlaster || r.cfg.Fault == FaultHostile || r.cfg.Fault == FaultMixed {
		r.hostile.check(rep)
	}
	rep.Total = time.Since(started)
	return rep, nil
}

// Invariant names of the runner.
const (
	invNoPrepared    = "recovery: no prepared transaction left after healing"
	invResolved      = "recovery: in-doubt transactions resolve after each heal"
	invNoCrash       = "processes: no exit the runner did not cause"
	invFinalReads    = "checks: the final state is readable after healing"
	invRestart       = "processes: every restart succeeds"
	invPowerCut      = "powerloss: every power cut completes (remount)"
	invHalfApplied   = "writes: no write half applied (markers of every shard agree)"
	invCleanShutdown = "processes: clean exit on SIGTERM at the end"
	invMarkerAcked   = "writes: acknowledged write durable (marker read back)"
	invMarkerFailed  = "writes: failed write invisible (marker absent)"
)

// supervise waits d, restarting every process that is down (an exit the runner did not
// cause, since every step restarts what it stops).
func (r *runner) supervise(d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		r.ensureUp()
		time.Sleep(min(100*time.Millisecond, time.Until(end)))
	}
}

func (r *runner) ensureUp() {
	for _, n := range r.c.Names() {
		if r.c.Running(n) {
			continue
		}
		if d := r.down[n]; d != nil && time.Now().Before(d.next) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := r.c.Start(ctx, n)
		cancel()
		if err != nil {
			r.restartFailed(n, err)
			continue
		}
		r.restarted(n)
		r.event("restart", n, "was down")
		r.watchResolve("restart "+n, time.Now())
	}
}

// heal undoes every fault: links pass, paused processes continue, dead or armed processes
// restart without crash points (at once, whatever their back-off).
func (r *runner) heal() {
	r.c.HealNetwork()
	for _, d := range r.down {
		d.next = time.Time{}
	}
	for _, n := range r.c.Names() {
		r.c.Resume(n)
		if r.c.Armed(n) != "" && r.c.Running(n) {
			_ = r.c.Stop(n, 5*time.Second) // an armed process may not stop cleanly
		}
	}
	r.ensureUp()
	r.event("heal", "all", "")
	r.watchResolve("final heal", time.Now())
}

func (r *runner) sleepUntil(t time.Time) {
	if d := time.Until(t); d > 0 {
		r.supervise(d)
	}
}

// execute runs the steps in order, each no earlier than its time.
func (r *runner) execute(ctx context.Context, start time.Time, steps []Step) {
	for i, s := range steps {
		if ctx.Err() != nil {
			return
		}
		r.sleepUntil(start.Add(s.At))
		r.ensureUp()
		r.report.Faults = append(r.report.Faults, string(s.Kind)+" "+s.Target)
		switch s.Kind {
		case FaultPowerLoss:
			targets := r.powerCut(s)
			time.Sleep(s.Hold)
			for _, t := range targets {
				r.restart(t, "after power cut")
			}
		case FaultKill:
			targets := []string{s.Target}
			if s.Target == AllTargets {
				targets = r.c.Names()
			}
			r.c.Kill(targets...)
			for _, t := range targets {
				r.event("kill", t, "SIGKILL")
			}
			time.Sleep(s.Hold)
			for _, t := range targets {
				r.restart(t, "after SIGKILL")
			}
		case FaultCrashPoint:
			_ = r.c.Stop(s.Target, 5*time.Second) // to restart it armed
			point := fmt.Sprintf("%s:%d", s.Point, s.N)
			sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			err := r.c.StartArmed(sctx, s.Target, point)
			cancel()
			if err != nil {
				r.event("arm-failed", s.Target, err.Error())
				continue
			}
			r.event("armed", s.Target, point)
			wctx, cancel := context.WithTimeout(ctx, s.Hold)
			_, err = r.c.WaitExit(wctx, s.Target)
			cancel()
			if err == nil {
				r.event("crashpoint", s.Target, point+" fired")
				r.report.CrashPointsFired = append(r.report.CrashPointsFired, point)
				time.Sleep(time.Duration(100+rand.IntN(500)) * time.Millisecond)
			} else {
				r.event("crashpoint-missed", s.Target, point+" not reached in "+s.Hold.String())
				r.report.CrashPointsMissed = append(r.report.CrashPointsMissed, point)
				_ = r.c.Stop(s.Target, 5*time.Second) // an armed process may not stop cleanly
			}
			r.restart(s.Target, "without crash point")
		case FaultPartition:
			links := r.links(s.Target)
			for _, p := range links {
				p.SetMode(s.Mode, s.Delay)
			}
			r.event("partition", s.Target, s.Mode.String())
			time.Sleep(s.Hold)
			for _, p := range links {
				p.SetMode(cluster.Pass, 0)
			}
			r.event("heal", s.Target, "")
			r.watchResolve("heal "+s.Target, time.Now())
		case FaultPause:
			r.c.Pause(s.Target)
			r.event("pause", s.Target, "SIGSTOP")
			time.Sleep(s.Hold)
			r.c.Resume(s.Target)
			r.event("resume", s.Target, "SIGCONT")
			r.watchResolve("resume "+s.Target, time.Now())
		case FaultBlaster:
			bctx, cancel := context.WithTimeout(ctx, s.Hold)
			r.event("blast", s.Target, s.Attack)
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.hostile.Run(bctx, r.cfg.Seed+uint64(i)<<8+255)
			}()
			for j, port := range blastTargets(r.c.Names()) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r.blaster.Blast(bctx, port, s.Attack, r.cfg.Seed+uint64(i)<<8+uint64(j))
				}()
			}
			wg.Wait()
			cancel()
		case FaultHostile:
			hctx, cancel := context.WithTimeout(ctx, s.Hold)
			r.event("hostile", s.Target, "")
			r.hostile.Run(hctx, r.cfg.Seed+uint64(i)<<8)
			cancel()
		}
	}
}

// links returns the proxies of a partition's target: one link, or both of "master-NODE".
func (r *runner) links(target string) []*cluster.Proxy {
	if p := r.c.Proxy(target); p != nil {
		return []*cluster.Proxy{p} // one link, one way
	}
	node := strings.TrimPrefix(target, "master-")
	return []*cluster.Proxy{r.c.Proxy(cluster.MasterToNode(node)), r.c.Proxy(cluster.NodeToMaster(node))}
}

// dial returns a client of c's master at addr: the client->master proxy for the workloads,
// the master itself for the runner's own checks. Over TLS (the proxies forward its bytes) the
// client certificate names it; without, name does.
func dial(ctx context.Context, c *cluster.Cluster, addr, name string) (*client.Client, error) {
	o := client.Options{DialTimeout: 2 * time.Second, Timeout: 5 * time.Second, Name: name, TLS: c.ClientTLS(txn.MasterName), ExplainTLS: c.TLSRefusal}
	if o.TLS != nil {
		o.Name = ""
	}
	return client.Dial(ctx, addr, o)
}

// joined returns the errors an errors.Join holds, or err alone.
func joined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err != nil {
		return []error{err}
	}
	return nil
}

func (r *runner) restart(name, why string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.c.Start(ctx, name); err != nil {
		r.restartFailed(name, err)
		return
	}
	r.restarted(name)
	r.event("restart", name, why)
	r.watchResolve("restart "+name, time.Now())
}

// restartFailed records a process that did not come back: an event (with the error's whole
// text, the log's tail, the first time in a row), a violation with the error's first line and
// the log to read, and a back-off before the next try.
func (r *runner) restartFailed(name string, err error) {
	d := r.down[name]
	if d == nil {
		d = &downState{}
		r.down[name] = d
	}
	d.failures++
	d.next = time.Now().Add(min(maxRestartBackoff, 250*time.Millisecond<<min(d.failures, 8)))
	first, _, _ := strings.Cut(err.Error(), "\n")
	// The error's first line says how the start failed; the log tail's last line, why.
	why := ""
	if lines := strings.Split(strings.TrimSpace(err.Error()), "\n"); len(lines) > 1 {
		why = ": " + strings.TrimSpace(lines[len(lines)-1])
	}
	detail := err.Error()
	if d.failures > 1 {
		detail = fmt.Sprintf("%s%s (%d failures in a row)", first, why, d.failures)
	}
	r.event("restart-failed", name, detail)
	r.report.violate(invRestart, fmt.Sprintf("%s at %s: %s%s (log %s)", name, time.Now().Format("15:04:05.000"), first, why, r.c.LastLog(name)))
}

// restarted ends a process's back-off.
func (r *runner) restarted(name string) { delete(r.down, name) }

// powerCut kills the targets and cuts their machines' power, recording each cut.
func (r *runner) powerCut(s Step) []string {
	targets := []string{s.Target}
	if s.Target == AllTargets {
		targets = r.c.Names()
	}
	start := time.Now()
	sums, err := r.c.PowerCut(targets...)
	took := time.Since(start).Round(time.Millisecond)
	rep := r.report
	rep.mu.Lock()
	rep.PowerCutSteps++
	if s.Target == AllTargets {
		rep.WholeClusterCuts++
	}
	if rep.PowerCuts == nil {
		rep.PowerCuts = map[string]int{}
	}
	for _, t := range targets {
		sum, ok := sums[t]
		if !ok {
			continue
		}
		rep.PowerCuts[t]++
		rep.PowerCutLost.FilesRestored += sum.FilesRestored
		rep.PowerCutLost.EntriesDropped += sum.EntriesDropped
		rep.PowerCutLost.EntriesRestored += sum.EntriesRestored
		rep.PowerCutLost.BytesUndone += sum.BytesUndone
	}
	rep.mu.Unlock()
	for _, t := range targets {
		if sum, ok := sums[t]; ok {
			r.event("powercut", t, fmt.Sprintf("SIGKILL, then %s (%s for the cut)", sum, took))
		}
	}
	if err != nil {
		r.event("powercut-failed", s.Target, err.Error())
		rep.violate(invPowerCut, err.Error())
	}
	return targets
}

// watchResolve measures, in the background, how long the transactions prepared at a heal
// take to resolve: it takes the set of prepared transactions on every node once the master
// answers, and waits until none of them is left.
func (r *runner) watchResolve(what string, at time.Time) {
	r.watches.Add(1)
	go func() {
		defer r.watches.Done()
		deadline := at.Add(r.cfg.RecoveryTimeout)
		var pending map[string]bool
		last := ""
		for time.Now().Before(deadline) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			procs, err := r.admin.Status(ctx)
			cancel()
			if err != nil {
				last = err.Error()
				time.Sleep(50 * time.Millisecond)
				continue
			}
			now := map[string]bool{}
			allUp := true
			for _, p := range procs {
				if !p.Up {
					allUp = false
				}
				for _, t := range p.Prepared {
					if p.Role == "node" {
						now[fmt.Sprintf("%s/%d", p.Name, t.TxnID)] = true
					}
				}
			}
			if pending == nil {
				if !allUp {
					// A node the transactions need is still down: not healed yet.
					last = "a node is down"
					time.Sleep(50 * time.Millisecond)
					continue
				}
				pending = now
			}
			left := 0
			for k := range pending {
				if now[k] {
					left++
				}
			}
			if left == 0 {
				r.mu.Lock()
				r.resolve = append(r.resolve, time.Since(at))
				r.mu.Unlock()
				return
			}
			last = fmt.Sprintf("%d of %d prepared transactions left", left, len(pending))
			time.Sleep(50 * time.Millisecond)
		}
		r.mu.Lock()
		r.report.invariant(invResolved)
		r.report.violate(invResolved, fmt.Sprintf("%s: not resolved within %s: %s", what, r.cfg.RecoveryTimeout, last))
		r.mu.Unlock()
	}()
}

// waitNoPrepared waits until every process is up with no prepared transaction and no lock.
func (r *runner) waitNoPrepared(d time.Duration) (time.Duration, error) {
	start := time.Now()
	last := ""
	for time.Since(start) < d {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		procs, err := r.admin.Status(ctx)
		cancel()
		if err == nil {
			quiet := true
			var b strings.Builder
			for _, p := range procs {
				fmt.Fprintf(&b, "%s up=%v locks=%d prepared=%d in_doubt=%d; ", p.Name, p.Up, p.LocksHeld, len(p.Prepared), p.InDoubt)
				if !p.Up || p.LocksHeld != 0 || len(p.Prepared) != 0 {
					quiet = false
				}
			}
			if quiet {
				return time.Since(start), nil
			}
			last = b.String()
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start), fmt.Errorf("still not quiet after %s: %s", d, last)
}

// ErrViolations is returned by Report.Err when an invariant was violated.
var ErrViolations = errors.New("chaos: invariants violated")
