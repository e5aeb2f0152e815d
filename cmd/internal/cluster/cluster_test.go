package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/kvtx/kvtx/txn"
)

// readConfig decodes a config file the way the binaries do: unknown fields are errors.
func readConfig(t *testing.T, path string) txn.Config {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg txn.Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("%s: %v\n%s", path, err, data)
	}
	return cfg.WithDefaults()
}

func TestWriteConfigRoundTripsEveryField(t *testing.T) {
	want := txn.DefaultConfig()
	want.Timeouts = ShortTimeouts()
	want.Limits.MaxTxnOps = 7
	want.Nodes[1].Metrics = ""
	want.TLS.Metrics = true
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := WriteConfig(path, want); err != nil {
		t.Fatal(err)
	}
	if got := readConfig(t, path); !reflect.DeepEqual(got, want) {
		t.Fatalf("read back %+v\nwant %+v", got, want)
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), "in_doubt: 300ms") {
		t.Fatalf("durations are not written as Go durations:\n%s", data)
	}
}

func TestNewWritesOneConfigWithoutProxies(t *testing.T) {
	dir := t.TempDir()
	c, err := New(Config{Binaries: Binaries{Dir: dir}, Dir: dir, Nodes: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := c.Config()
	if got := readConfig(t, c.ConfigPath()); !reflect.DeepEqual(got, cfg) {
		t.Fatalf("%s holds %+v, want %+v", c.ConfigPath(), got, cfg)
	}
	if cfg.Timeouts != ShortTimeouts() || len(cfg.Nodes) != 3 || cfg.Nodes[2].Name != "node3" {
		t.Fatalf("config %+v", cfg)
	}
	if names := c.Names(); !reflect.DeepEqual(names, []string{"master", "node1", "node2", "node3"}) {
		t.Fatalf("names %v", names)
	}
	if c.ClientAddr() != cfg.Master.Listen || c.Proxy(ClientToMaster) != nil {
		t.Fatalf("clients dial %s through %v, want the master at %s directly", c.ClientAddr(), c.Proxy(ClientToMaster), cfg.Master.Listen)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Nodes[0].Name = "changed"
	if c.Config().Nodes[0].Name != "node1" {
		t.Fatal("Config returns the cluster's own node list")
	}
}

// TestNewPutsAProxyOnEveryLink checks that each process's own config names its peers at their
// proxies and itself at its real address, and that every proxy forwards to the real one.
func TestNewPutsAProxyOnEveryLink(t *testing.T) {
	dir := t.TempDir()
	c, err := New(Config{Binaries: Binaries{Dir: dir}, Dir: dir, FaultProxies: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	real := c.Config()
	master := readConfig(t, filepath.Join(dir, "master.yaml"))
	if master.Master != real.Master {
		t.Fatalf("the master's own entry %+v, want %+v", master.Master, real.Master)
	}
	for i, n := range real.Nodes {
		p := c.Proxy(MasterToNode(n.Name))
		if p == nil || master.Nodes[i].Listen != p.Addr() || p.target != n.Listen {
			t.Fatalf("the master reaches %s at %s, want its proxy %v to %s", n.Name, master.Nodes[i].Listen, p, n.Listen)
		}
		node := readConfig(t, filepath.Join(dir, n.Name+".yaml"))
		back := c.Proxy(NodeToMaster(n.Name))
		if back == nil || node.Master.Listen != back.Addr() || back.target != real.Master.Listen {
			t.Fatalf("%s reaches the master at %s, want its proxy %v", n.Name, node.Master.Listen, back)
		}
		if !reflect.DeepEqual(node.Nodes, real.Nodes) {
			t.Fatalf("%s's nodes %+v, want the real ones %+v", n.Name, node.Nodes, real.Nodes)
		}
	}
	if p := c.Proxy(ClientToMaster); p == nil || c.ClientAddr() != p.Addr() || p.target != real.Master.Listen {
		t.Fatalf("clients dial %s, want the client->master proxy", c.ClientAddr())
	}
	if got := readConfig(t, c.ConfigPath()); !reflect.DeepEqual(got, real) {
		t.Fatalf("%s holds %+v, want the real addresses %+v", c.ConfigPath(), got, real)
	}
}

func TestNewReportsEveryConfigProblem(t *testing.T) {
	_, err := New(Config{LossyDisks: true, Nodes: -1, Insecure: true, MetricsTLS: true})
	for _, want := range []string{"Binaries.Dir", "Dir is required", "Binaries.LossyFS", "Nodes is -1", "MetricsTLS needs TLS"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %q", err, want)
		}
	}
}

func TestStartRefusesAnUnknownProcessAndAClosedCluster(t *testing.T) {
	dir := t.TempDir()
	c, err := New(Config{Binaries: Binaries{Dir: dir}, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background(), "node9"); err == nil || !strings.Contains(err.Error(), `no process named "node9"`) {
		t.Fatalf("start of node9: %v", err)
	}
	if _, err := c.WaitExit(context.Background(), "node1"); err == nil {
		t.Fatal("WaitExit of a process never started returned")
	}
	if err := c.Stop("node1", 0); err != nil {
		t.Fatalf("stop of a process never started: %v", err)
	}
	if _, err := c.PowerCut("node1"); err == nil {
		t.Fatal("power cut without lossy file systems")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background(), "node1"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("start after Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// FreePorts hands out distinct ports below the kernel's ephemeral range, where no outgoing
// connection can take one before the process meant to listen on it does.
func TestFreePortsLieBelowTheEphemeralRange(t *testing.T) {
	ports, err := FreePorts(40)
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := portRange()
	seen := map[int]bool{}
	for _, p := range ports {
		if p < lo || p >= hi || seen[p] {
			t.Fatalf("port %d: outside [%d, %d) or given twice (%v)", p, lo, hi, ports)
		}
		seen[p] = true
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var ephLo int
		if _, err := fmt.Sscan(string(b), &ephLo); err == nil && hi > ephLo {
			t.Fatalf("range ends at %d, inside the ephemeral range from %d", hi, ephLo)
		}
	}
}

// A process on a Host of its own listens where the Host says, is dialled at its advertise
// address (by the harness too), and runs under the Host's command prefix; Hosts refuse the
// proxies and lossy disks that live on this host.
func TestNewPutsProcessesOnTheirHosts(t *testing.T) {
	dir := t.TempDir()
	hosts := map[string]Host{"node1": {Advertise: "10.0.0.2", Listen: "0.0.0.0", Wrap: []string{"ip", "netns", "exec", "ns1"}}}
	c, err := New(Config{Binaries: Binaries{Dir: dir}, Dir: dir, Insecure: true, Hosts: hosts})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	node1, _ := c.Config().Node("node1")
	_, port, _ := strings.Cut(node1.Listen, ":")
	if node1.Listen != "0.0.0.0:"+port || node1.Advertise != "10.0.0.2:"+port || c.Addr("node1") != node1.Advertise {
		t.Fatalf("node1 listens on %s, advertises %s and is dialled at %s; want 0.0.0.0, 10.0.0.2 and its advertise address", node1.Listen, node1.Advertise, c.Addr("node1"))
	}
	if node2, _ := c.Config().Node("node2"); node2.Advertise != "" || c.Addr("node2") != node2.Listen {
		t.Fatalf("node2, on no host of its own: %+v, dialled at %s", node2, c.Addr("node2"))
	}
	if got := readConfig(t, c.ConfigPath()); !reflect.DeepEqual(got, c.Config()) {
		t.Fatalf("%s holds %+v, want %+v", c.ConfigPath(), got, c.Config())
	}
	cmd := c.cfg.command("node1", "/bin/kvnode", []string{"--config", "c.yaml", "node1"})
	if want := []string{"ip", "netns", "exec", "ns1", "/bin/kvnode", "--config", "c.yaml", "node1"}; !reflect.DeepEqual(cmd.Args, want) {
		t.Fatalf("node1 runs as %q, want %q", cmd.Args, want)
	}
	if hosts["node1"].Wrap[len(hosts["node1"].Wrap)-1] != "ns1" {
		t.Fatal("building a command line changed the Host's Wrap")
	}
	_, err = New(Config{Binaries: Binaries{Dir: dir}, Dir: dir, FaultProxies: true, Hosts: map[string]Host{"node1": {}}})
	for _, want := range []string{"Hosts cannot be combined with FaultProxies", "Hosts[node1].Advertise is required"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %q", err, want)
		}
	}
}
