package cluster

import (
	"fmt"
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

// FreePorts returns n distinct free TCP ports on 127.0.0.1 (free when it returns: another
// process could take one before the caller listens on it, which tests accept).
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("cluster: free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
