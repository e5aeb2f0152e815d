package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kvtx/kvtx/cmd/internal/cluster"
	"github.com/kvtx/kvtx/txn"
)

// buildBinaries builds kvmaster, kvnode, kvctl and lossyfs for the test's clusters.
func buildBinaries(t *testing.T) cluster.Binaries {
	t.Helper()
	bins, err := cluster.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bins
}

// TestChaos runs every workload under each fault kind and fails on any violated invariant.
func TestChaos(t *testing.T) {
	mode := os.Getenv("CHAOS_MODE")
	if mode == "" {
		mode = "short" // what make chaos-short runs; make unit leaves this test out
	}
	if mode != "short" && mode != "long" {
		t.Fatalf("CHAOS_MODE is %q: want short or long ", mode)
	}
	long := mode == "long"
	bins := buildBinaries(t)
	seconds := 8
	if long {
		seconds = 60
	}
	if s := os.Getenv("CHAOS_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("CHAOS_SECONDS=%q: want a positive number of seconds", s)
		}
		seconds = n
	}
	seed := rand.Uint64() % 1_000_000_000
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q: want a number", s)
		}
		seed = n
	}
	kinds := append([]FaultKind(nil), AllFaults...)
	if long {
		kinds = append(kinds, FaultMixed)
	}
	if s := os.Getenv("CHAOS_FAULTS"); s != "" {
		kinds = nil
		for _, name := range strings.Split(s, ",") {
			k, err := ParseFaultKind(strings.TrimSpace(name))
			if err != nil {
				t.Fatal(err)
			}
			kinds = append(kinds, k)
		}
	}
	out := os.Getenv("CHAOS_OUT")
	protocol := os.Getenv("CHAOS_PROTOCOL")
	if protocol == "" {
		protocol = txn.DefaultConfig().CommitProtocol
	}
	t.Logf("chaos: mode=%s seed=%d seconds=%d kinds=%v protocol=%s (replay: CHAOS_SEED=%d CHAOS_PROTOCOL=%s)", mode, seed, seconds, kinds, protocol, seed, protocol)
	var summary []string
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			dir := ""
			keep := out != ""
			if keep {
				dir = filepath.Join(out, fmt.Sprintf("%s-%d", kind, seed))
				os.RemoveAll(dir)
			} else {
				var err error
				if dir, err = os.MkdirTemp("", fmt.Sprintf("kvtx-chaos-%s-", kind)); err != nil {
					t.Fatal(err)
				}
			}
			quiet := 2 * time.Second
			if long {
				quiet = 10 * time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds)*time.Second+5*time.Minute)
			defer cancel()
			rep, err := Run(ctx, Config{
				Binaries: bins, Dir: dir, Fault: kind, Seed: seed, CommitProtocol: protocol,
				FaultDuration: time.Duration(seconds) * time.Second, QuietDuration: quiet,
				Logf: func(format string, args ...any) {
					if testing.Verbose() && long {
						t.Logf(format, args...)
					}
				},
			})
			if err != nil {
				t.Fatalf("chaos run %s seed %d could not run: %v (files in %s)", kind, seed, err, dir)
			}
			if werr := rep.Write(); werr != nil {
				t.Error(werr)
			}
			t.Logf("\n%s", rep)
			scans := 0
			for _, n := range rep.ScansOK {
				scans += n
			}
			summary = append(summary, fmt.Sprintf("%-11s protocol=%s seed=%d attempted=%d committed=%d unknown=%d acked-checked=%d lost=%d half-applied=%d scans=%d power-cuts=%d verdict=%v", kind, protocol, seed, rep.Attempted, rep.Committed, rep.Unknown, rep.AckedChecked, rep.Lost, rep.HalfApplied, scans, rep.PowerCutSteps, rep.Err() == nil))
			if err := rep.Err(); err != nil {
				t.Errorf("%v\nreport, schedule, events and process logs kept in %s", err, dir)
				return
			}
			if !keep {
				os.RemoveAll(dir)
			}
		})
	}
	t.Logf("chaos summary:\n%s", strings.Join(summary, "\n"))
}
