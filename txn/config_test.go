package txn

import (
	"strings"
	"testing"
)

// spread is a cluster of one master and two nodes on machines of their own: each binds every
// interface on the same port and is dialled at its machine's address.
func spread() Config {
	cfg := DefaultConfig()
	cfg.Master.Listen, cfg.Master.Advertise, cfg.Master.Metrics = "0.0.0.0:9000", "10.0.0.1:9000", "0.0.0.0:9100"
	for i := range cfg.Nodes {
		cfg.Nodes[i].Listen, cfg.Nodes[i].Metrics = "0.0.0.0:9000", "0.0.0.0:9100"
	}
	cfg.Nodes[0].Advertise = "10.0.0.2:9000"
	cfg.Nodes[1].Advertise = "db2.example.com:9000"
	return cfg
}

// A process is dialled at its advertise address, or at its listen address when it has none.
func TestConfigDialAddrIsAdvertiseElseListen(t *testing.T) {
	p := Process{Listen: "127.0.0.1:9001"}
	if got := p.DialAddr(); got != "127.0.0.1:9001" {
		t.Fatalf("no advertise address: dialled at %q, want the listen address", got)
	}
	p.Advertise = "10.0.0.2:19001"
	if got := p.DialAddr(); got != "10.0.0.2:19001" {
		t.Fatalf("dialled at %q, want the advertise address", got)
	}
}

// Processes on machines of their own may bind the same wildcard address and keep their data
// in the same directory; each is dialled at an address of its own.
func TestConfigAcceptsWildcardListenWithAdvertise(t *testing.T) {
	cfg := spread()
	for i := range cfg.Nodes {
		cfg.Nodes[i].DataDir = cfg.Master.DataDir
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Nodes[0].Advertise = ""
	cfg.Nodes[0].Listen = "127.0.0.1:9001"
	cfg.Master.Advertise = ""
	cfg.Master.Listen = "127.0.0.1:9000"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "nodes[0].data_dir data/master is also used by master") {
		t.Fatalf("two processes of one machine sharing a data directory: %v", err)
	}
}

// A wildcard listen address with nothing to dial instead is refused, naming the advertise
// field to set, however the wildcard is spelt.
func TestConfigRefusesWildcardListenWithoutAdvertise(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:9001", "[::]:9001", ":9001"} {
		cfg := DefaultConfig()
		cfg.Nodes[0].Listen = listen
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), "nodes[0].listen "+listen+" binds every interface") || !strings.Contains(err.Error(), "set nodes[0].advertise") {
			t.Errorf("node1 on %s without advertise: %v, want refused naming nodes[0].advertise", listen, err)
		}
	}
	cfg := DefaultConfig()
	cfg.Master.Listen = "0.0.0.0:9000"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "set master.advertise") {
		t.Errorf("master on 0.0.0.0 without advertise: %v, want refused naming master.advertise", err)
	}
}

// An advertise address must be one to dial: a host that is no wildcard and a numeric port.
func TestConfigRefusesAdvertiseAddressesNoOneCanDial(t *testing.T) {
	for _, bad := range []string{"0.0.0.0:9001", "[::]:9001", ":9001", "db1", "db1:0", "db1:http", "db1:70000"} {
		cfg := spread()
		cfg.Nodes[0].Advertise = bad
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "nodes[0].advertise") {
			t.Errorf("advertise %q: %v, want refused naming nodes[0].advertise", bad, err)
		}
	}
}

// Two processes dialled at one address could not be told apart: refused, whether the address
// is advertised or listened on; two listening on one address of the same machine too.
func TestConfigRefusesTwoProcessesDialledAtOneAddress(t *testing.T) {
	cfg := spread()
	cfg.Nodes[1].Advertise = cfg.Nodes[0].Advertise
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "nodes[1]: nodes[0] is dialled at 10.0.0.2:9000 too") {
		t.Errorf("two nodes advertising one address: %v", err)
	}
	cfg = DefaultConfig()
	cfg.Nodes[1].Advertise = cfg.Nodes[0].Listen
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "dialled at 127.0.0.1:9001 too") {
		t.Errorf("a node advertising another's listen address: %v", err)
	}
	cfg = DefaultConfig()
	cfg.Nodes[1].Listen = cfg.Nodes[0].Listen
	err := cfg.Validate()
	if err == nil || strings.Count(err.Error(), "127.0.0.1:9001") != 1 || !strings.Contains(err.Error(), "also used by nodes[0].listen") {
		t.Errorf("two nodes listening on one address of one machine: %v, want it reported once", err)
	}
}

// The requests in flight get a sixteenth of the memory budget unless set, never less than one
// frame, and the result is a valid config.
func TestInFlightBudgetIsASixteenthOfTheMemoryBudget(t *testing.T) {
	for _, tc := range []struct {
		name             string
		limits           Limits
		memory, inflight int64
	}{
		{"defaults", Limits{}, 0, 8 << 20},
		{"bigger budget", Limits{}, 1 << 30, 64 << 20},
		{"bigger frames", Limits{MaxFrameBytes: 16 << 20}, 0, 16 << 20},
		{"set", Limits{MaxInFlightBytes: 32 << 20}, 1 << 30, 32 << 20},
	} {
		cfg := DefaultConfig()
		cfg.Limits, cfg.Storage.MemoryBytes = tc.limits, tc.memory
		cfg = cfg.WithDefaults()
		if got := cfg.Limits.MaxInFlightBytes; got != tc.inflight {
			t.Errorf("%s: max_inflight_bytes %d, want %d", tc.name, got, tc.inflight)
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
