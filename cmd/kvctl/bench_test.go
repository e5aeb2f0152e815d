package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// benchApp is kvctl with only the bench command, writing to out.
func benchApp(out *bytes.Buffer) *cli.App {
	return &cli.App{Name: "kvctl", Flags: commonFlags(), Commands: []*cli.Command{benchCommand()}, Writer: out, ErrWriter: out,
		ExitErrHandler: func(*cli.Context, error) {}}
}

func TestBenchFlagsReachTheRunAndJSONComesOut(t *testing.T) {
	var out bytes.Buffer
	err := benchApp(&out).Run([]string{"kvctl", "bench", "--target", "badger", "--data-dir", t.TempDir(), "-w", "txn", "-c", "3",
		"--ops", "60", "--warmup", "0", "--keys", "50", "--value-size", "10", "--txn-keys", "3", "--cross-shard", "0", "-o", "json"})
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Target   string
		Workload string
		Clients  int
		Attempts int64
		Params   struct {
			Keys    int `json:"keys"`
			TxnKeys int `json:"txn_keys"`
		}
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out.String())
	}
	if r.Target != "badger" || r.Workload != "txn" || r.Clients != 3 || r.Attempts != 60 || r.Params.Keys != 50 || r.Params.TxnKeys != 3 {
		t.Errorf("got %+v from %s", r, out.String())
	}
}

func TestBenchScanReadsTheRangeItIsGiven(t *testing.T) {
	var out bytes.Buffer
	err := benchApp(&out).Run([]string{"kvctl", "bench", "--target", "badger", "--data-dir", t.TempDir(), "-w", "scan", "-c", "2",
		"--ops", "30", "--warmup", "0", "--keys", "50", "--scan-keys", "10", "-o", "json"})
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Workload string
		Ops      int64
		Params   struct {
			ScanKeys int `json:"scan_keys"`
		}
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out.String())
	}
	if r.Workload != "scan" || r.Ops != 30 || r.Params.ScanKeys != 10 {
		t.Errorf("got %+v from %s", r, out.String())
	}
}

func TestBenchSweepWritesJSONAndSVG(t *testing.T) {
	var out bytes.Buffer
	dir := t.TempDir()
	err := benchApp(&out).Run([]string{"kvctl", "bench", "--target", "badger", "--data-dir", t.TempDir(), "-w", "get",
		"--ops", "40", "--warmup", "0", "--keys", "20", "--sweep", "1,2", "--out", dir})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"sweep-badger-get.json", "sweep-badger-get.svg"} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil || len(data) == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	if !strings.Contains(out.String(), "2 clients:") || !strings.Contains(out.String(), "wrote ") {
		t.Errorf("sweep output:\n%s", out.String())
	}
}

func TestBenchRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--workload", "range"},
		{"--clients", "0"},
		{"--scan-keys", "0"},
		{"-w", "scan", "--keys", "50", "--scan-keys", "51"},
		{"--cross-shard", "1.5"},
		{"--suite", "huge"},
		{"--sweep", "1,x"},
		{"--target", "redis"},
	} {
		var out bytes.Buffer
		err := benchApp(&out).Run(append([]string{"kvctl", "bench", "--target", "badger", "--data-dir", t.TempDir()}, args...))
		if err == nil {
			t.Errorf("%v accepted", args)
			continue
		}
		if code := report(err); code != exitUsage {
			t.Errorf("%v: exit status %d, want %d (%v)", args, code, exitUsage, err)
		}
	}
}
