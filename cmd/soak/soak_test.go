package soak

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kvtx/kvtx/bench"
	"github.com/kvtx/kvtx/cmd/internal/cluster"
	"github.com/kvtx/kvtx/txn"
)

var bins cluster.Binaries

func TestMain(m *testing.M) {
	if os.Getenv("KVTX_SOAK") != "" {
		dir, err := os.MkdirTemp("", "kvtx-soak-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer os.RemoveAll(dir)
		if bins, err = cluster.Build(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.Exit(code)
}

// startCluster returns a bench.StartSoakCluster that runs a master and two nodes (the
// harness's short protocol timeouts, the default storage) in a new directory each time. Its
// stop function kills them and copies their logs to logDir (as clusterN-NAME.log).
func startCluster(t *testing.T, logDir string) bench.StartSoakCluster {
	runs := 0
	return func(ctx context.Context, gc txn.GC) (*bench.SoakCluster, func() error, error) {
		runs++
		run := runs
		c, err := cluster.New(cluster.Config{Binaries: bins, Dir: t.TempDir(), Nodes: 2, GC: gc, LogLevel: "warn"})
		if err != nil {
			return nil, nil, err
		}
		stop := func() error {
			err := c.Close()
			for _, name := range c.Names() {
				path := filepath.Join(logDir, fmt.Sprintf("cluster%d-%s.log", run, name))
				if werr := os.WriteFile(path, []byte(c.Output(name)), 0o644); err == nil {
					err = werr
				}
			}
			return err
		}
		if err := c.StartAll(ctx); err != nil {
			stop()
			return nil, nil, err
		}
		cfg := c.Config()
		cl := &bench.SoakCluster{Endpoint: c.ClientAddr(), TLS: c.ClientTLS(txn.MasterName)}
		for _, p := range append([]txn.Process{cfg.Master}, cfg.Nodes...) {
			cl.Processes = append(cl.Processes, bench.SoakProcess{Name: p.Name, PID: c.PID(p.Name), DataDir: p.DataDir, MetricsAddr: c.MetricsAddr(p.Name)})
		}
		return cl, stop, nil
	}
}

// soakTestConfig is the soak of a KVTX_SOAK mode. short (make test) writes until Badger has
// compacted twice on each node with a retention of a second, whatever the machine's speed;
// long (make soak) is the default soak, KVTX_SOAK_DURATION per run.
func soakTestConfig(t *testing.T, mode string) bench.SoakConfig {
	t.Helper()
	var cfg bench.SoakConfig
	switch mode {
	case "short":
		// Half the values large, so that the nodes get 7 memtables of writes (Badger compacts
		// level 0 at 5 tables) in about 25 seconds on a 2-core machine; the duration is a cap.
		cfg = bench.SoakConfig{Duration: 3 * time.Minute, SampleEvery: time.Second, Retention: time.Second, LargeFraction: 0.5, WriteTarget: 7 * 64 << 20}
	case "long":
	default:
		t.Fatalf("KVTX_SOAK=%q: want short or long", mode)
	}
	if d := os.Getenv("KVTX_SOAK_DURATION"); d != "" {
		var err error
		if cfg.Duration, err = time.ParseDuration(d); err != nil {
			t.Fatalf("KVTX_SOAK_DURATION: %v", err)
		}
	}
	if v := os.Getenv("KVTX_SOAK_ANON_LIMIT_MIB"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			t.Fatalf("KVTX_SOAK_ANON_LIMIT_MIB=%q: want a positive number of MiB", v)
		}
		cfg.AnonLimit = n << 20
	}
	return cfg
}

// TestSoakGCBoundsDiskAndNothingGrows runs the soak of KVTX_SOAK (short or long; skipped
// without it) against real processes: a GC-on run then a GC-off run, each on a fresh cluster.
// Both modes check that GC really drops versions from disk and refuses reads below the safe
// point with "compacted" (CheckMechanism); long also checks the disk bound, the nodes'
// anonymous RSS and that store, RSS and goroutines stay flat (Check). It prints the table;
// with KVTX_SOAK_OUT set it writes soak.txt, soak.json, soak.svg and the processes' logs
// there. Without it, a failed test prints the end of every process's log.
func TestSoakGCBoundsDiskAndNothingGrows(t *testing.T) {
	mode := os.Getenv("KVTX_SOAK")
	if mode == "" {
		t.Skip("set KVTX_SOAK=short or long (make test runs short, make soak long)")
	}
	cfg := soakTestConfig(t, mode)
	out := os.Getenv("KVTX_SOAK_OUT")
	logDir := filepath.Join(out, "logs")
	if out == "" {
		logDir = t.TempDir()
		t.Cleanup(func() {
			if t.Failed() {
				printLogTails(t, logDir)
			}
		})
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	rep, err := bench.RunSoak(context.Background(), cfg, startCluster(t, logDir), t.Logf)
	if rep != nil && len(rep.Runs) > 0 {
		var table bytes.Buffer
		if werr := rep.WriteTable(&table); werr != nil {
			t.Error(werr)
		}
		if werr := rep.WriteChecks(&table, mode == "long"); werr != nil {
			t.Error(werr)
		}
		fmt.Print(table.String())
		if out != "" {
			writeSoakFiles(t, rep, out, table.Bytes())
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	check := rep.Check
	if mode == "short" {
		check = rep.CheckMechanism
	}
	if err := check(); err != nil {
		t.Error(err)
	}
}

// writeSoakFiles writes the table, the report as JSON and the chart to dir.
func writeSoakFiles(t *testing.T, rep *bench.SoakReport, dir string, table []byte) {
	t.Helper()
	js, jerr := json.MarshalIndent(rep, "", "  ")
	var svg bytes.Buffer
	serr := rep.WriteSVG(&svg)
	for _, f := range []struct {
		name string
		data []byte
		err  error
	}{{"soak.txt", table, nil}, {"soak.json", js, jerr}, {"soak.svg", svg.Bytes(), serr}} {
		if f.err == nil {
			f.err = os.WriteFile(filepath.Join(dir, f.name), f.data, 0o644)
		}
		if f.err != nil {
			t.Error(f.err)
		}
	}
	fmt.Printf("soak: wrote soak.txt, soak.json and soak.svg to %s (process logs in %s)\n", dir, filepath.Join(dir, "logs"))
}

// printLogTails logs the last lines of every log file in dir.
func printLogTails(t *testing.T, dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		t.Logf("--- the end of %s ---\n%s", e.Name(), strings.Join(lines[max(0, len(lines)-20):], "\n"))
	}
}
