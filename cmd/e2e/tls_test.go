package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvtx/kvtx/cmd/internal/cluster"
	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/certs"
	"github.com/kvtx/kvtx/txn/client"
	"github.com/kvtx/kvtx/wire"
)

// withCertificate returns the client TLS of the cluster with pair presented instead of the
// client certificate (nil pair: none at all).
func (c *testCluster) withCertificate(pair *tls.Certificate) *tls.Config {
	cfg := c.ClientTLS(txn.MasterName)
	cfg.GetClientCertificate = nil
	if pair != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return pair, nil }
	}
	return cfg
}

func loadPair(t *testing.T, f certs.Files) *tls.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	return &pair
}

// wantAbsent fails the test if any of keys has a value.
func wantAbsent(t *testing.T, cl *client.Client, keys ...string) {
	t.Helper()
	for _, kv := range snapshot(t, cl, keys) {
		if kv.Found {
			t.Fatalf("a refused client wrote %q = %q", kv.Key, kv.Value)
		}
	}
}

// A client with no certificate, with one of another CA or with an expired one is refused at
// its handshake, with one line that says which, and writes nothing; so is kvctl with such
// files, with the wrong --certs-dir, or without TLS.
func TestClientsWithoutAValidCertificateAreRefused(t *testing.T) {
	c := newCluster(t, 2)
	good := c.client()
	other := filepath.Join(t.TempDir(), "certs")
	if err := certs.Init(other, c.Config(), certs.Options{}); err != nil {
		t.Fatal(err)
	}
	// Signed by the cluster's CA, valid for an hour two days ago.
	if err := certs.CreateClient(c.CertsDir(), "old", certs.Options{Now: time.Now().Add(-48 * time.Hour), Lifetime: time.Hour}); err != nil {
		t.Fatal(err)
	}
	old := certs.FilesFor(c.CertsDir(), "old")
	for _, k := range []struct {
		what string
		tls  *tls.Config
		says string
	}{
		{"no certificate", c.withCertificate(nil), "the peer requires a client certificate, and this process sent none"},
		{"a certificate of another CA", c.withCertificate(loadPair(t, certs.FilesFor(other, certs.DefaultClient))), "the peer does not trust the CA that signed"},
		{"an expired certificate", c.withCertificate(loadPair(t, old)), "has expired"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cl, err := client.Dial(ctx, c.ClientAddr(), client.Options{TLS: k.tls, ExplainTLS: certs.Refusal})
		if err == nil {
			_, err = cl.Put(ctx, []byte("tls/"+k.what), []byte("written"))
			cl.Close()
		}
		cancel()
		var ce *certs.Error
		if err == nil || !errors.As(err, &ce) || !strings.Contains(err.Error(), k.says) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v, want one line saying %q", k.what, err, k.says)
		}
		t.Logf("%s: %v", k.what, err)
		wantAbsent(t, good, "tls/"+k.what)
	}

	for _, k := range []struct {
		what string
		args []string
		says string
	}{
		{"kvctl with the wrong --certs-dir", []string{"--certs-dir", filepath.Join(c.Dir(), "nowhere")},
			"no certificate for client in " + filepath.Join(c.Dir(), "nowhere") + " (client.crt is missing): run `kvctl cert init` or pass --insecure"},
		{"kvctl with another cluster's certificates", []string{"--certs-dir", other}, "not by a CA this process trusts"},
		{"kvctl with an expired certificate", []string{"--certs-dir", c.CertsDir(), "--cert", old.Cert, "--key", old.Key}, "expired on"},
		{"kvctl without TLS", []string{"--insecure"}, "this server speaks only TLS"},
	} {
		args := append(append([]string{"--endpoint", c.ClientAddr()}, k.args...), "put", "tls/kvctl", "written")
		_, errOut, code := runKvctl(t, args...)
		if code != 4 || !strings.Contains(errOut, k.says) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("%s: exit %d, stderr %q; want 4 and one line saying %q", k.what, code, errOut, k.says)
		}
		t.Logf("%s: %s", k.what, strings.TrimSpace(errOut))
	}
	wantAbsent(t, good, "tls/kvctl")
	// kvctl finds the certificates through the config file's tls section too.
	if _, errOut, code := runKvctl(t, "--endpoint", c.ClientAddr(), "--config", c.ConfigPath(), "put", "tls/config", "v"); code != 0 {
		t.Fatalf("kvctl --config: exit %d: %s", code, errOut)
	}
}

// The client certificate lets a client read, write and ask for status through the master,
// and nothing else: the requests that drive a node's shard, sent straight to a node, and
// the outcome question sent to the master, are refused with permission_denied, and nothing
// is written.
func TestAClientCertificateCannotSendNodeRequests(t *testing.T) {
	c := newCluster(t, 2)
	cl := c.client()
	ctx := stepCtx(t)
	keys := c.keysOnEveryShard("authz")
	node := c.Config().ShardMap().Names()[0]
	put, err := cl.Put(ctx, []byte("authz/seen"), []byte("v")) // a timestamp the node has seen
	if err != nil {
		t.Fatal(err)
	}
	ts := put.CommitTS + 1000
	ops := []wire.Op{{Kind: wire.OpPut, Key: []byte(keys[0]), Value: []byte("hijacked")}}
	commit := wire.CommitRequest{TxnID: 1 << 40, CommitTS: ts}
	for _, k := range []struct {
		to  string
		req wire.Message
	}{
		{node, &wire.ApplyRequest{TxnID: 1 << 40, TS: ts, Ops: ops}},
		{node, &wire.PrepareRequest{TxnID: 1 << 40, StartTS: ts, Ops: ops, Participants: []string{node}}},
		{node, &commit},
		{node, &wire.CommitBatchRequest{Commits: []wire.CommitRequest{commit}}},
		{node, &wire.AbortRequest{TxnID: 1<<40 + 1}},
		{node, &wire.SyncRequest{Commits: []wire.CommitRequest{commit}}},
		{node, &wire.GetRequest{Keys: [][]byte{[]byte(keys[0])}, ReadTS: 1<<64 - 2}},
		{txn.MasterName, &wire.OutcomeRequest{TxnID: put.TxnID, From: node}},
	} {
		conn, err := c.dialAs(ctx, certs.DefaultClient, "client", k.to, wire.DialOptions{})
		if err != nil {
			t.Fatal(err)
		}
		err = conn.Call(ctx, k.req, nil)
		conn.Close()
		var we *wire.Error
		if !errors.As(err, &we) || we.Code != wire.CodePermissionDenied {
			t.Errorf("%s to %s with the client certificate: %v, want permission_denied", k.req.MsgType(), k.to, err)
		}
	}
	// Nor can the client certificate claim the master's role to get them through.
	opts := wire.DialOptions{Role: "master", Name: txn.MasterName, TLS: c.ClientTLS(node)}
	if conn, err := wire.Dial(ctx, c.Addr(node), opts); err == nil {
		err = conn.Call(ctx, &wire.ApplyRequest{TxnID: 1 << 40, TS: ts, Ops: ops}, nil)
		conn.Close()
		t.Errorf("the client certificate's hello claiming the master was let in (apply: %v)", err)
	} else if we := (*wire.Error)(nil); !errors.As(err, &we) || we.Code != wire.CodePermissionDenied || !strings.Contains(we.Message, "hello claims master but the certificate is client's") {
		t.Errorf("the client certificate claiming the master: %v, want permission_denied", err)
	}
	// Status is for anyone with a certificate.
	conn, err := c.dialAs(ctx, certs.DefaultClient, "client", node, wire.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Call(ctx, &wire.StatusRequest{}, &wire.StatusReply{}); err != nil {
		t.Fatalf("status from a client: %v", err)
	}
	wantAbsent(t, cl, keys[0])
	c.waitQuiet(cl, 10*time.Second) // no lock or prepared transaction left behind
}

// A process's certificate is that process only: node1's cannot pass for node2 or for the
// master, and node1 as itself may not drive another node's shard.
func TestAProcessCertificateCannotActAsAnother(t *testing.T) {
	c := newCluster(t, 2)
	cl := c.client()
	ctx := stepCtx(t)
	keys := c.keysOnEveryShard("impostor")
	id := c.Config().ShardMap().ID()
	for _, k := range []struct {
		role, name, to, says string
	}{
		{"node", "node2", "node2", "hello claims node2 but the certificate is node1's"},
		{"node", "node2", txn.MasterName, "hello claims node2 but the certificate is node1's"},
		{"master", "master", "node2", "hello claims master but the certificate is node1's"},
		{"master", "", "node2", "hello claims role master but the certificate of node1 has role node"},
	} {
		opts := wire.DialOptions{Role: k.role, Name: k.name, ClusterID: id, TLS: c.loader("node1").ClientConfig(k.to)}
		conn, err := wire.Dial(ctx, c.Addr(k.to), opts)
		if err == nil {
			conn.Close()
		}
		var we *wire.Error
		if !errors.As(err, &we) || we.Code != wire.CodePermissionDenied || !strings.Contains(we.Message, k.says) {
			t.Errorf("node1's certificate as %s (%s) to %s: %v, want permission_denied saying %q", k.name, k.role, k.to, err, k.says)
		}
	}
	conn, err := c.dialAs(ctx, "node1", "node", "node2", wire.DialOptions{ClusterID: id})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	key := keys[1]
	if c.Config().ShardMap().Names()[1] != "node2" {
		t.Fatalf("shard 1 is %s", c.Config().ShardMap().Names()[1])
	}
	for _, req := range []wire.Message{
		&wire.ApplyRequest{TxnID: 1 << 41, TS: 1 << 50, Ops: []wire.Op{{Kind: wire.OpPut, Key: []byte(key), Value: []byte("x")}}},
		&wire.PrepareRequest{TxnID: 1 << 41, StartTS: 1 << 50, Ops: []wire.Op{{Kind: wire.OpPut, Key: []byte(key), Value: []byte("x")}}, Participants: []string{"node2"}},
		&wire.AbortRequest{TxnID: 1<<41 + 1},
	} {
		err := conn.Call(ctx, req, nil)
		var we *wire.Error
		if !errors.As(err, &we) || we.Code != wire.CodePermissionDenied {
			t.Errorf("%s from node1 to node2: %v, want permission_denied", req.MsgType(), err)
		}
	}
	wantAbsent(t, cl, key)
	// And the cluster itself still works across shards.
	ops := []client.Op{client.Put([]byte(keys[0]), []byte("a")), client.Put([]byte(keys[1]), []byte("b"))}
	if _, err := cl.Txn(ctx, nil, ops...); err != nil {
		t.Fatalf("a cross-shard transaction: %v", err)
	}
}

// servedSerial returns the serial of the certificate the process named to serves.
func (c *testCluster) servedSerial(to string) (*big.Int, error) {
	conn, err := c.rawConn(to)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// A node's certificate files replaced and SIGHUP sent: new connections get the new
// certificate, without a restart; replaced by another process's certificate, the node keeps
// serving the one it has and logs why.
func TestCertificatesReloadOnSIGHUP(t *testing.T) {
	c := newCluster(t, 2)
	cl := c.client()
	before, err := c.servedSerial("node1")
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.CreateProcess(c.CertsDir(), "node1", certs.RoleNode, nil, certs.Options{Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	want := loadPair(t, certs.FilesFor(c.CertsDir(), "node1")).Leaf.SerialNumber
	if want.Cmp(before) == 0 {
		t.Fatal("the new certificate has the old serial")
	}
	c.Hangup("node1")
	waitFor(t, 10*time.Second, "node1 reloading on SIGHUP", func() (bool, string) {
		log, _ := os.ReadFile(c.LastLog("node1"))
		return strings.Contains(string(log), `msg="reloading certificates" process=node1 signal=hangup`), "no reload logged"
	})
	waitFor(t, 10*time.Second, "node1 serving its new certificate", func() (bool, string) {
		got, err := c.servedSerial("node1")
		if err != nil {
			return false, err.Error()
		}
		return got.Cmp(want) == 0, fmt.Sprintf("serial %x, want %x", got, want)
	})
	pid := c.PID("node1")
	keys := c.keysOnEveryShard("reload")
	ctx := stepCtx(t)
	if _, err := cl.Txn(ctx, nil, client.Put([]byte(keys[0]), []byte("a")), client.Put([]byte(keys[1]), []byte("b"))); err != nil {
		t.Fatalf("a cross-shard transaction after the reload: %v", err)
	}

	// node2's certificate as node1's: refused, the current one stays.
	for _, ext := range []string{".crt", ".key"} {
		data, err := os.ReadFile(filepath.Join(c.CertsDir(), "node2"+ext))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(c.CertsDir(), "node1"+ext), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c.Hangup("node1")
	waitFor(t, 10*time.Second, "node1 refusing node2's certificate", func() (bool, string) {
		log, _ := os.ReadFile(c.LastLog("node1"))
		return strings.Contains(string(log), "reload failed, keeping the current certificates"), "no failed reload logged"
	})
	if got, err := c.servedSerial("node1"); err != nil || got.Cmp(want) != 0 {
		t.Fatalf("after a bad reload node1 serves serial %v (%v), want %x", got, err, want)
	}
	if c.PID("node1") != pid || !c.Running("node1") {
		t.Fatal("node1 restarted")
	}
	if _, err := cl.Put(ctx, []byte(keys[0]), []byte("c")); err != nil {
		t.Fatalf("a write to node1 after the bad reload: %v", err)
	}
}

// A process without its certificate does not start and says what to do in one line; with
// --insecure the whole cluster runs without TLS (logged at WARN), and a TLS client is told it
// does not speak TLS.
func TestInsecureIsExplicitAndLoud(t *testing.T) {
	c := prepareCluster(t, 2)
	cfg := c.Config()
	cfg.TLS.Dir = filepath.Join(c.Dir(), "empty")
	path := filepath.Join(c.Dir(), "nocerts.yaml")
	if err := cluster.WriteConfig(path, cfg); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bins.Path("kvnode"), "--config", path, "node1").CombinedOutput()
	want := "kvnode: server: no certificate for node1 in " + cfg.TLS.Dir + " (node1.crt is missing): run `kvctl cert init` or start with --insecure\n"
	if err == nil || !strings.HasSuffix(string(out), want) {
		t.Fatalf("kvnode without certificates: %v, output %q, want %q", err, out, want)
	}

	ic := prepare(t, cluster.Config{Nodes: 2, Insecure: true})
	ic.startAll()
	cl := ic.client()
	ctx := stepCtx(t)
	if _, err := cl.Put(ctx, []byte("plain"), []byte("text")); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := ic.kvctl("get", "plain"); code != 0 || strings.TrimSpace(out) != "text" {
		t.Fatalf("kvctl --insecure get: %d %q %q", code, out, errOut)
	}
	for _, name := range ic.Names() {
		if !strings.Contains(ic.Output(name), "level=WARN msg=\"INSECURE: serving and dialling without TLS") {
			t.Errorf("%s does not warn that it runs without TLS", name)
		}
	}
	_, errOut, code := runKvctl(t, "--endpoint", ic.ClientAddr(), "--certs-dir", c.CertsDir(), "get", "plain")
	if code != 4 || !strings.Contains(errOut, "the peer does not speak TLS") {
		t.Fatalf("kvctl with TLS against an insecure cluster: %d %q", code, errOut)
	}
}
