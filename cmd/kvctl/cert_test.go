package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kvtx/kvtx/txn/certs"
)

// certApp is kvctl with only the cert command, writing to out.
func certApp(out *bytes.Buffer) *cli.App {
	return &cli.App{Name: "kvctl", Flags: commonFlags(), Commands: []*cli.Command{certCommand()}, Writer: out, ErrWriter: out,
		ExitErrHandler: func(*cli.Context, error) {}}
}

// runCert runs `kvctl cert ARGS...` and returns its output.
func runCert(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := certApp(&out).Run(append([]string{"kvctl", "cert"}, args...))
	return out.String(), err
}

// listJSON runs `kvctl cert list -o json` and returns its entries by file name.
func listJSON(t *testing.T, dir string) map[string]certs.Entry {
	t.Helper()
	out, err := runCert(t, "list", "--certs-dir", dir, "-o", "json")
	if err != nil {
		t.Fatalf("list: %v\n%s", err, out)
	}
	m := map[string]certs.Entry{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e certs.Entry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("list prints %q: %v", line, err)
		}
		m[filepath.Base(e.File)] = e
	}
	return m
}

func TestCertCommandsMakeCertificatesThatLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	for _, args := range [][]string{
		{"create-ca"},
		{"create-node", "node1", "db1.example.com", "10.0.0.1"},
		{"create-node", "master"},
		{"create-client", "alice", "--lifetime", "30d"},
	} {
		out, err := runCert(t, append(args, "--certs-dir", dir)...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		if !strings.HasPrefix(out, "created "+dir) {
			t.Errorf("%v prints %q", args, out)
		}
	}
	entries := listJSON(t, dir)
	for file, want := range map[string]struct {
		name, role string
		hosts      []string
	}{
		"node1.crt":  {"node1", certs.RoleNode, []string{"db1.example.com", "10.0.0.1"}},
		"master.crt": {"master", certs.RoleMaster, certs.DefaultHosts},
		"alice.crt":  {"alice", certs.RoleClient, nil},
	} {
		e := entries[file]
		if e.Name != want.name || e.Role != want.role || !slices.Equal(e.Hosts, want.hosts) || e.Problem != "" {
			t.Errorf("%s: %+v, want %+v", file, e, want)
		}
		if _, err := certs.NewLoader(certs.FilesFor(dir, want.name), certs.LoaderOptions{CheckEvery: -1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}); err != nil {
			t.Errorf("%s does not load: %v", file, err)
		}
	}
	if d := entries["alice.crt"].NotAfter.Sub(entries["alice.crt"].NotBefore); d != 30*24*time.Hour+time.Hour {
		t.Errorf("--lifetime 30d gave a validity of %v", d)
	}
	if d := entries["ca.crt"].NotAfter.Sub(entries["ca.crt"].NotBefore); d != 3650*24*time.Hour+time.Hour {
		t.Errorf("the CA's validity is %v, want 10 years", d)
	}
	out, err := runCert(t, "list", "--certs-dir", dir)
	if err != nil || !strings.Contains(out, "FILE") || !strings.Contains(out, "db1.example.com,10.0.0.1") || strings.Count(out, " ok\n") != 4 {
		t.Errorf("list: %v\n%s", err, out)
	}
}

func TestCertCommandsRefuseToOverwriteAndBadInput(t *testing.T) {
	dir := t.TempDir()
	if out, err := runCert(t, "create-ca", "--certs-dir", dir); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	before := readFile(t, filepath.Join(dir, "ca.key"))
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"create-ca"}, "--overwrite"},
		{[]string{"create-node"}, "needs NAME"},
		{[]string{"create-node", "node1", "db1:9001"}, "without its port"},
		{[]string{"create-node", "node 1"}, "bad name"},
		{[]string{"create-node", "node1", "--overwrite=maybe"}, "bad --overwrite"},
		{[]string{"create-node", "node1", "--hosts", "h"}, "unknown flag --hosts"},
		{[]string{"create-client"}, "needs one NAME"},
		{[]string{"create-client", "alice", "--lifetime", "-1h"}, "positive duration"},
		{[]string{"create-client", "alice", "--lifetime", "a year"}, "positive duration"},
		{[]string{"create-client", "alice", "--lifetime", "4000d"}, "after its CA"},
		{[]string{"list", "-o", "yaml"}, "text or json"},
	} {
		out, err := runCert(t, append(c.args, "--certs-dir", dir)...)
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%v: %v, want it to say %q\n%s", c.args, err, c.says, out)
			continue
		}
		if code := report(err); code != exitUsage {
			t.Errorf("%v: exit status %d, want %d", c.args, code, exitUsage)
		}
	}
	_, err := runCert(t, "create-ca", "--certs-dir", dir)
	if err == nil || !strings.Contains(err.Error(), "--overwrite") {
		t.Errorf("a second CA: %v, want a hint at --overwrite", err)
	}
	if !bytes.Equal(readFile(t, filepath.Join(dir, "ca.key")), before) {
		t.Error("a refused create-ca changed ca.key")
	}
	if _, err := runCert(t, "create-ca", "--certs-dir", dir, "--overwrite"); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(readFile(t, filepath.Join(dir, "ca.key")), before) {
		t.Error("create-ca --overwrite kept ca.key")
	}
	if _, err := runCert(t, "create-node", "node1", "--certs-dir", t.TempDir()); err == nil || !strings.Contains(err.Error(), "create-ca") {
		t.Errorf("a node without a CA: %v", err)
	}
}

func TestCertInitMakesTheConfigsCertificatesInTheEnvironmentsDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	t.Setenv("KVTX_CERTS_DIR", dir)
	config := filepath.Join(t.TempDir(), "cluster.yaml")
	yaml := "master: {listen: \"10.0.0.1:9000\", data_dir: m}\nnodes:\n" +
		"  - {name: a, listen: \"db-a.example.com:9001\", data_dir: a}\n" +
		"  - {name: b, listen: \"10.0.0.3:9001\", data_dir: b}\n"
	if err := os.WriteFile(config, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runCert(t, "init", "--config", config)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if strings.Count(out, "created ") != 5 {
		t.Errorf("init prints:\n%s", out)
	}
	entries := listJSON(t, dir)
	for file, host := range map[string]string{"master.crt": "10.0.0.1", "a.crt": "db-a.example.com", "b.crt": "10.0.0.3"} {
		if e := entries[file]; !slices.Equal(e.Hosts, []string{host}) || e.Problem != "" {
			t.Errorf("%s: %+v, want host %s", file, e, host)
		}
	}
	if e := entries["client.crt"]; e.Role != certs.RoleClient || e.Problem != "" {
		t.Errorf("client.crt: %+v", e)
	}
	if _, err := runCert(t, "init", "--config", config); err == nil || !strings.Contains(err.Error(), "--overwrite") {
		t.Errorf("a second init: %v", err)
	}
	// list exits 4 when a certificate would not load.
	os.Remove(filepath.Join(dir, "b.key"))
	out, err = runCert(t, "list")
	if err == nil || report(err) != exitUsage || !strings.Contains(out, "no key file b.key") {
		t.Errorf("list with a missing key: %v\n%s", err, out)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
