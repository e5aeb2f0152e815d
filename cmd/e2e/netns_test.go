package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kvtx/kvtx/cmd/internal/cluster"
	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/client"
	"github.com/kvtx/kvtx/wire"
)

// The master and each node run in a network namespace of their own, as on machines of their
// own: each listens on 0.0.0.0 and is dialled at the address it advertises, which is the only
// way to reach it (its listen address, dialled from elsewhere, reaches nothing). The
// certificates come from kvctl cert init on that config and name the advertised IP addresses.
// From the test's own namespace kvctl, given only the config, writes and reads across shards
// through the master; the master reaches the nodes at their advertised addresses; and with the
// master killed after the votes, the nodes settle the transaction among themselves, each
// dialling the other at its advertised address.
func TestProcessesInNetworkNamespacesAreDialledAtTheirAdvertisedAddresses(t *testing.T) {
	names := []string{txn.MasterName, "node1", "node2"}
	nw := newNetnsNetwork(t, names)
	hosts := map[string]cluster.Host{}
	for _, name := range names {
		hosts[name] = cluster.Host{Advertise: nw.ip[name], Listen: "0.0.0.0", Wrap: []string{"ip", "netns", "exec", nw.ns[name]}}
	}
	c := prepare(t, cluster.Config{Nodes: 2, Hosts: hosts, CertsByKvctl: true, CommitProtocol: txn.ProtocolParallel})
	cfg := c.Config()
	procs := append([]txn.Process{cfg.Master}, cfg.Nodes...)
	for _, p := range procs {
		host, _, _ := net.SplitHostPort(p.Listen)
		adv, _, _ := net.SplitHostPort(p.Advertise)
		if host != "0.0.0.0" || adv != nw.ip[p.Name] {
			t.Fatalf("%s listens on %s and advertises %s, want 0.0.0.0 and %s", p.Name, p.Listen, p.Advertise, nw.ip[p.Name])
		}
		if ips := certIPs(t, filepath.Join(c.CertsDir(), p.Name+".crt")); !slices.Contains(ips, nw.ip[p.Name]) || slices.Contains(ips, "0.0.0.0") {
			t.Fatalf("%s's certificate from kvctl cert init has the IP addresses %v, want %s and not 0.0.0.0", p.Name, ips, nw.ip[p.Name])
		}
	}
	c.startAll()
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		pid := c.PID(name)
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		if want := map[bool]string{true: "kvmaster", false: "kvnode"}[name == txn.MasterName]; filepath.Base(exe) != want || ns == self || ns == "" {
			t.Fatalf("%s: pid %d runs %q in network namespace %q (the test's is %q), want %s in a namespace of its own", name, pid, exe, ns, self, want)
		}
	}

	// node1 listens on 0.0.0.0: dialled at its advertised address it answers; at its listen
	// address, from here, nothing does.
	node1, _ := cfg.Node("node1")
	conn, err := wire.Dial(stepCtx(t), node1.Advertise, c.DialOptions("node1"))
	if err != nil {
		t.Fatalf("node1 at its advertised address %s: %v", node1.Advertise, err)
	}
	var rep wire.StatusReply
	if err := conn.Call(stepCtx(t), &wire.StatusRequest{}, &rep); err != nil || len(rep.Processes) == 0 || rep.Processes[0].Name != "node1" {
		t.Fatalf("node1's status at %s: %+v, %v", node1.Advertise, rep, err)
	}
	conn.Close()
	if conn, err := wire.Dial(stepCtx(t), node1.Listen, c.DialOptions("node1")); err == nil {
		conn.Close()
		t.Fatalf("node1 answered at its listen address %s from another namespace", node1.Listen)
	}

	// kvctl is given the config and nothing else: it dials the master's advertised address.
	kvctl := func(args ...string) string {
		t.Helper()
		out, errOut, code := runKvctl(t, append([]string{"--config", c.ConfigPath()}, args...)...)
		if code != 0 {
			t.Fatalf("kvctl %s: exit %d, %s%s", strings.Join(args, " "), code, out, errOut)
		}
		return strings.TrimSpace(out)
	}
	keys := c.keysOnEveryShard("netns")
	for _, k := range keys {
		kvctl("put", k, "v-"+k)
	}
	for _, k := range keys {
		if got := kvctl("get", k); got != "v-"+k {
			t.Fatalf("kvctl get %s: %q, want %q", k, got, "v-"+k)
		}
	}
	kvctl("txn", "put", keys[0], "both", "put", keys[1], "both")
	var kvs []client.KeyValue
	for _, line := range strings.Split(kvctl("get", "-o", "json", keys[0], keys[1]), "\n") {
		var kv struct {
			Key, Value string
			Version    uint64
		}
		if err := json.Unmarshal([]byte(line), &kv); err != nil {
			t.Fatalf("kvctl get -o json: %q: %v", line, err)
		}
		kvs = append(kvs, client.KeyValue{Key: []byte(kv.Key), Value: []byte(kv.Value), Version: kv.Version})
	}
	if len(kvs) != 2 || string(kvs[0].Value) != "both" || string(kvs[1].Value) != "both" || kvs[0].Version != kvs[1].Version {
		t.Fatalf("after a transaction across shards: %s, want \"both\" on both at one version", describeKVs(kvs))
	}
	status := kvctl("status")
	for _, p := range procs {
		if !strings.Contains(status, p.Advertise) {
			t.Fatalf("kvctl status does not show %s at its advertised address %s:\n%s", p.Name, p.Advertise, status)
		}
	}

	// The master dies after the votes; the nodes settle the transaction by asking each other,
	// at their advertised addresses, and the restarted master reaches them at theirs.
	c.stop(txn.MasterName)
	c.startArmed(txn.MasterName, txn.PointMasterAfterVotes)
	cl := c.client()
	if _, err := cl.Txn(stepCtx(t), nil, client.Put([]byte(keys[0]), []byte("settled")), client.Put([]byte(keys[1]), []byte("settled"))); err == nil {
		t.Fatal("the master replied although it died at master.after-votes")
	}
	c.waitExit(txn.MasterName, 10*time.Second)
	waitNothingPreparedWithoutMaster(t, c, "node1", "node2")
	c.start(txn.MasterName)
	for _, k := range keys[:2] {
		if got := kvctl("get", k); got != "settled" {
			t.Fatalf("kvctl get %s after the nodes settled the transaction: %q, want \"settled\"", k, got)
		}
	}
}

// netnsNetwork is a bridge in the test's network namespace and one network namespace per
// process, each joined to the bridge by a veth pair and given an address of its own on a /24
// that the test's namespace (the bridge's address) shares.
type netnsNetwork struct {
	ns map[string]string // process name → namespace
	ip map[string]string // process name → its address
}

// newNetnsNetwork makes the network, and removes it when the test ends (after the cluster's
// processes are killed: t.Cleanup runs last first). It needs root and the ip command of
// iproute2 (make deps installs it), and fails the test, saying so, without them.
func newNetnsNetwork(t *testing.T, names []string) *netnsNetwork {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test makes network namespaces, veth pairs and a bridge: it needs root (CI runs the tests as root); run it as root, e.g. sudo go test -run TestProcessesInNetworkNamespaces ./cmd/e2e/")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("this test needs the ip command (Debian package iproute2; make deps installs it): ", err)
	}
	// Names and the subnet are this test process's own, so that runs side by side do not meet.
	tag := fmt.Sprintf("kv%d", os.Getpid()%100000)
	subnet := fmt.Sprintf("10.77.%d", os.Getpid()%250)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	cleanup := func(args ...string) {
		t.Cleanup(func() {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Errorf("cleanup: ip %s: %v: %s", strings.Join(args, " "), err, out)
			}
		})
	}
	br := tag + "br"
	ip("link", "add", br, "type", "bridge")
	cleanup("link", "del", br)
	ip("addr", "add", subnet+".254/24", "dev", br)
	ip("link", "set", br, "up")
	nw := &netnsNetwork{ns: map[string]string{}, ip: map[string]string{}}
	for i, name := range names {
		ns := fmt.Sprintf("kvtx-%s-%s", tag, name)
		ip("netns", "add", ns)
		cleanup("netns", "del", ns)
		outside, inside := fmt.Sprintf("%sh%d", tag, i), fmt.Sprintf("%sp%d", tag, i)
		ip("link", "add", outside, "type", "veth", "peer", "name", inside)
		// Deleting the namespace deletes the inside end, and with it the pair; this removes
		// the pair if the test fails before the inside end is moved.
		t.Cleanup(func() { _ = exec.Command("ip", "link", "del", outside).Run() })
		ip("link", "set", inside, "netns", ns)
		ip("link", "set", outside, "master", br, "up")
		addr := fmt.Sprintf("%s.%d", subnet, i+1)
		ip("-n", ns, "addr", "add", addr+"/24", "dev", inside)
		ip("-n", ns, "link", "set", inside, "up")
		ip("-n", ns, "link", "set", "lo", "up")
		nw.ns[name], nw.ip[name] = ns, addr
	}
	return nw
}

// certIPs returns the IP addresses a PEM certificate file names.
func certIPs(t *testing.T, path string) []string {
	t.Helper()
	crt := readCert(t, path)
	var ips []string
	for _, a := range crt.IPAddresses {
		ips = append(ips, a.String())
	}
	return ips
}
