package cluster

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kvtx/kvtx/txn"
)

// ShortTimeouts are protocol timeouts short enough for recovery to take well under a second:
// prepare 2s, commit_wait 1s, in_doubt 300ms, resolve 100ms, lock_wait 2s, request 2s. Every
// Cluster runs on them unless its Config says otherwise.
func ShortTimeouts() txn.Timeouts {
	return txn.Timeouts{
		Prepare: 2 * time.Second, CommitWait: time.Second, InDoubt: 300 * time.Millisecond,
		Resolve: 100 * time.Millisecond, LockWait: 2 * time.Second, Request: 2 * time.Second,
	}
}

// ClientToMaster names the link, in a Cluster with FaultProxies, that carries clients'
// requests to the master (and their replies).
const ClientToMaster = "client->master"

// MasterToNode names the link that carries the master's requests to a node (and their
// replies).
func MasterToNode(node string) string { return "master->" + node }

// NodeToMaster names the link that carries a node's questions to the master (outcomes of the
// transactions it holds prepared).
func NodeToMaster(node string) string { return node + "->master" }

// WriteConfig writes cfg to path as the YAML file that kvmaster, kvnode and kvctl read with
// --config.
func WriteConfig(path string, cfg txn.Config) error {
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("cluster: encode config: %w", err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("cluster: write config: %w", err)
	}
	return nil
}

// FreePorts returns n distinct free TCP ports on 127.0.0.1, free when it returns. They lie
// below the kernel's ephemeral range (ip_local_port_range), so that between now and the moment
// the caller's process listens on one, no outgoing connection can take it as its source port
// and no listener on port 0 can be given it: a test cluster's processes dial many connections
// while their peers are still starting. Another process could still take one, by choosing the
// same port, which tests accept.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	lo, hi := portRange()
	var ports []int
	start := lo + rand.IntN(hi-lo)
	for i := 0; i < hi-lo && len(ports) < n; i++ {
		port := lo + (start-lo+i)%(hi-lo)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // in use
		}
		ls = append(ls, l)
		ports = append(ports, port)
	}
	if len(ports) < n {
		return nil, fmt.Errorf("cluster: %d free ports wanted in [%d, %d), found %d", n, lo, hi, len(ports))
	}
	return ports, nil
}

// portRange is where FreePorts looks: from 10000 up to the kernel's ephemeral range (Linux's
// default starts at 32768).
func portRange() (lo, hi int) {
	lo, hi = 10000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var ephLo, ephHi int
		if _, err := fmt.Sscan(string(b), &ephLo, &ephHi); err == nil && ephLo > lo+1000 {
			hi = ephLo
		}
	}
	return lo, hi
}
