package server

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvtx/kvtx/kv"
	"github.com/kvtx/kvtx/txn"
)

// A config file sets what it names, every other field takes its default, and a misspelt field
// is an error that names it rather than a silent default.
func TestLoadConfigFillsDefaultsAndRefusesUnknownFields(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("master: {listen: 127.0.0.1:7000, data_dir: m}\n"+
		"nodes:\n  - {name: n1, listen: 127.0.0.1:7001, data_dir: n1}\n"+
		"timeouts: {prepare: 250ms}\n"), 0o644)
	cfg, err := LoadConfig(good)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Master.Listen != "127.0.0.1:7000" || cfg.Master.Name != "master" || len(cfg.Nodes) != 1 || cfg.Nodes[0].Name != "n1" {
		t.Fatalf("processes loaded as %+v", cfg)
	}
	if cfg.Timeouts.Prepare != 250*time.Millisecond || cfg.Timeouts.Request != 5*time.Second || cfg.Limits.MaxTxnOps != 1024 {
		t.Fatalf("timeouts %+v, limits %+v: want prepare 250ms and the defaults elsewhere", cfg.Timeouts, cfg.Limits)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	typo := filepath.Join(dir, "typo.yaml")
	os.WriteFile(typo, []byte("master: {listen: 127.0.0.1:1, lissten: x}\n"), 0o644)
	if _, err := LoadConfig(typo); err == nil || !strings.Contains(err.Error(), "lissten") || !strings.Contains(err.Error(), "parse config") {
		t.Fatalf("misspelt field: %v", err)
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file: %v", err)
	}
}

// The disk quota defaults to 8 GiB, a negative one turns it off, and one below 1 MiB (a typo
// such as "quota_bytes: 8" for 8 GiB) is refused, naming the field.
func TestStorageQuotaDefaultsOffAndFloor(t *testing.T) {
	dir := t.TempDir()
	load := func(storage string) (txn.Config, error) {
		path := filepath.Join(dir, "c.yaml")
		os.WriteFile(path, []byte("master: {listen: 127.0.0.1:7000, data_dir: m}\n"+
			"nodes:\n  - {name: n1, listen: 127.0.0.1:7001, data_dir: n1}\n"+storage), 0o644)
		cfg, err := LoadConfig(path)
		if err != nil {
			return cfg, err
		}
		return cfg, cfg.Validate()
	}
	if cfg, err := load(""); err != nil || cfg.Storage.Quota() != 8<<30 {
		t.Fatalf("default quota: %d, %v; want 8 GiB", cfg.Storage.Quota(), err)
	}
	if cfg, err := load("storage: {quota_bytes: -1}\n"); err != nil || cfg.Storage.Quota() != 0 {
		t.Fatalf("negative quota: %d, %v; want none", cfg.Storage.Quota(), err)
	}
	if _, err := load("storage: {quota_bytes: 8}\n"); err == nil || !strings.Contains(err.Error(), "storage.quota_bytes (8) must be at least 1 MiB") {
		t.Fatalf("quota of 8 bytes: %v, want refused", err)
	}
}

// A node's storage budget defaults to kv.DefaultMemoryBytes, a file can raise it, one too small
// for the transaction limits is refused naming the minimum, and the node's soft memory limit
// follows the budget.
func TestStorageMemoryBudgetDefaultsAndMustHoldTheLimits(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	load := func(extra string) txn.Config {
		t.Helper()
		os.WriteFile(path, []byte("master: {listen: 127.0.0.1:7000, data_dir: m}\n"+
			"nodes:\n  - {name: n1, listen: 127.0.0.1:7001, data_dir: n1}\n"+extra), 0o644)
		cfg, err := LoadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	cfg := load("")
	if cfg.Storage.MemoryBytes != kv.DefaultMemoryBytes || cfg.Validate() != nil {
		t.Fatalf("default budget %d (%v), want %d and valid", cfg.Storage.MemoryBytes, cfg.Validate(), kv.DefaultMemoryBytes)
	}
	if got := NodeMemoryLimit(cfg); got != kv.DefaultMemoryBytes+32<<20 {
		t.Fatalf("node memory limit %d, want the budget plus 32 MiB", got)
	}
	if cfg := load("storage: {memory_bytes: 536870912}\n"); cfg.Storage.MemoryBytes != 512<<20 || cfg.Validate() != nil {
		t.Fatalf("budget of 512 MiB loaded as %d (%v)", cfg.Storage.MemoryBytes, cfg.Validate())
	}
	min := kv.MinMemoryBytes(4<<20, 1024, 4<<10)
	err := load(fmt.Sprintf("storage: {memory_bytes: %d}\n", min-1)).Validate()
	if err == nil || !strings.Contains(err.Error(), "storage.memory_bytes") || !strings.Contains(err.Error(), fmt.Sprint(min)) {
		t.Fatalf("a budget one byte below the minimum for the default limits: %v, want an error naming storage.memory_bytes and %d", err, min)
	}
	if err := load(fmt.Sprintf("storage: {memory_bytes: %d}\n", min)).Validate(); err != nil {
		t.Fatalf("the minimum budget: %v", err)
	}
	err = load("limits: {max_txn_bytes: 8388608, max_frame_bytes: 16777216}\n").Validate()
	if err == nil || !strings.Contains(err.Error(), "storage.memory_bytes") {
		t.Fatalf("8 MiB transactions with the default budget: %v, want an error naming storage.memory_bytes", err)
	}
	err = load("limits: {max_txn_bytes: 209715200, max_frame_bytes: 419430400}\nstorage: {memory_bytes: 17179869184}\n").Validate()
	if err == nil || !strings.Contains(err.Error(), "limits.max_txn_bytes") {
		t.Fatalf("200 MiB transactions: %v, want an error naming limits.max_txn_bytes", err)
	}
}
