package chaos

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kvtx/kvtx/cmd/lossyfs/lossy"
	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/client"
	"github.com/kvtx/kvtx/wire"
)

// ClusterConfig describes a cluster of real kvmaster and kvnode processes on 127.0.0.1.
type ClusterConfig struct {
	// BinDir holds kvmaster and kvnode (built with -tags crashpoints for crash-point faults).
	BinDir string
	// Dir receives the config files, data directories and process logs.
	Dir string
	// Nodes is the number of shard nodes (default 2).
	Nodes int
	// Timeouts are the protocol's clocks; zero fields take the short defaults of
	// ShortTimeouts.
	Timeouts txn.Timeouts
	// StartTimeout bounds how long a process may take to accept a hello (default 15s).
	StartTimeout time.Duration
	// LossyBin, if set, is the lossyfs binary (BuildLossyFS): every process then gets a lossy
	// file system of its own (one machine each) that holds its data directory, and PowerCut
	// can cut its power. Without it the data directories are plain ones under Dir.
	LossyBin string
}

// ShortTimeouts are protocol timeouts short enough for recovery to take well under a second:
// prepare 2s, commit_wait 1s, in_doubt 300ms, resolve 100ms, lock_wait 2s, request 2s.
func ShortTimeouts() txn.Timeouts {
	return txn.Timeouts{
		Prepare: 2 * time.Second, CommitWait: time.Second, InDoubt: 300 * time.Millisecond,
		Resolve: 100 * time.Millisecond, LockWait: 2 * time.Second, Request: 2 * time.Second,
	}
}

// Exit is how a process run ended.
type Exit struct {
	// Name is the process.
	Name string
	// Run numbers the process's starts from 1.
	Run int
	// At is when the exit was seen.
	At time.Time
	// Err is what Wait returned (nil: status 0).
	Err error
	// Expected says the runner caused it: a signal it sent, or a crash point it armed.
	Expected bool
	// Cause describes it: "sigkill", "sigterm", "crashpoint POINT:N", or "unexpected".
	Cause string
}

// process is one run of a kvtx binary.
type process struct {
	name    string
	run     int
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	crashAt string // armed crash point, if any
	// expect is set before the runner signals the process, so its exit is not a crash.
	expect  string
	stopped bool // SIGSTOPped
}

// Cluster runs a master and its nodes as real processes and puts a Proxy on every link: the
// master reaches each node through "master->NODE", each node reaches the master through
// "NODE->master", and workload clients reach the master through "client->master". Each process
// gets its own config file so that its peers' addresses are the proxies' while its own listen
// address is real. A Cluster is safe for concurrent use.
type Cluster struct {
	cfg     ClusterConfig
	base    txn.Config // real addresses
	proxies map[string]*Proxy
	cfgPath map[string]string
	// disks holds each process's lossy file system when ClusterConfig.LossyBin is set.
	disks map[string]*lossy.Process

	mu struct {
		sync.Mutex
		procs  map[string]*process
		runs   map[string]int
		exits  []Exit
		closed bool
	}
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
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("chaos: free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// NewCluster writes the config files and starts the proxies, but no process; call StartAll.
func NewCluster(cfg ClusterConfig) (*Cluster, error) {
	if cfg.BinDir == "" || cfg.Dir == "" {
		return nil, errors.New("chaos: ClusterConfig needs BinDir and Dir")
	}
	if cfg.Nodes <= 0 {
		cfg.Nodes = 2
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 15 * time.Second
	}
	def := ShortTimeouts()
	t := &cfg.Timeouts
	for _, f := range []struct{ p, d *time.Duration }{{&t.Prepare, &def.Prepare}, {&t.CommitWait, &def.CommitWait}, {&t.InDoubt, &def.InDoubt}, {&t.Resolve, &def.Resolve}, {&t.LockWait, &def.LockWait}, {&t.Request, &def.Request}} {
		if *f.p == 0 {
			*f.p = *f.d
		}
	}
	ports, err := FreePorts(2 * (cfg.Nodes + 1))
	if err != nil {
		return nil, err
	}
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[i]) }
	names := []string{txn.MasterName}
	for i := 0; i < cfg.Nodes; i++ {
		names = append(names, fmt.Sprintf("node%d", i+1))
	}
	c := &Cluster{cfg: cfg, proxies: map[string]*Proxy{}, cfgPath: map[string]string{}}
	c.mu.procs = map[string]*process{}
	c.mu.runs = map[string]int{}
	fail := func(err error) (*Cluster, error) {
		c.closeProxies()
		c.stopDisks()
		return nil, err
	}
	dataDir := func(name string) string { return filepath.Join(cfg.Dir, name) }
	if cfg.LossyBin != "" {
		if err := c.mountDisks(names); err != nil {
			return fail(err)
		}
		dataDir = func(name string) string { return filepath.Join(c.disks[name].Mountpoint, "data") }
	}
	base := txn.Config{
		Master:   txn.Process{Name: txn.MasterName, Listen: addr(0), Metrics: addr(1), DataDir: dataDir(txn.MasterName)},
		Timeouts: cfg.Timeouts,
	}
	for i, name := range names[1:] {
		base.Nodes = append(base.Nodes, txn.Process{Name: name, Listen: addr(2 + 2*i), Metrics: addr(3 + 2*i), DataDir: dataDir(name)})
	}
	c.base = base.WithDefaults()
	add := func(name, target string) error {
		p, err := NewProxy(name, target)
		if err != nil {
			return err
		}
		c.proxies[name] = p
		return nil
	}
	if err := add("client->master", base.Master.Listen); err != nil {
		return fail(err)
	}
	for _, n := range base.Nodes {
		if err := add("master->"+n.Name, n.Listen); err != nil {
			return fail(err)
		}
		if err := add(n.Name+"->master", base.Master.Listen); err != nil {
			return fail(err)
		}
	}
	// The master's view: nodes at their proxies.
	mview := c.base
	mview.Nodes = append([]txn.Process(nil), c.base.Nodes...)
	for i := range mview.Nodes {
		mview.Nodes[i].Listen = c.proxies["master->"+mview.Nodes[i].Name].Addr()
	}
	if err := c.writeConfig(txn.MasterName, mview); err != nil {
		return fail(err)
	}
	for _, n := range base.Nodes {
		nview := c.base
		nview.Master.Listen = c.proxies[n.Name+"->master"].Addr()
		if err := c.writeConfig(n.Name, nview); err != nil {
			return fail(err)
		}
	}
	return c, nil
}

// mountDisks starts one lossy file system per process, its backing directory and its
// mountpoint side by side under Dir/disks.
func (c *Cluster) mountDisks(names []string) error {
	if err := lossy.Available(); err != nil {
		return fmt.Errorf("chaos: power loss needs a lossy file system: %w", err)
	}
	c.disks = map[string]*lossy.Process{}
	root := filepath.Join(c.cfg.Dir, "disks")
	for _, name := range names {
		backing, mountpoint := filepath.Join(root, name+".backing"), filepath.Join(root, name)
		for _, d := range []string{backing, mountpoint} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("chaos: %w", err)
			}
		}
		d, err := lossy.Start(c.cfg.LossyBin, backing, mountpoint)
		if err != nil {
			return fmt.Errorf("chaos: disk of %s: %w", name, err)
		}
		c.disks[name] = d
	}
	return nil
}

// stopDisks unmounts every lossy file system; the processes using them must be dead.
func (c *Cluster) stopDisks() []error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(c.disks)) {
		if err := c.disks[name].Stop(); err != nil {
			errs = append(errs, fmt.Errorf("chaos: disk of %s: %w", name, err))
		}
	}
	return errs
}

// Lossy reports whether the data directories are on lossy file systems (PowerCut works).
func (c *Cluster) Lossy() bool { return c.disks != nil }

func (c *Cluster) writeConfig(name string, cfg txn.Config) error {
	var y strings.Builder
	fmt.Fprintf(&y, "master: {listen: %q, metrics: %q, data_dir: %q}\nnodes:\n", cfg.Master.Listen, cfg.Master.Metrics, cfg.Master.DataDir)
	for _, n := range cfg.Nodes {
		fmt.Fprintf(&y, "  - {name: %s, listen: %q, metrics: %q, data_dir: %q}\n", n.Name, n.Listen, n.Metrics, n.DataDir)
	}
	t := cfg.Timeouts
	fmt.Fprintf(&y, "timeouts: {prepare: %s, commit_wait: %s, in_doubt: %s, resolve: %s, lock_wait: %s, request: %s}\n",
		t.Prepare, t.CommitWait, t.InDoubt, t.Resolve, t.LockWait, t.Request)
	if err := os.MkdirAll(c.cfg.Dir, 0o755); err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	path := filepath.Join(c.cfg.Dir, name+".yaml")
	if err := os.WriteFile(path, []byte(y.String()), 0o644); err != nil {
		return fmt.Errorf("chaos: write config: %w", err)
	}
	c.cfgPath[name] = path
	return nil
}

// Config returns the cluster config with the real addresses.
func (c *Cluster) Config() txn.Config { return c.base }

// Names returns the processes: "master" first, then the nodes in shard order.
func (c *Cluster) Names() []string {
	names := []string{txn.MasterName}
	for _, n := range c.base.Nodes {
		names = append(names, n.Name)
	}
	return names
}

// Proxy returns the proxy of a link ("client->master", "master->node1", "node1->master").
func (c *Cluster) Proxy(name string) *Proxy { return c.proxies[name] }

// Proxies returns every proxy.
func (c *Cluster) Proxies() []*Proxy {
	var out []*Proxy
	for _, p := range c.proxies {
		out = append(out, p)
	}
	return out
}

// ClientAddr is the address workload clients dial: the client->master proxy.
func (c *Cluster) ClientAddr() string { return c.proxies["client->master"].Addr() }

// Addr returns a process's real protocol address.
func (c *Cluster) Addr(name string) string {
	if name == txn.MasterName {
		return c.base.Master.Listen
	}
	p, _ := c.base.Node(name)
	return p.Listen
}

// MetricsAddr returns a process's real metrics address.
func (c *Cluster) MetricsAddr(name string) string {
	if name == txn.MasterName {
		return c.base.Master.Metrics
	}
	p, _ := c.base.Node(name)
	return p.Metrics
}

// StartAll starts the nodes, then the master, and waits until each accepts a hello.
func (c *Cluster) StartAll(ctx context.Context) error {
	for _, n := range c.base.Nodes {
		if err := c.Start(ctx, n.Name, ""); err != nil {
			return err
		}
	}
	return c.Start(ctx, txn.MasterName, "")
}

// Start starts a process (crashAt, if not empty, arms KVTX_CRASH_AT) and waits until it
// accepts a hello. An armed process that kills itself during start-up is not an error.
func (c *Cluster) Start(ctx context.Context, name, crashAt string) error {
	p, err := c.spawn(name, crashAt)
	if err != nil {
		return err
	}
	return c.waitReady(ctx, p)
}

func (c *Cluster) spawn(name, crashAt string) (*process, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.closed {
		return nil, errors.New("chaos: cluster closed")
	}
	if old := c.mu.procs[name]; old != nil {
		select {
		case <-old.done:
		default:
			return nil, fmt.Errorf("chaos: %s is still running", name)
		}
	}
	c.mu.runs[name]++
	run := c.mu.runs[name]
	out, err := os.Create(filepath.Join(c.cfg.Dir, fmt.Sprintf("%s.%d.log", name, run)))
	if err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	var cmd *exec.Cmd
	if name == txn.MasterName {
		cmd = exec.Command(filepath.Join(c.cfg.BinDir, "kvmaster"), "--config", c.cfgPath[name], "--log-level", "info")
	} else {
		cmd = exec.Command(filepath.Join(c.cfg.BinDir, "kvnode"), "--config", c.cfgPath[name], "--log-level", "info", name)
	}
	cmd.Stdout, cmd.Stderr = out, out
	env := make([]string, 0, len(os.Environ())+1)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "KVTX_") {
			env = append(env, e)
		}
	}
	if crashAt != "" {
		env = append(env, "KVTX_CRASH_AT="+crashAt)
	}
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("chaos: start %s: %w", name, err)
	}
	p := &process{name: name, run: run, cmd: cmd, done: make(chan struct{}), crashAt: crashAt}
	c.mu.procs[name] = p
	go func() {
		err := cmd.Wait()
		out.Close()
		c.mu.Lock()
		p.err = err
		e := Exit{Name: name, Run: run, At: time.Now(), Err: err}
		killed := false
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
				killed = true
			}
		}
		switch {
		case p.expect != "":
			e.Expected, e.Cause = true, p.expect
		case p.crashAt != "" && killed:
			e.Expected, e.Cause = true, "crashpoint "+p.crashAt
		default:
			e.Cause = "unexpected"
		}
		c.mu.exits = append(c.mu.exits, e)
		c.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

func (c *Cluster) waitReady(ctx context.Context, p *process) error {
	deadline := time.Now().Add(c.cfg.StartTimeout)
	addr := c.Addr(p.name)
	for {
		select {
		case <-p.done:
			if p.crashAt != "" {
				return nil // fired during recovery: the caller sees it exited
			}
			return fmt.Errorf("chaos: %s exited during start-up: %v\n%s", p.name, p.err, c.tail(p.name, p.run))
		default:
		}
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := wire.Dial(dctx, addr, wire.DialOptions{Role: "client", Name: "chaos"})
		cancel()
		if err == nil {
			conn.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("chaos: %s not ready after %v: %v", p.name, c.cfg.StartTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tail returns the end of a process run's log.
func (c *Cluster) tail(name string, run int) string {
	data, _ := os.ReadFile(filepath.Join(c.cfg.Dir, fmt.Sprintf("%s.%d.log", name, run)))
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// Running reports whether the process's latest run is alive.
func (c *Cluster) Running(name string) bool {
	c.mu.Lock()
	p := c.mu.procs[name]
	c.mu.Unlock()
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Done returns a channel closed when the process's latest run exits (nil if never started).
func (c *Cluster) Done(name string) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.mu.procs[name]; p != nil {
		return p.done
	}
	return nil
}

// Armed returns the crash point the latest run was started with ("" for none).
func (c *Cluster) Armed(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.mu.procs[name]; p != nil {
		return p.crashAt
	}
	return ""
}

// signal sends sig to the latest run, marking its exit as caused by the runner (cause).
func (c *Cluster) signal(name string, sig syscall.Signal, cause string) *process {
	c.mu.Lock()
	p := c.mu.procs[name]
	if p != nil && cause != "" {
		p.expect = cause
	}
	c.mu.Unlock()
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
		return p
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	return p
}

// Kill sends SIGKILL and waits for the process to die.
func (c *Cluster) Kill(name string) {
	if p := c.signal(name, syscall.SIGCONT, ""); p != nil {
		c.signal(name, syscall.SIGKILL, "sigkill")
		<-p.done
	}
}

// PowerCut cuts the power of the named processes' machines at once, as a rack losing power:
// it SIGKILLs every one of them that runs, waits until all are dead, then makes their lossy
// file systems forget every write that was not fsynced, concurrently, and returns once each is
// mounted again with only its durable state (a summary per process). It needs LossyBin.
func (c *Cluster) PowerCut(names ...string) (map[string]lossy.Summary, error) {
	if c.disks == nil {
		return nil, errors.New("chaos: power cut of a cluster without lossy file systems (ClusterConfig.LossyBin)")
	}
	var dying []*process
	for _, name := range names {
		if c.disks[name] == nil {
			return nil, fmt.Errorf("chaos: power cut of %s: no such process", name)
		}
		if p := c.signal(name, syscall.SIGCONT, ""); p != nil {
			c.signal(name, syscall.SIGKILL, "power cut")
			dying = append(dying, p)
		}
	}
	for _, p := range dying {
		<-p.done
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		sums = map[string]lossy.Summary{}
		errs []error
	)
	for _, name := range names {
		wg.Go(func() {
			sum, err := c.disks[name].Crash()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("chaos: power cut of %s: %w", name, err))
				return
			}
			sums[name] = sum
		})
	}
	wg.Wait()
	return sums, errors.Join(errs...)
}

// Stop sends SIGTERM and waits up to d for a clean exit, then SIGKILL. It reports whether the
// process exited cleanly by itself.
func (c *Cluster) Stop(name string, d time.Duration) bool {
	c.signal(name, syscall.SIGCONT, "")
	p := c.signal(name, syscall.SIGTERM, "sigterm")
	if p == nil {
		return true
	}
	select {
	case <-p.done:
		return p.err == nil
	case <-time.After(d):
		c.signal(name, syscall.SIGKILL, "sigkill after sigterm timeout")
		<-p.done
		return false
	}
}

// Pause sends SIGSTOP; Resume sends SIGCONT.
func (c *Cluster) Pause(name string) {
	c.mu.Lock()
	if p := c.mu.procs[name]; p != nil {
		p.stopped = true
	}
	c.mu.Unlock()
	c.signal(name, syscall.SIGSTOP, "")
}

// Resume sends SIGCONT to a paused process.
func (c *Cluster) Resume(name string) {
	c.mu.Lock()
	if p := c.mu.procs[name]; p != nil {
		p.stopped = false
	}
	c.mu.Unlock()
	c.signal(name, syscall.SIGCONT, "")
}

// Exits returns every process exit seen so far.
func (c *Cluster) Exits() []Exit {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Exit(nil), c.mu.exits...)
}

// Logs returns the path of every log file of a process.
func (c *Cluster) Logs(name string) []string {
	files, _ := filepath.Glob(filepath.Join(c.cfg.Dir, name+".*.log"))
	return files
}

// LastLog returns the path of the log of the process's latest run ("" if it never ran).
func (c *Cluster) LastLog(name string) string {
	c.mu.Lock()
	run := c.mu.runs[name]
	c.mu.Unlock()
	if run == 0 {
		return ""
	}
	return filepath.Join(c.cfg.Dir, fmt.Sprintf("%s.%d.log", name, run))
}

// HealNetwork sets every proxy back to Pass.
func (c *Cluster) HealNetwork() {
	for _, p := range c.proxies {
		p.SetMode(Pass, 0)
	}
}

// Dial returns a client of the master: through the client->master proxy when proxied, or
// directly (for the runner's own checks).
func (c *Cluster) Dial(ctx context.Context, proxied bool, name string) (*client.Client, error) {
	addr := c.base.Master.Listen
	if proxied {
		addr = c.ClientAddr()
	}
	return client.Dial(ctx, addr, client.Options{DialTimeout: 2 * time.Second, Timeout: 5 * time.Second, Name: name})
}

// Close stops every process (SIGTERM, then SIGKILL after 10s), then every proxy and lossy file
// system. It returns the processes that did not shut down cleanly, and the file systems that
// did not unmount cleanly, as "disk of NAME: ERROR".
func (c *Cluster) Close() []string {
	c.mu.Lock()
	c.mu.closed = true
	names := make([]string, 0, len(c.mu.procs))
	for n := range c.mu.procs {
		names = append(names, n)
	}
	c.mu.Unlock()
	var unclean []string
	// Nodes first would leave the master retrying; stop the master first, as an operator would.
	for _, n := range append([]string{txn.MasterName}, names...) {
		if !c.Running(n) {
			continue
		}
		if !c.Stop(n, 10*time.Second) {
			unclean = append(unclean, n)
		}
	}
	c.closeProxies()
	// Only now that nothing uses them.
	for _, err := range c.stopDisks() {
		unclean = append(unclean, strings.TrimPrefix(err.Error(), "chaos: "))
	}
	return unclean
}

func (c *Cluster) closeProxies() {
	for _, p := range c.proxies {
		p.Close()
	}
}

// BuildBinaries builds kvmaster, kvnode and kvctl with the crashpoints tag into dir, from the
// module this package belongs to, with the go command on PATH.
func BuildBinaries(dir string) error {
	_, file, _, _ := runtime.Caller(0)
	cmd := exec.Command("go", "build", "-tags", "crashpoints", "-o", dir+string(filepath.Separator),
		"./cmd/kvmaster", "./cmd/kvnode", "./cmd/kvctl")
	cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("chaos: build binaries: %w\n%s", err, out)
	}
	return nil
}

// BuildLossyFS builds the lossyfs binary into dir (next to BuildBinaries' binaries) and returns
// its path, for ClusterConfig.LossyBin.
func BuildLossyFS(dir string) (string, error) {
	bin, err := lossy.Build(dir)
	if err != nil {
		return "", fmt.Errorf("chaos: %w", err)
	}
	return bin, nil
}
