package server

import (
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/certs"
)

// A process without its certificate files does not start, and says in one line what is
// missing and what to do; a certificate of another process is refused too.
func TestProcessCertificatesMustBeThereAndItsOwn(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := txn.DefaultConfig()
	cfg.TLS.Dir = filepath.Join(t.TempDir(), "certs")
	_, err := processCerts(cfg, "node1", false, log)
	want := "no certificate for node1 in " + cfg.TLS.Dir + " (node1.crt is missing): run `kvctl cert init` or start with --insecure"
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("no files: %v, want %q", err, want)
	}
	if l, err := processCerts(cfg, "node1", true, log); err != nil || l != nil {
		t.Fatalf("insecure: %v, %v", l, err)
	}

	if err := certs.Init(cfg.TLS.Dir, cfg, certs.Options{}); err != nil {
		t.Fatal(err)
	}
	l, err := processCerts(cfg, "node1", false, log)
	if err != nil || l.Identity() != (certs.Identity{Name: "node1", Role: certs.RoleNode}) {
		t.Fatalf("node1: %v, %v", l, err)
	}
	// node2's files given to node1 by the config's overrides.
	other := cfg
	other.TLS.Cert, other.TLS.Key = filepath.Join(cfg.TLS.Dir, "node2.crt"), filepath.Join(cfg.TLS.Dir, "node2.key")
	if _, err := processCerts(other, "node1", false, log); err == nil || !strings.Contains(err.Error(), "node2.crt holds the certificate of node2 (node), but this is node1 (node)") {
		t.Fatalf("node2's certificate for node1: %v", err)
	}
	// The client's certificate cannot serve as the master's.
	other.TLS.Cert, other.TLS.Key = filepath.Join(cfg.TLS.Dir, "client.crt"), filepath.Join(cfg.TLS.Dir, "client.key")
	if _, err := processCerts(other, txn.MasterName, false, log); err == nil || !strings.Contains(err.Error(), "but this is master (master)") {
		t.Fatalf("the client's certificate for the master: %v", err)
	}
}
