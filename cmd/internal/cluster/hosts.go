package cluster

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"

	"github.com/kvtx/kvtx/txn"
)

// Host puts a process of a Cluster on a host of its own (a network namespace, a container, a
// machine reached by a command), in Config.Hosts.
type Host struct {
	// Advertise is the host (an IP address or a name) at which the other processes and the
	// clients dial the process: its config entry's advertise address is Advertise with the
	// process's port, and its metrics are served on Advertise too. Required.
	Advertise string
	// Listen is the host the process binds its protocol port on (default Advertise): with
	// "0.0.0.0" its config entry listens on every interface and only its advertise address
	// tells the others where it is.
	Listen string
	// Wrap is a command prefix the process runs under, such as ip netns exec NS. It must
	// exec the binary rather than run it as a child, as ip netns exec does, so that the pid the
	// Cluster signals and reports is the process's own.
	Wrap []string
}

// checkHosts reports what is wrong with cfg.Hosts, one error per problem.
func (cfg Config) checkHosts() []error {
	var errs []error
	if len(cfg.Hosts) > 0 && (cfg.FaultProxies || cfg.LossyDisks) {
		errs = append(errs, fmt.Errorf("Hosts cannot be combined with FaultProxies or LossyDisks: their proxies and mounts live on this host"))
	}
	for name, h := range cfg.Hosts {
		if h.Advertise == "" {
			errs = append(errs, fmt.Errorf("Hosts[%s].Advertise is required", name))
		}
	}
	return errs
}

// process returns the config entry of the process named name on the given ports: on
// 127.0.0.1, or as its Host says.
func (cfg Config) process(name string, port, metricsPort int, dataDir string) txn.Process {
	p := txn.Process{Name: name, DataDir: dataDir,
		Listen:  net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Metrics: net.JoinHostPort("127.0.0.1", strconv.Itoa(metricsPort))}
	h, ok := cfg.Hosts[name]
	if !ok {
		return p
	}
	listen := h.Listen
	if listen == "" {
		listen = h.Advertise
	}
	p.Listen = net.JoinHostPort(listen, strconv.Itoa(port))
	p.Advertise = net.JoinHostPort(h.Advertise, strconv.Itoa(port))
	p.Metrics = net.JoinHostPort(h.Advertise, strconv.Itoa(metricsPort))
	return p
}

// command returns the command line of a run of the named process: the binary with args,
// under its Host's Wrap if it has one.
func (cfg Config) command(name, binary string, args []string) *exec.Cmd {
	if w := cfg.Hosts[name].Wrap; len(w) > 0 {
		return exec.Command(w[0], append(append(w[1:len(w):len(w)], binary), args...)...)
	}
	return exec.Command(binary, args...)
}
