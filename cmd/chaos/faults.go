package chaos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/kvtx/kvtx/cmd/internal/cluster"
	"github.com/kvtx/kvtx/txn"
)

// FaultKind selects what a run injects.
type FaultKind string

// Fault kinds.
const (
	// FaultNone injects nothing (a baseline).
	FaultNone FaultKind = "none"
	// FaultKill SIGKILLs a random process (one time in five: every process at once) at random
	// times and restarts it after a random delay.
	FaultKill FaultKind = "kill"
	// FaultCrashPoint restarts a process with KVTX_CRASH_AT=POINT:N for every crash point in
	// turn (N random), waits for it to kill itself, and restarts it without the variable.
	FaultCrashPoint FaultKind = "crashpoint"
	// FaultPartition cuts (blackhole or reset) or slows (delay) the links between the master
	// and one node (one way or both), or between the clients and the master, for a random time.
	FaultPartition FaultKind = "partition"
	// FaultPause SIGSTOPs the master or a node for longer than every protocol timeout.
	FaultPause FaultKind = "pause"
	// FaultBlaster sends malformed, oversized, wrong-type and slow frames to every port, and
	// meanwhile runs the hostile client (FaultHostile).
	FaultBlaster FaultKind = "blaster"
	// FaultHostile runs the hostile client alone: valid requests with the client certificate
	// that cost the cluster most or reach past what a client may do (Hostile), each checked
	// for the refusal it must get. Not in AllFaults: every blaster step runs it too.
	FaultHostile FaultKind = "hostile"
	// FaultPowerLoss SIGKILLs a random process (one time in four, and at least once in a run
	// of two steps or more: every process at once) at random times, then cuts the power of its
	// machine (each process's data directory is on a lossy file system of its own, which
	// forgets every write that was not fsynced), and restarts it after a random delay.
	FaultPowerLoss FaultKind = "powerloss"
	// FaultMixed draws each step from every kind above.
	FaultMixed FaultKind = "mixed"
)

// AllFaults are the kinds a full run covers, in order.
var AllFaults = []FaultKind{FaultKill, FaultCrashPoint, FaultPartition, FaultPause, FaultBlaster, FaultPowerLoss}

// NeedsPowerLoss reports whether a run of kind may cut the power (powerloss, or mixed, which
// draws it): its cluster then puts every data directory on a lossy file system.
func NeedsPowerLoss(kind FaultKind) bool {
	return kind == FaultPowerLoss || kind == FaultMixed
}

// ParseFaultKind checks a kind name.
func ParseFaultKind(s string) (FaultKind, error) {
	k := FaultKind(s)
	if k == FaultNone || k == FaultMixed || k == FaultHostile || slices.Contains(AllFaults, k) {
		return k, nil
	}
	return "", fmt.Errorf("chaos: unknown fault kind %q (want none, mixed, hostile or one of %v)", s, AllFaults)
}

// Step is one scheduled fault: at At after the start of the faulty phase, do Kind to Target
// for Hold, then heal.
type Step struct {
	At     time.Duration
	Kind   FaultKind
	Target string            // a process, a link (cluster.ClientToMaster, ...) or both links "master-node1"
	Mode   cluster.ProxyMode // partitions: Blackhole, Reset or Delay
	Hold   time.Duration     // how long the fault lasts before the heal (restart delay for kills)
	Delay  time.Duration     // partitions in Delay mode: the added latency
	Point  string            // crash points: the point
	N      int               // crash points: the Nth time
	Attack string            // blaster: which bad input, "all" for every kind
}

// String describes the step in one line.
func (s Step) String() string {
	switch s.Kind {
	case FaultKill:
		return fmt.Sprintf("+%-7s kill %s, restart after %s", s.At.Round(time.Millisecond), s.Target, s.Hold.Round(time.Millisecond))
	case FaultPowerLoss:
		what := s.Target
		if s.Target == AllTargets {
			what = "every machine"
		}
		return fmt.Sprintf("+%-7s power cut %s (SIGKILL, unsynced writes lost), restart after %s", s.At.Round(time.Millisecond), what, s.Hold.Round(time.Millisecond))
	case FaultCrashPoint:
		return fmt.Sprintf("+%-7s crash %s at %s:%d (wait up to %s), restart after it fires", s.At.Round(time.Millisecond), s.Target, s.Point, s.N, s.Hold.Round(time.Millisecond))
	case FaultPartition:
		mode := s.Mode.String()
		if s.Mode == cluster.Delay {
			mode += " " + s.Delay.String()
		}
		return fmt.Sprintf("+%-7s partition %s (%s) for %s", s.At.Round(time.Millisecond), s.Target, mode, s.Hold.Round(time.Millisecond))
	case FaultPause:
		return fmt.Sprintf("+%-7s SIGSTOP %s for %s", s.At.Round(time.Millisecond), s.Target, s.Hold.Round(time.Millisecond))
	case FaultBlaster:
		return fmt.Sprintf("+%-7s blast %s with %s and hostile requests for %s", s.At.Round(time.Millisecond), s.Target, s.Attack, s.Hold.Round(time.Millisecond))
	case FaultHostile:
		return fmt.Sprintf("+%-7s hostile requests to %s for %s", s.At.Round(time.Millisecond), s.Target, s.Hold.Round(time.Millisecond))
	}
	return fmt.Sprintf("+%s %s", s.At, s.Kind)
}

// Schedule derives the fault steps of a run from its seed: the same seed, kind, duration and
// cluster size give the same steps. Steps do not overlap; each leaves the cluster healed.
func Schedule(kind FaultKind, seed uint64, d time.Duration, nodes int, timeouts txn.Timeouts) []Step {
	rng := rand.New(rand.NewPCG(seed, hashKind(kind)))
	names := []string{txn.MasterName}
	for i := 1; i <= nodes; i++ {
		names = append(names, fmt.Sprintf("node%d", i))
	}
	maxTimeout := max(timeouts.Prepare, timeouts.CommitWait, timeouts.LockWait, timeouts.Request, timeouts.InDoubt)
	points := slices.Clone(txn.CrashPoints)
	rng.Shuffle(len(points), func(i, j int) { points[i], points[j] = points[j], points[i] })
	attacks := append([]string{"all"}, attackNames()...)
	var steps []Step
	at := 300 * time.Millisecond
	ncrash := 0
	dur := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo)+1)) }
	for at < d {
		k := kind
		if kind == FaultMixed {
			k = AllFaults[rng.IntN(len(AllFaults))]
		}
		s := Step{At: at, Kind: k}
		advance := time.Duration(0) // how long the step is expected to take, when not Hold
		switch k {
		case FaultKill:
			s.Target = names[rng.IntN(len(names))]
			if rng.IntN(5) == 0 {
				s.Target = AllTargets // every process at once: a whole-cluster crash
			}
			s.Hold = dur(100*time.Millisecond, 1500*time.Millisecond)
		case FaultPowerLoss:
			s.Target = names[rng.IntN(len(names))]
			if rng.IntN(4) == 0 {
				s.Target = AllTargets // the whole rack loses power
			}
			s.Hold = dur(100*time.Millisecond, 1500*time.Millisecond)
			// The remount after the cut and the restart on a FUSE mount take about this long.
			advance = s.Hold + powerCutCost
		case FaultCrashPoint:
			s.Point = points[ncrash%len(points)]
			ncrash++
			if strings.HasPrefix(s.Point, "master.") {
				s.Target = txn.MasterName
			} else {
				s.Target = names[1+rng.IntN(nodes)]
			}
			s.N = 1 + rng.IntN(3)
			s.Hold = 4 * time.Second // the longest the armed process is given to reach the point
			advance = time.Second    // it usually fires at once under load
		case FaultPartition:
			node := names[1+rng.IntN(nodes)]
			switch rng.IntN(6) {
			case 0, 1:
				s.Target = cluster.ClientToMaster
			case 2:
				s.Target = cluster.MasterToNode(node) // the master's requests to the node (and their replies)
			case 3:
				s.Target = cluster.NodeToMaster(node) // the node's outcome questions
			default:
				s.Target = "master-" + node // both
			}
			s.Mode = cluster.Blackhole
			switch rng.IntN(6) {
			case 0, 1:
				s.Mode = cluster.Reset
			case 2:
				s.Mode = cluster.Delay
				s.Delay = dur(20*time.Millisecond, 400*time.Millisecond)
			}
			// Sometimes longer than a client's deadline, so that stalled requests arrive late.
			s.Hold = dur(500*time.Millisecond, OpTimeout+2*time.Second)
		case FaultPause:
			s.Target = names[rng.IntN(len(names))]
			s.Hold = dur(maxTimeout+500*time.Millisecond, maxTimeout+1500*time.Millisecond)
		case FaultBlaster:
			s.Target = "every port"
			s.Attack = "all"
			if rng.IntN(2) == 0 {
				s.Attack = attacks[rng.IntN(len(attacks))]
			}
			s.Hold = dur(1000*time.Millisecond, 2500*time.Millisecond)
		case FaultHostile:
			s.Target = "master and nodes"
			s.Hold = dur(1000*time.Millisecond, 2500*time.Millisecond)
		default:
			return nil
		}
		steps = append(steps, s)
		// The next step starts after this one's hold and a quiet gap.
		if advance == 0 {
			advance = s.Hold
		}
		at += advance + dur(300*time.Millisecond, 1200*time.Millisecond)
	}
	if kind == FaultPowerLoss && len(steps) >= 2 && !slices.ContainsFunc(steps, func(s Step) bool { return s.Target == AllTargets }) {
		// Even a short run cuts the power of the whole cluster once.
		steps[len(steps)-1].Target = AllTargets
	}
	return steps
}

// AllTargets is the Target of a kill or power cut of every process at once.
const AllTargets = "all"

// powerCutCost is what a power cut adds to a kill in the schedule: the remount of the lost
// file systems and a restart on them.
const powerCutCost = 700 * time.Millisecond

func hashKind(k FaultKind) uint64 {
	var h uint64 = 14695981039346656037
	for _, b := range []byte(k) {
		h ^= uint64(b)
		h *= 1099511628211
	}
	return h
}
