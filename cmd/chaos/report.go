package chaos

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kvtx/kvtx/cmd/internal/cluster"
	"github.com/kvtx/kvtx/cmd/lossyfs/lossy"
)

// Report is the outcome of one Run: what was injected, what the clients saw, how long recovery
// took, and every invariant with its violations. Its methods are safe for concurrent use.
type Report struct {
	// Fault and Seed identify the run; the same seed replays the fault schedule.
	Fault FaultKind
	Seed  uint64
	// FaultDuration and QuietDuration are the configured phases; FaultPhase the real faulty
	// phase (it ends after the last step), Total the whole run.
	FaultDuration, QuietDuration, FaultPhase, Total time.Duration
	// Dir holds the cluster's logs and the report files.
	Dir string
	// Schedule lists the planned steps; Faults the ones executed; EventCounts the runner's
	// actions by kind; Events every action with its time.
	Schedule    []string
	Faults      []string
	EventCounts []string
	Events      []Event
	// CrashPointsFired and CrashPointsMissed list armed crash points by whether they fired.
	CrashPointsFired, CrashPointsMissed []string
	// Blasts counts the bad inputs sent, by kind; Hostile the hostile client's requests, by
	// kind: sent/answered as due(+answered with an error a fault explains).
	Blasts  string
	Hostile string
	// Power cuts: the steps that cut the power, how many of them cut every machine at once,
	// the cuts by machine, and what the lossy file systems forgot in all.
	PowerCutSteps, WholeClusterCuts int
	PowerCuts                       map[string]int
	PowerCutLost                    lossy.Summary
	// Write transactions: attempted, committed, aborted by reason, unknown, and how many of
	// the unknown ones were applied (their marker was found after healing).
	Attempted, Committed, Unknown, UnknownApplied int
	Aborted                                       map[string]int
	// Acknowledged writes whose markers were read back after healing; of them, the ones with a
	// marker missing (lost); and writes of any outcome with only some of their markers (half
	// applied).
	AckedChecked, Lost, HalfApplied int
	// ChecksSkipped, if set, says why the checks of the final state did not run.
	ChecksSkipped string
	// Reads that returned, and the ones that failed by reason (scans apart).
	ReadsOK    int
	ReadFailed map[string]int
	// Scans that returned, by workload, the keys they read in all, and the ones that failed
	// (part-way or at once) by reason.
	ScansOK    map[string]int
	ScanKeys   int
	ScanFailed map[string]int
	// Throughput: committed writes per second in the faulty and in the quiet phase.
	FaultyTPS, QuietTPS float64
	// Recovery: restart → first commit touching the restarted process; heal → none of the
	// transactions prepared at the heal left; the final wait for a cluster with nothing
	// prepared. NoCommitAfter counts restarts with no commit after them.
	FirstCommitTimes []time.Duration
	NoCommitAfter    int
	ResolveTimes     []time.Duration
	FinalQuiet       time.Duration
	// Exits lists every process exit.
	Exits []cluster.Exit
	// Porcupine is the linearizability verdict.
	Porcupine string
	// Notes are extra lines; Files the files written next to the report.
	Notes []string
	Files []string

	mu         sync.Mutex
	invariants []string
	violations map[string][]string
}

// invariant declares a checked invariant, so that it is listed with zero violations.
func (r *Report) invariant(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Contains(r.invariants, name) {
		r.invariants = append(r.invariants, name)
	}
}

// violate records one violation of an invariant.
func (r *Report) violate(name, detail string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Contains(r.invariants, name) {
		r.invariants = append(r.invariants, name)
	}
	if r.violations == nil {
		r.violations = map[string][]string{}
	}
	r.violations[name] = append(r.violations[name], detail)
}

// Violations returns the number of violations of every invariant.
func (r *Report) Violations() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for _, n := range r.invariants {
		out[n] = len(r.violations[n])
	}
	return out
}

// Err returns nil, or an error matching ErrViolations that names the violated invariants.
func (r *Report) Err() error {
	var bad []string
	for n, c := range r.Violations() {
		if c > 0 {
			bad = append(bad, fmt.Sprintf("%s (%d)", n, c))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	return fmt.Errorf("%w: fault=%s seed=%d: %s", ErrViolations, r.Fault, r.Seed, strings.Join(bad, "; "))
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p * float64(len(s)-1))
	return s[i]
}

func durStats(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n=0"
	}
	return fmt.Sprintf("p50 %s  max %s  (n=%d)", percentile(ds, 0.5).Round(time.Millisecond), slices.Max(ds).Round(time.Millisecond), len(ds))
}

func countMap(m map[string]int) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// String renders the report as a table.
func (r *Report) String() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	verdict := "PASS"
	if r.Err() != nil {
		verdict = "FAIL"
	}
	aborted := 0
	for _, n := range r.Aborted {
		aborted += n
	}
	readFailed := 0
	for _, n := range r.ReadFailed {
		readFailed += n
	}
	w("=== kvtx chaos run: fault=%s seed=%d  %s ===", r.Fault, r.Seed, verdict)
	w("%-26s %s faults (%s planned) + %s quiet; whole run %s", "duration", r.FaultPhase.Round(time.Millisecond), r.FaultDuration, r.QuietDuration, r.Total.Round(time.Millisecond))
	w("%-26s %d steps: %s", "faults injected", len(r.Faults), countStrings(r.Faults))
	w("%-26s %s", "runner actions", strings.Join(r.EventCounts, " "))
	if len(r.CrashPointsFired)+len(r.CrashPointsMissed) > 0 {
		w("%-26s fired %d: %s", "crash points", len(r.CrashPointsFired), strings.Join(r.CrashPointsFired, " "))
		w("%-26s missed %d: %s", "", len(r.CrashPointsMissed), strings.Join(r.CrashPointsMissed, " "))
	}
	if r.Blasts != "" {
		w("%-26s %s", "bad inputs sent", r.Blasts)
	}
	if r.Hostile != "" {
		w("%-26s %s", "hostile requests", r.Hostile)
		w("%-26s %s", "", "(sent/refused or served as due, +failed by a fault)")
	}
	if NeedsPowerLoss(r.Fault) {
		machines := 0
		for _, n := range r.PowerCuts {
			machines += n
		}
		w("%-26s %d steps (%d whole-cluster), %d machines: %s", "power cuts", r.PowerCutSteps, r.WholeClusterCuts, machines, countMap(r.PowerCuts))
		l := r.PowerCutLost
		w("%-26s %d files restored, %d entries dropped, %d brought back, %d bytes undone", "  unsynced state lost", l.FilesRestored, l.EntriesDropped, l.EntriesRestored, l.BytesUndone)
	}
	w("%-26s attempted %d  committed %d  aborted %d  unknown %d", "write transactions", r.Attempted, r.Committed, aborted, r.Unknown)
	w("%-26s %s", "  aborted by reason", countMap(r.Aborted))
	w("%-26s %d applied, %d not applied (read back after healing)", "  unknown resolved as", r.UnknownApplied, r.Unknown-r.UnknownApplied)
	if r.ChecksSkipped != "" {
		w("%-26s NOT CHECKED: %s", "acknowledged writes", r.ChecksSkipped)
	} else {
		w("%-26s checked %d (a marker per shard read back)  lost %d  half-applied %d", "acknowledged writes", r.AckedChecked, r.Lost, r.HalfApplied)
	}
	w("%-26s ok %d  failed %d (%s)", "reads", r.ReadsOK, readFailed, countMap(r.ReadFailed))
	scansOK, scanFailed := 0, 0
	for _, n := range r.ScansOK {
		scansOK += n
	}
	for _, n := range r.ScanFailed {
		scanFailed += n
	}
	w("%-26s ok %d (%s; %d keys, pages of %d)  failed %d (%s)", "scans", scansOK, countMap(r.ScansOK), r.ScanKeys, scanPageSize, scanFailed, countMap(r.ScanFailed))
	w("%-26s faulty %.1f commits/s  quiet %.1f commits/s", "throughput", r.FaultyTPS, r.QuietTPS)
	w("%-26s %s  (%d restarts with no commit after)", "restart -> first commit", durStats(r.FirstCommitTimes), r.NoCommitAfter)
	w("%-26s %s", "heal -> prepared resolved", durStats(r.ResolveTimes))
	w("%-26s %s", "end -> nothing prepared", r.FinalQuiet.Round(time.Millisecond))
	var unexpected []string
	for _, e := range r.Exits {
		if !e.Expected {
			unexpected = append(unexpected, fmt.Sprintf("%s#%d(%v)", e.Name, e.Run, e.Err))
		}
	}
	if len(unexpected) == 0 {
		unexpected = []string{"none"}
	}
	if len(unexpected) > 10 {
		unexpected = append(unexpected[:10], fmt.Sprintf("... %d more", len(unexpected)-10))
	}
	w("%-26s %d exits, unexpected: %s", "process exits", len(r.Exits), strings.Join(unexpected, " "))
	porcupine := r.Porcupine
	if porcupine == "" {
		porcupine = "not run"
	}
	w("%-26s %s", "porcupine", porcupine)
	w("invariants:")
	viol := r.Violations()
	r.mu.Lock()
	invs := slices.Clone(r.invariants)
	details := map[string][]string{}
	for k, v := range r.violations {
		details[k] = slices.Clone(v)
	}
	r.mu.Unlock()
	for _, n := range invs {
		mark := "ok  "
		if viol[n] > 0 {
			mark = "FAIL"
		}
		w("  %s %-56s %d", mark, n, viol[n])
		for i, d := range details[n] {
			if i == 5 {
				w("         ... %d more", len(details[n])-5)
				break
			}
			w("         %s", d)
		}
	}
	for _, n := range r.Notes {
		w("note: %s", n)
	}
	for _, f := range r.Files {
		w("file: %s", f)
	}
	w("replay: make chaos CHAOS_FAULTS=%s CHAOS_SEED=%d CHAOS_SECONDS=%d", r.Fault, r.Seed, int(r.FaultDuration.Seconds()))
	return b.String()
}

func countStrings(xs []string) string {
	m := map[string]int{}
	for _, x := range xs {
		m[x]++
	}
	return countMap(m)
}

// Write saves the report (report.txt), the schedule and the runner's events in r.Dir.
func (r *Report) Write() error {
	if r.Dir == "" {
		return nil
	}
	var ev strings.Builder
	fmt.Fprintln(&ev, "schedule:")
	for _, s := range r.Schedule {
		fmt.Fprintln(&ev, "  "+s)
	}
	fmt.Fprintln(&ev, "events:")
	for _, e := range r.Events {
		fmt.Fprintf(&ev, "  %s %-18s %-14s %s\n", e.At.Format("15:04:05.000"), e.Kind, e.Target, e.Detail)
	}
	if err := os.WriteFile(filepath.Join(r.Dir, "events.txt"), []byte(ev.String()), 0o644); err != nil {
		return fmt.Errorf("chaos: write events: %w", err)
	}
	if err := os.WriteFile(filepath.Join(r.Dir, "report.txt"), []byte(r.String()), 0o644); err != nil {
		return fmt.Errorf("chaos: write report: %w", err)
	}
	return nil
}
