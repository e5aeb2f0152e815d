// Package e2e holds kvtx's end-to-end tests: they build the real binaries (with the
// crashpoints tag, inert unless KVTX_CRASH_AT is set), run a master and nodes as processes on
// 127.0.0.1 with temporary data directories, and talk to them over real TCP with the Go client
// and kvctl.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kvtx/kvtx/cmd/lossyfs/lossy"
	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/cmd/chaos"
	"github.com/kvtx/kvtx/txn/client"
	"github.com/kvtx/kvtx/wire"
)

// binDir holds the binaries built once by TestMain; lossyBin is the lossy file system's.
var binDir, lossyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kvtx-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := chaos.BuildBinaries(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if lossyBin, err = lossy.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports, err := chaos.FreePorts(n)
	if err != nil {
		t.Fatal(err)
	}
	return ports
}

// proc is one running kvtx process.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *os.File
	done chan struct{}
	err  error
}

// cluster is a master and its nodes as real processes.
type cluster struct {
	t       *testing.T
	dir     string
	cfgPath string
	cfg     txn.Config
	mu      sync.Mutex
	procs   map[string]*proc
	starts  int
	// disks holds, for a cluster made by preparePowerLossCluster, each process's lossy file
	// system, which holds its data directory.
	disks map[string]*lossy.Process
}

// newCluster writes a config for a master and n nodes on free ports with short protocol
// timeouts, and starts every process.
func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c := prepareCluster(t, n)
	c.startAll()
	return c
}

// prepareCluster writes the config without starting anything.
func prepareCluster(t *testing.T, n int) *cluster {
	t.Helper()
	dir := t.TempDir()
	return prepareClusterIn(t, n, dir, func(name string) string { return filepath.Join(dir, name) })
}

// preparePowerLossCluster is prepareCluster with each process's data directory on a lossy file
// system of its own (one machine each), whose power cutPower cuts.
func preparePowerLossCluster(t *testing.T, n int) *cluster {
	t.Helper()
	if err := lossy.Available(); err != nil {
		t.Fatal(err)
	}
	disks := map[string]*lossy.Process{}
	names := []string{"master"}
	for i := range n {
		names = append(names, fmt.Sprintf("node%d", i+1))
	}
	for _, name := range names {
		d, err := lossy.Start(lossyBin, t.TempDir(), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { // after the processes using it are killed (cleanups run last first)
			if err := d.Stop(); err != nil {
				t.Error(err)
			}
		})
		disks[name] = d
	}
	c := prepareClusterIn(t, n, t.TempDir(), func(name string) string { return filepath.Join(disks[name].Mountpoint, "data") })
	c.disks = disks
	return c
}

// cutPower SIGKILLs the named processes (those running) and then cuts the power of their
// machines at once: their file systems forget every write that was not fsynced.
func (c *cluster) cutPower(names ...string) {
	c.t.Helper()
	for _, name := range names {
		c.kill(name)
	}
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Go(func() {
			sum, err := c.disks[name].Crash()
			if err != nil {
				c.t.Errorf("power cut of %s: %v", name, err)
				return
			}
			c.t.Logf("power cut of %s: %v", name, sum)
		})
	}
	wg.Wait()
	if c.t.Failed() {
		c.t.FailNow()
	}
}

// prepareClusterIn writes the config, in dir, for processes whose data directories dataDir
// names.
func prepareClusterIn(t *testing.T, n int, dir string, dataDir func(name string) string) *cluster {
	t.Helper()
	ports := freePorts(t, 2*(n+1))
	cfg := txn.Config{
		Master: txn.Process{Listen: fmt.Sprintf("127.0.0.1:%d", ports[0]), Metrics: fmt.Sprintf("127.0.0.1:%d", ports[1]), DataDir: dataDir("master")},
		Timeouts: txn.Timeouts{
			Prepare: 2 * time.Second, CommitWait: time.Second, InDoubt: 300 * time.Millisecond,
			Resolve: 100 * time.Millisecond, LockWait: 2 * time.Second, Request: 2 * time.Second,
		},
	}
	var y strings.Builder
	fmt.Fprintf(&y, "master: {listen: %q, metrics: %q, data_dir: %q}\nnodes:\n", cfg.Master.Listen, cfg.Master.Metrics, cfg.Master.DataDir)
	for i := 0; i < n; i++ {
		p := txn.Process{
			Name:    fmt.Sprintf("node%d", i+1),
			Listen:  fmt.Sprintf("127.0.0.1:%d", ports[2+2*i]),
			Metrics: fmt.Sprintf("127.0.0.1:%d", ports[3+2*i]),
			DataDir: dataDir(fmt.Sprintf("node%d", i+1)),
		}
		cfg.Nodes = append(cfg.Nodes, p)
		fmt.Fprintf(&y, "  - {name: %s, listen: %q, metrics: %q, data_dir: %q}\n", p.Name, p.Listen, p.Metrics, p.DataDir)
	}
	fmt.Fprintf(&y, "timeouts: {prepare: 2s, commit_wait: 1s, in_doubt: 300ms, resolve: 100ms, lock_wait: 2s, request: 2s}\n")
	cfgPath := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(cfgPath, []byte(y.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, dir: dir, cfgPath: cfgPath, cfg: cfg.WithDefaults(), procs: map[string]*proc{}}
	t.Cleanup(c.killAll)
	return c
}

func (c *cluster) startAll() {
	for _, n := range c.cfg.Nodes {
		c.start(n.Name)
	}
	c.start("master")
}

// addr returns the protocol address of a process.
func (c *cluster) addr(name string) string {
	if name == "master" {
		return c.cfg.Master.Listen
	}
	p, err := c.cfg.Node(name)
	if err != nil {
		c.t.Fatal(err)
	}
	return p.Listen
}

// start starts a process and waits until it accepts a hello. env adds environment variables.
func (c *cluster) start(name string, env ...string) *proc {
	c.t.Helper()
	p := c.spawn(name, env...)
	c.waitReady(p)
	return p
}

// spawn starts a process without waiting for it.
func (c *cluster) spawn(name string, env ...string) *proc {
	c.t.Helper()
	c.mu.Lock()
	c.starts++
	logPath := filepath.Join(c.dir, fmt.Sprintf("%s.%d.log", name, c.starts))
	c.mu.Unlock()
	out, err := os.Create(logPath)
	if err != nil {
		c.t.Fatal(err)
	}
	var cmd *exec.Cmd
	if name == "master" {
		cmd = exec.Command(filepath.Join(binDir, "kvmaster"), "--config", c.cfgPath, "--log-level", "debug")
	} else {
		cmd = exec.Command(filepath.Join(binDir, "kvnode"), "--config", c.cfgPath, "--log-level", "debug", name)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	c.mu.Lock()
	c.procs[name] = p
	c.mu.Unlock()
	return p
}

func (c *cluster) waitReady(p *proc) {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-p.done:
			c.t.Fatalf("%s exited during start-up: %v\n%s", p.name, p.err, c.logs(p.name))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := wire.Dial(ctx, c.addr(p.name), wire.DialOptions{Role: "client", Name: "e2e"})
		cancel()
		if err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s not ready after 15s: %v\n%s", p.name, err, c.logs(p.name))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logs returns the output of every run of a process.
func (c *cluster) logs(name string) string {
	files, _ := filepath.Glob(filepath.Join(c.dir, name+".*.log"))
	var b strings.Builder
	for _, f := range files {
		data, _ := os.ReadFile(f)
		fmt.Fprintf(&b, "--- %s ---\n%s", filepath.Base(f), data)
	}
	return b.String()
}

// kill sends SIGKILL and waits for the process to die.
func (c *cluster) kill(name string) {
	c.t.Helper()
	c.mu.Lock()
	p := c.procs[name]
	c.mu.Unlock()
	if p == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits for a clean exit.
func (c *cluster) stop(name string) {
	c.t.Helper()
	c.mu.Lock()
	p := c.procs[name]
	c.mu.Unlock()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		c.t.Fatalf("%s did not stop within 15s of SIGTERM", name)
	}
	if p.err != nil {
		c.t.Fatalf("%s exited with %v after SIGTERM\n%s", name, p.err, c.logs(name))
	}
}

// waitExit waits for a process to exit by itself (a crash point) and returns how it ended.
func (c *cluster) waitExit(name string, within time.Duration) error {
	c.t.Helper()
	c.mu.Lock()
	p := c.procs[name]
	c.mu.Unlock()
	select {
	case <-p.done:
		return p.err
	case <-time.After(within):
		c.t.Fatalf("%s still running after %v", name, within)
		return nil
	}
}

func (c *cluster) killAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
	if c.t.Failed() {
		for name := range c.procs {
			c.t.Logf("logs of %s:\n%s", name, c.logs(name))
		}
	}
}

// client dials the master.
func (c *cluster) client() *client.Client {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, c.cfg.Master.Listen, client.Options{Timeout: 10 * time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// kvctl runs the CLI against the cluster and returns stdout, stderr and the exit status.
func (c *cluster) kvctl(args ...string) (string, string, int) {
	c.t.Helper()
	return runKvctl(c.t, append([]string{"--endpoint", c.cfg.Master.Listen}, args...)...)
}

func runKvctl(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return runKvctlWithInput(t, nil, args...)
}

// runKvctlWithInput is runKvctl with stdin as the CLI's standard input.
func runKvctlWithInput(t *testing.T, stdin io.Reader, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "kvctl"), args...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// keysOnEveryShard returns, for each shard in order, a key with the given prefix that it owns.
func (c *cluster) keysOnEveryShard(prefix string) []string {
	sm := c.cfg.ShardMap()
	keys := make([]string, sm.Len())
	found := 0
	for i := 0; found < sm.Len(); i++ {
		k := fmt.Sprintf("%s%d", prefix, i)
		s := sm.Shard([]byte(k))
		if keys[s] == "" {
			keys[s] = k
			found++
		}
	}
	return keys
}

// waitQuiet waits until no node holds a lock or a prepared transaction, and fails the test
// with the status if that does not happen within d.
func (c *cluster) waitQuiet(cl *client.Client, d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	var last string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		procs, err := cl.Status(ctx)
		cancel()
		if err == nil {
			quiet := true
			var b strings.Builder
			for _, p := range procs {
				fmt.Fprintf(&b, "%s up=%v locks=%d prepared=%d in_doubt=%d err=%s; ", p.Name, p.Up, p.LocksHeld, len(p.Prepared), p.InDoubt, p.Error)
				if !p.Up || p.LocksHeld != 0 || len(p.Prepared) != 0 {
					quiet = false
				}
			}
			last = b.String()
			if quiet {
				return
			}
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("cluster not quiet after %v: %s", d, last)
}

// ctx returns a context bounded for one test step.
func stepCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
