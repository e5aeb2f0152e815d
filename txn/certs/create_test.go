package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvtx/kvtx/txn"
)

// readCert parses the first certificate of a PEM file.
func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(readOrFail(t, path))
	if b == nil {
		t.Fatalf("%s holds no PEM block", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// dirNames lists dir's file names, sorted.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func TestCreateWritesKeysPrivatelyAndNeverOverwrites(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	if err := CreateCA(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	if err := CreateProcess(dir, "node1", RoleNode, nil, Options{}); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"ca.key": 0o600, "node1.key": 0o600, "ca.crt": 0o644, "node1.crt": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v (%v), want %v", name, fi.Mode().Perm(), err, mode)
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("the directory has mode %v, want 0700", fi.Mode().Perm())
	}
	before := map[string][]byte{}
	for _, n := range []string{"ca.crt", "ca.key", "node1.crt", "node1.key"} {
		before[n] = readOrFail(t, filepath.Join(dir, n))
	}
	if err := CreateCA(dir, Options{}); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "ca.crt") {
		t.Errorf("a second CA: %v, want ErrExists naming ca.crt", err)
	}
	if err := CreateProcess(dir, "node1", RoleNode, nil, Options{}); !errors.Is(err, ErrExists) {
		t.Errorf("a second node1: %v, want ErrExists", err)
	}
	os.Remove(filepath.Join(dir, "node1.crt"))
	if err := CreateProcess(dir, "node1", RoleNode, nil, Options{}); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "node1.key") {
		t.Errorf("node1 with its key left: %v, want ErrExists naming node1.key", err)
	}
	for n, data := range before {
		if got, err := os.ReadFile(filepath.Join(dir, n)); n != "node1.crt" && (err != nil || !bytes.Equal(got, data)) {
			t.Errorf("%s changed by a refused create", n)
		}
	}
	if err := CreateProcess(dir, "node1", RoleNode, nil, Options{Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(readOrFail(t, filepath.Join(dir, "node1.key")), before["node1.key"]) {
		t.Error("--overwrite kept the old key")
	}
	if want := []string{".lock", "ca.crt", "ca.key", "node1.crt", "node1.key"}; !slices.Equal(dirNames(t, dir), want) {
		t.Errorf("the directory holds %v, want %v (no temporary files)", dirNames(t, dir), want)
	}
	if err := CreateClient(t.TempDir(), "alice", Options{}); !errors.Is(err, ErrNoCAKey) {
		t.Errorf("a client without a CA: %v, want ErrNoCAKey", err)
	}
}

func TestCertificatesCarryIdentityUsagesHostsAndLifetimes(t *testing.T) {
	dir := t.TempDir()
	if err := CreateCA(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	if err := CreateProcess(dir, "node1", RoleNode, nil, Options{}); err != nil {
		t.Fatal(err)
	}
	if err := CreateProcess(dir, "master", RoleMaster, []string{"db1.example.com", "10.0.0.1", "*.kvtx.internal"}, Options{Lifetime: 30 * 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := CreateClient(dir, "alice", Options{}); err != nil {
		t.Fatal(err)
	}
	year := 365 * 24 * time.Hour
	ca := readCert(t, filepath.Join(dir, CACert))
	if !ca.IsCA || !ca.MaxPathLenZero || ca.NotAfter.Sub(ca.NotBefore) != 10*year+time.Hour {
		t.Errorf("CA: IsCA %v, MaxPathLenZero %v, validity %v", ca.IsCA, ca.MaxPathLenZero, ca.NotAfter.Sub(ca.NotBefore))
	}
	if _, ok := ca.PublicKey.(*ecdsa.PublicKey); !ok || ca.PublicKey.(*ecdsa.PublicKey).Curve != elliptic.P256() {
		t.Errorf("CA key is %T, want ECDSA P-256", ca.PublicKey)
	}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	for _, c := range []struct {
		file     string
		id       Identity
		usages   []x509.ExtKeyUsage
		hosts    []string
		lifetime time.Duration
	}{
		{"node1.crt", Identity{"node1", RoleNode}, both, []string{"localhost", "127.0.0.1", "::1"}, year},
		{"master.crt", Identity{"master", RoleMaster}, both, []string{"db1.example.com", "*.kvtx.internal", "10.0.0.1"}, 30 * 24 * time.Hour},
		{"alice.crt", Identity{"alice", RoleClient}, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, year},
	} {
		cert := readCert(t, filepath.Join(dir, c.file))
		if id, err := IdentityOf(cert); err != nil || id != c.id {
			t.Errorf("%s: identity %v (%v), want %v", c.file, id, err, c.id)
		}
		if !slices.Equal(cert.ExtKeyUsage, c.usages) {
			t.Errorf("%s: usages %v, want %v", c.file, cert.ExtKeyUsage, c.usages)
		}
		if hosts := entryOf(c.file, cert).Hosts; !slices.Equal(hosts, c.hosts) {
			t.Errorf("%s: hosts %v, want %v", c.file, hosts, c.hosts)
		}
		if got := cert.NotAfter.Sub(cert.NotBefore); got != c.lifetime+time.Hour {
			t.Errorf("%s: validity %v, want %v and the hour before creation", c.file, got, c.lifetime)
		}
		if cert.Issuer.String() != ca.Subject.String() || cert.CheckSignatureFrom(ca) != nil {
			t.Errorf("%s: not signed by the CA", c.file)
		}
	}
	for _, bad := range []struct {
		what string
		err  error
	}{
		{"a path as a name", CreateProcess(dir, "../node9", RoleNode, nil, Options{})},
		{"the CA's name", CreateClient(dir, "ca", Options{})},
		{"a node named master", CreateProcess(dir, "master", RoleNode, nil, Options{})},
		{"a master named otherwise", CreateProcess(dir, "boss", RoleMaster, nil, Options{})},
		{"a client named master", CreateClient(dir, "master", Options{})},
		{"a role that does not exist", CreateProcess(dir, "node9", "admin", nil, Options{})},
		{"a host with its port", CreateProcess(dir, "node9", RoleNode, []string{"db9:9001"}, Options{})},
		{"a host that is no DNS name", CreateProcess(dir, "node9", RoleNode, []string{"db 9"}, Options{})},
		{"a certificate that outlives its CA", CreateProcess(dir, "node9", RoleNode, nil, Options{Lifetime: 11 * year})},
		{"a negative lifetime", CreateProcess(dir, "node9", RoleNode, nil, Options{Lifetime: -time.Hour})},
	} {
		if bad.err == nil {
			t.Errorf("%s: accepted", bad.what)
		} else if !strings.HasPrefix(bad.err.Error(), "certs: ") {
			t.Errorf("%s: %v has no package prefix", bad.what, bad.err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "node9.key")); err == nil {
		t.Error("a refused create left node9.key")
	}
}

// testConfig is a cluster spread over hosts: the master on every interface, dialled at an IP
// address, node1 on a DNS name, node2 on an IP address and dialled at a DNS name.
func testConfig() txn.Config {
	cfg := txn.DefaultConfig()
	cfg.Master.Listen, cfg.Master.Advertise = "0.0.0.0:9000", "10.9.8.7:9000"
	cfg.Nodes[0].Listen, cfg.Nodes[0].Metrics = "db1.example.com:9001", "metrics1.example.com:9101"
	cfg.Nodes[1].Listen, cfg.Nodes[1].Advertise = "10.1.2.3:9002", "db2.example.com:19002"
	cfg.Nodes = append(cfg.Nodes, txn.Process{Name: "node3", Listen: "127.0.0.1:9003", DataDir: "data/node3"})
	return cfg
}

func TestInitMakesEveryCertificateOfTheConfig(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, testConfig(), Options{}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]string{
		"master": {"10.9.8.7", "localhost", "127.0.0.1", "::1"},
		"node1":  {"db1.example.com", "metrics1.example.com"}, // a scraper checks the metrics host
		"node2":  {"db2.example.com", "10.1.2.3"},
		"node3":  {"127.0.0.1", "localhost", "::1"},
	} {
		l := newLoader(t, dir, name)
		if l.Identity() != (Identity{name, expectedRole(name)}) {
			t.Errorf("%s: identity %v", name, l.Identity())
		}
		for _, h := range want {
			if h != "" && !slices.Contains(entryOf("", l.Certificate()).Hosts, h) {
				t.Errorf("%s: hosts %v lack %q", name, entryOf("", l.Certificate()).Hosts, h)
			}
		}
	}
	if hosts := entryOf("", newLoader(t, dir, "master").Certificate()).Hosts; slices.Contains(hosts, "0.0.0.0") {
		t.Errorf("the master's hosts %v include the wildcard it listens on", hosts)
	}
	if l := newLoader(t, dir, DefaultClient); l.Identity() != (Identity{DefaultClient, RoleClient}) {
		t.Errorf("the client's identity is %v", l.Identity())
	}
	unreachable := testConfig()
	unreachable.Master.Advertise = ""
	if err := Init(t.TempDir(), unreachable, Options{}); err == nil || !strings.Contains(err.Error(), "master.advertise") {
		t.Errorf("a master on 0.0.0.0 with no advertise address: %v, want refused naming master.advertise", err)
	}
	ca := readOrFail(t, filepath.Join(dir, CACert))
	if err := Init(dir, testConfig(), Options{}); !errors.Is(err, ErrExists) {
		t.Errorf("a second init: %v, want ErrExists", err)
	}
	if !bytes.Equal(readOrFail(t, filepath.Join(dir, CACert)), ca) {
		t.Error("a refused init changed ca.crt")
	}
	if err := Init(dir, testConfig(), Options{Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(readOrFail(t, filepath.Join(dir, CACert)), ca) {
		t.Error("init --overwrite kept the CA")
	}
	bad := testConfig()
	bad.Nodes[2].Name = DefaultClient
	if err := Init(t.TempDir(), bad, Options{}); err == nil {
		t.Error("a node named like the default client is accepted")
	}
	bad.Nodes = nil
	if err := Init(t.TempDir(), bad, Options{}); err == nil || !strings.Contains(err.Error(), "invalid config") {
		t.Errorf("an invalid config: %v", err)
	}
}

func TestEnsureDevMakesOnlyWhatIsMissing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	cfg := txn.DefaultConfig()
	created, err := EnsureDev(dir, cfg)
	if err != nil || !created {
		t.Fatalf("first start: created %v, %v", created, err)
	}
	snapshot := func() map[string][]byte {
		m := map[string][]byte{}
		for _, n := range dirNames(t, dir) {
			m[n] = readOrFail(t, filepath.Join(dir, n))
		}
		return m
	}
	first := snapshot()
	for _, n := range []string{"ca.crt", "ca.key", "master.crt", "master.key", "node1.crt", "node1.key", "node2.crt", "node2.key", "client.crt", "client.key"} {
		if _, ok := first[n]; !ok {
			t.Errorf("%s is missing", n)
		}
	}
	if created, err := EnsureDev(dir, cfg); err != nil || created {
		t.Fatalf("second start: created %v, %v", created, err)
	}
	for n, data := range snapshot() {
		if !bytes.Equal(data, first[n]) {
			t.Errorf("%s changed on the second start", n)
		}
	}
	os.Remove(filepath.Join(dir, "node2.crt"))
	os.Remove(filepath.Join(dir, "node2.key"))
	if created, err := EnsureDev(dir, cfg); err != nil || !created {
		t.Fatalf("with node2 removed: created %v, %v", created, err)
	}
	for n, data := range snapshot() {
		if !strings.HasPrefix(n, "node2.") && !bytes.Equal(data, first[n]) {
			t.Errorf("%s changed when node2 was made again", n)
		}
	}
	newLoader(t, dir, "node2") // signed by the same CA

	os.Remove(filepath.Join(dir, "node2.key"))
	if _, err := EnsureDev(dir, cfg); err == nil || !strings.Contains(err.Error(), "node2.key") {
		t.Errorf("half a pair: %v", err)
	}
	os.Remove(filepath.Join(dir, "node2.crt"))
	os.Remove(filepath.Join(dir, CAKey))
	if _, err := EnsureDev(dir, cfg); !errors.Is(err, ErrNoCAKey) {
		t.Errorf("a missing certificate without ca.key: %v, want ErrNoCAKey", err)
	}
	os.Remove(filepath.Join(dir, CACert))
	if _, err := EnsureDev(dir, cfg); err == nil || !strings.Contains(err.Error(), "no ca.crt") {
		t.Errorf("certificates without ca.crt: %v", err)
	}
}

func TestConcurrentEnsureDevMakesOneCA(t *testing.T) {
	for round := 0; round < 5; round++ {
		dir := t.TempDir()
		var wg sync.WaitGroup
		errs := make([]error, 6)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = EnsureDev(dir, txn.DefaultConfig())
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d, caller %d: %v", round, i, err)
			}
		}
		for _, name := range []string{"master", "node1", "node2", DefaultClient} {
			if _, err := NewLoader(FilesFor(dir, name), LoaderOptions{CheckEvery: -1}); err != nil {
				t.Fatalf("round %d: %s does not load: %v", round, name, err)
			}
		}
		if _, err := loadSigner(dir); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}

func TestListShowsEachCertificateAndWhatIsWrongWithIt(t *testing.T) {
	dir := newCluster(t)
	if err := CreateProcess(dir, "node3", RoleNode, []string{"db3"}, Options{Now: time.Now().Add(-48 * time.Hour), Lifetime: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := CreateClient(dir, "alice", Options{}); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(dir, "node1.key"), filepath.Join(dir, "alice.key"))
	if err := CreateClient(dir, "bob", Options{}); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "bob.key"))
	entries, err := List(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, strings.Join([]string{filepath.Base(e.File), e.Name, e.Role, strings.Join(e.Hosts, ","), e.Problem}, "|"))
	}
	ca := readCert(t, filepath.Join(dir, CACert)).Subject.CommonName
	want := []string{
		"ca.crt|" + ca + "|ca||",
		"alice.crt|alice|client||alice.key does not match",
		"bob.crt|bob|client||no key file bob.key",
		"client.crt|client|client||",
		"master.crt|master|master|localhost,127.0.0.1,::1|",
		"node1.crt|node1|node|localhost,127.0.0.1,::1|",
		"node2.crt|node2|node|localhost,127.0.0.1,::1|",
		"node3.crt|node3|node|db3|expired",
	}
	if !slices.Equal(got, want) {
		t.Errorf("List:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
