package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/client"
)

// buildSoakBinaries builds kvmaster and kvnode into a temporary directory.
func buildSoakBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/kvmaster", "./cmd/kvnode")
	cmd.Dir = ".." // the module root: this package's directory is bench/
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the binaries: %v\n%s", err, out)
	}
	return dir
}

// soakProcs are the child processes of one soak cluster.
type soakProcs struct {
	dir, logDir string
	run         int
	names       []string
	cmds        []*exec.Cmd
	done        []chan struct{}
}

// startSoakCluster returns a StartSoakCluster that runs a master and two nodes from bins as
// child processes, each cluster in a new directory under dir. Its stop function copies the
// processes' logs to logDir (as clusterN-NAME.log) and removes the cluster's directory.
func startSoakCluster(bins, dir, logDir string) StartSoakCluster {
	runs := 0
	return func(ctx context.Context, gc txn.GC) (*SoakCluster, func() error, error) {
		runs++
		cdir := filepath.Join(dir, fmt.Sprintf("cluster%d", runs))
		if err := os.MkdirAll(cdir, 0o755); err != nil {
			return nil, nil, err
		}
		ports, err := lowPorts(6)
		if err != nil {
			return nil, nil, err
		}
		addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[i]) }
		cfg := txn.Config{
			Master: txn.Process{Name: txn.MasterName, Listen: addr(0), Metrics: addr(1), DataDir: filepath.Join(cdir, "master")},
			GC:     gc,
		}
		for i := 1; i <= 2; i++ {
			name := fmt.Sprintf("node%d", i)
			cfg.Nodes = append(cfg.Nodes, txn.Process{Name: name, Listen: addr(2 * i), Metrics: addr(2*i + 1), DataDir: filepath.Join(cdir, name)})
		}
		cfg = cfg.WithDefaults()
		data, err := yaml.Marshal(cfg)
		if err != nil {
			return nil, nil, err
		}
		path := filepath.Join(cdir, "cluster.yaml")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return nil, nil, err
		}
		ps := &soakProcs{}
		spawn := func(name string, args ...string) error {
			log, err := os.Create(filepath.Join(cdir, name+".log"))
			if err != nil {
				return err
			}
			prog := "kvnode"
			if name == txn.MasterName {
				prog = "kvmaster"
			}
			flags := []string{"--config", path, "--log-level", "warn"}
			if os.Getenv("KVTX_SOAK_PPROF") == "1" {
				flags = append(flags, "--pprof")
			}
			cmd := exec.Command(filepath.Join(bins, prog), append(flags, args...)...)
			cmd.Stdout, cmd.Stderr = log, log
			if err := cmd.Start(); err != nil {
				log.Close()
				return err
			}
			done := make(chan struct{})
			go func() { cmd.Wait(); log.Close(); close(done) }()
			ps.names, ps.cmds, ps.done = append(ps.names, name), append(ps.cmds, cmd), append(ps.done, done)
			return nil
		}
		for _, n := range cfg.Nodes {
			if err := spawn(n.Name, n.Name); err != nil {
				ps.stop()
				return nil, nil, err
			}
		}
		if err := spawn(txn.MasterName); err != nil {
			ps.stop()
			return nil, nil, err
		}
		if err := ps.waitUp(ctx, cfg.Master.Listen); err != nil {
			ps.stop()
			return nil, nil, fmt.Errorf("%w (logs in %s)", err, cdir)
		}
		ps.dir, ps.logDir, ps.run = cdir, logDir, runs
		cl := &SoakCluster{Endpoint: cfg.Master.Listen}
		pid := func(name string) int {
			for i, n := range ps.names {
				if n == name {
					return ps.cmds[i].Process.Pid
				}
			}
			return 0
		}
		for _, p := range append([]txn.Process{cfg.Master}, cfg.Nodes...) {
			cl.Processes = append(cl.Processes, SoakProcess{Name: p.Name, PID: pid(p.Name), DataDir: p.DataDir, MetricsAddr: p.Metrics})
		}
		return cl, ps.stop, nil
	}
}

// waitUp waits until the master reports every node up, up to 30 seconds.
func (ps *soakProcs) waitUp(ctx context.Context, endpoint string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		for i, d := range ps.done {
			select {
			case <-d:
				return fmt.Errorf("%s exited at start: %v", ps.names[i], ps.cmds[i].ProcessState)
			default:
			}
		}
		err := func() error {
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			cl, err := client.Dial(sctx, endpoint, client.Options{})
			if err != nil {
				return err
			}
			defer cl.Close()
			procs, err := cl.Status(sctx)
			if err != nil {
				return err
			}
			for _, p := range procs {
				if !p.Up {
					return fmt.Errorf("%s is down: %s", p.Name, p.Error)
				}
			}
			return nil
		}()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the cluster did not come up within 30s: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stop sends SIGTERM to every process, the master first, and SIGKILL to one that has not
// exited 15 seconds later. It returns an error for each process that did not exit 0 by itself.
func (ps *soakProcs) stop() error {
	var errs []error
	for i := len(ps.cmds) - 1; i >= 0; i-- { // the master was started last
		ps.cmds[i].Process.Signal(syscall.SIGTERM)
		select {
		case <-ps.done[i]:
			if !ps.cmds[i].ProcessState.Success() {
				errs = append(errs, fmt.Errorf("%s exited with %v", ps.names[i], ps.cmds[i].ProcessState))
			}
		case <-time.After(15 * time.Second):
			ps.cmds[i].Process.Kill()
			<-ps.done[i]
			errs = append(errs, fmt.Errorf("%s did not stop within 15s of SIGTERM", ps.names[i]))
		}
	}
	if ps.logDir != "" {
		for _, name := range ps.names {
			if data, err := os.ReadFile(filepath.Join(ps.dir, name+".log")); err == nil {
				os.WriteFile(filepath.Join(ps.logDir, fmt.Sprintf("cluster%d-%s.log", ps.run, name)), data, 0o644)
			}
		}
		os.RemoveAll(ps.dir)
	}
	return errors.Join(errs...)
}

// lowPorts returns n free ports of 127.0.0.1 below the kernel's ephemeral range (from 10000
// to 32768, or to the range's start), so that no outgoing connection takes one as its source
// port before the process meant for it listens.
func lowPorts(n int) ([]int, error) {
	lo, hi := 10000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var eLo, eHi int
		if _, err := fmt.Sscan(string(b), &eLo, &eHi); err == nil && eLo > lo+1000 {
			hi = eLo
		}
	}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	start := rand.IntN(hi - lo)
	for i := 0; i < hi-lo && len(ports) < n; i++ {
		port := lo + (start+i)%(hi-lo)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ls = append(ls, l)
		ports = append(ports, port)
	}
	if len(ports) < n {
		return nil, fmt.Errorf("%d free ports wanted below %d, found %d", n, hi, len(ports))
	}
	return ports, nil
}
