package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
