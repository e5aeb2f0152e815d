package certs

import (
	"crypto/tls"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// servedSerial is the serial of the certificate srv presents to node1 dialing as dial.
func servedSerial(t *testing.T, srv *tls.Config, node1 *Loader, dial string) *big.Int {
	t.Helper()
	s, c := handshake(t, srv, node1.ClientConfig(dial))
	if s.err != nil || c.err != nil {
		t.Fatalf("handshake: server %v, client %v", s.err, c.err)
	}
	return c.state.PeerCertificates[0].SerialNumber
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFile(to, data, keyMode, true); err != nil {
		t.Fatal(err)
	}
}

func TestReloadServesNewCertificatesAndKeepsTheOldOnBadFiles(t *testing.T) {
	dir, other := newCluster(t), newCluster(t)
	master, node1 := newLoader(t, dir, "master"), newLoader(t, dir, "node1")
	srv := master.ServerConfig()
	first := servedSerial(t, srv, node1, "master")

	if err := CreateProcess(dir, "master", RoleMaster, nil, Options{Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(t, srv, node1, "master"); got.Cmp(first) != 0 {
		t.Fatalf("new files served before Reload (serial %x, was %x)", got, first)
	}
	if err := master.Reload(); err != nil {
		t.Fatal(err)
	}
	second := servedSerial(t, srv, node1, "master")
	if second.Cmp(first) == 0 {
		t.Fatalf("Reload kept serial %x", first)
	}

	files := FilesFor(dir, "master")
	good := map[string][]byte{}
	for _, p := range []string{files.CA, files.Cert, files.Key} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		good[p] = data
	}
	restore := func() {
		for p, data := range good {
			if err := writeFile(p, data, keyMode, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	expired := t.TempDir()
	copyFile(t, filepath.Join(dir, CACert), filepath.Join(expired, CACert))
	copyFile(t, filepath.Join(dir, CAKey), filepath.Join(expired, CAKey))
	if err := CreateProcess(expired, "master", RoleMaster, nil, Options{Now: time.Now().Add(-48 * time.Hour), Lifetime: time.Hour}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		what, says string
		apply      func()
	}{
		{"a certificate file that is not PEM", "master.crt", func() { os.WriteFile(files.Cert, []byte("not a certificate"), 0o644) }},
		{"the key of another certificate", "does not hold the key", func() { copyFile(t, filepath.Join(dir, "node1.key"), files.Key) }},
		{"another process's certificate", "this process is master (master)", func() {
			copyFile(t, filepath.Join(dir, "node1.crt"), files.Cert)
			copyFile(t, filepath.Join(dir, "node1.key"), files.Key)
		}},
		{"an expired certificate", "expired on", func() {
			copyFile(t, filepath.Join(expired, "master.crt"), files.Cert)
			copyFile(t, filepath.Join(expired, "master.key"), files.Key)
		}},
		{"a certificate of another CA", "not by a CA this process trusts", func() {
			copyFile(t, filepath.Join(other, "master.crt"), files.Cert)
			copyFile(t, filepath.Join(other, "master.key"), files.Key)
		}},
		{"a CA file without the CA", "not by a CA this process trusts", func() { copyFile(t, filepath.Join(other, CACert), files.CA) }},
		{"a missing key", "master.key", func() { os.Remove(files.Key) }},
	} {
		bad.apply()
		err := master.Reload()
		if err == nil || !strings.Contains(err.Error(), bad.says) {
			t.Errorf("%s: Reload says %v, want %q", bad.what, err, bad.says)
		}
		if got := servedSerial(t, srv, node1, "master"); got.Cmp(second) != 0 {
			t.Errorf("%s: serial %x served, want the old %x", bad.what, got, second)
		}
		restore()
	}
	if err := master.Reload(); err != nil {
		t.Fatalf("the good files again: %v", err)
	}
	if got := servedSerial(t, srv, node1, "master"); got.Cmp(second) != 0 {
		t.Errorf("serial %x served, want %x", got, second)
	}
}

func TestHandshakesReloadFilesThatChanged(t *testing.T) {
	dir := newCluster(t)
	var log logBuffer
	master, err := NewLoader(FilesFor(dir, "master"), LoaderOptions{Logger: slog.New(slog.NewTextHandler(&log, nil)), CheckEvery: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	node1 := newLoader(t, dir, "node1")
	srv := master.ServerConfig()
	first := servedSerial(t, srv, node1, "master")
	if err := CreateProcess(dir, "master", RoleMaster, nil, Options{Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	second := servedSerial(t, srv, node1, "master")
	if second.Cmp(first) == 0 {
		t.Fatalf("the changed files were not reloaded (serial %x)", first)
	}
	if !strings.Contains(log.String(), "certs: reloaded") {
		t.Errorf("the reload is not logged:\n%s", log.String())
	}
	if err := writeFile(FilesFor(dir, "master").Key, []byte("garbage"), keyMode, true); err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(t, srv, node1, "master"); got.Cmp(second) != 0 {
		t.Errorf("serial %x served after a bad key was written, want the old %x", got, second)
	}
	if !strings.Contains(log.String(), "reload failed, keeping the current certificates") {
		t.Errorf("the failed reload is not logged:\n%s", log.String())
	}

	// The dialing side reloads too: node1 gets a new certificate and presents it.
	node1Auto, err := NewLoader(FilesFor(dir, "node1"), LoaderOptions{Logger: slog.New(slog.NewTextHandler(&log, nil)), CheckEvery: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := CreateProcess(dir, "node1", RoleNode, nil, Options{Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	s, c := handshake(t, newLoader(t, dir, "node2").ServerConfig(), node1Auto.ClientConfig("node2"))
	if s.err != nil || c.err != nil {
		t.Fatalf("server %v, client %v", s.err, c.err)
	}
	if got, want := s.state.PeerCertificates[0].SerialNumber, node1Auto.Certificate().SerialNumber; got.Cmp(want) != 0 || node1Auto.Certificate().SerialNumber.Cmp(node1.Certificate().SerialNumber) == 0 {
		t.Errorf("node1 presented serial %x; its loader holds %x, the first load %x", got, want, node1.Certificate().SerialNumber)
	}
}

func TestACARotationTrustsBothCAsDuringIt(t *testing.T) {
	dir, next := newCluster(t), newCluster(t)
	both := append(readOrFail(t, filepath.Join(dir, CACert)), readOrFail(t, filepath.Join(next, CACert))...)
	// The old CA's master and a dialer, with their configs made before any reload.
	master, dialer := newLoader(t, dir, "master"), newLoader(t, dir, "node1")
	srv, cli := master.ServerConfig(), dialer.ClientConfig("master")
	// Processes with certificates of the new CA, which trust both.
	if err := writeFile(filepath.Join(next, CACert), both, certMode, true); err != nil {
		t.Fatal(err)
	}
	newNode, newMaster := newLoader(t, next, "node1"), newLoader(t, next, "master")

	if s, _ := handshake(t, srv, newNode.ClientConfig("master")); s.err == nil {
		t.Fatal("the master let in a certificate of a CA it does not trust yet")
	}
	if _, c := handshake(t, newMaster.ServerConfig(), cli); c.err == nil {
		t.Fatal("the dialer trusted a server of a CA it does not trust yet")
	}
	if err := writeFile(filepath.Join(dir, CACert), both, certMode, true); err != nil {
		t.Fatal(err)
	}
	if err := master.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := dialer.Reload(); err != nil {
		t.Fatal(err)
	}
	if s, c := handshake(t, srv, newNode.ClientConfig("master")); s.err != nil || c.err != nil {
		t.Fatalf("the master after its reload: server %v, client %v", s.err, c.err)
	}
	if s, c := handshake(t, newMaster.ServerConfig(), cli); s.err != nil || c.err != nil {
		t.Fatalf("the dialer after its reload: server %v, client %v", s.err, c.err)
	}
	if len(master.state.Load().cas) != 2 {
		t.Errorf("the master trusts %d CAs, want 2", len(master.state.Load().cas))
	}
}

func readOrFail(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
