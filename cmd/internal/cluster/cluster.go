package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kvtx/kvtx/cmd/lossyfs/lossy"
	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/certs"
	"github.com/kvtx/kvtx/wire"
)

// Config describes a cluster of real kvmaster and kvnode processes on 127.0.0.1 (or on the
// Hosts it names). A zero field
// takes the default its comment gives.
type Config struct {
	// Binaries are the programs the cluster runs (Build). Binaries.Dir is required;
	// Binaries.LossyFS too when LossyDisks is set.
	Binaries Binaries
	// Dir receives the config files, the data directories and one log file per process run;
	// required.
	Dir string
	// Nodes is the number of shard nodes, named node1, node2, ... (default 2).
	Nodes int
	// Timeouts are the protocol's clocks; zero fields take those of ShortTimeouts.
	Timeouts txn.Timeouts
	// CommitProtocol is the cluster's commit_protocol (default: the built-in default, parallel).
	CommitProtocol string
	// GC is the cluster's gc section (zero: the defaults).
	GC txn.GC
	// Storage is the cluster's storage section (zero: the defaults).
	Storage txn.StorageConfig
	// Limits are the cluster's limits (zero fields: the defaults).
	Limits txn.Limits
	// LogLevel is every process's --log-level (default info).
	LogLevel string
	// StartTimeout bounds how long a process may take to accept a hello (default 15s).
	StartTimeout time.Duration
	// FaultProxies puts a Proxy on every link: the master reaches each node through
	// MasterToNode(node), each node reaches the master through NodeToMaster(node), and clients
	// reach the master through ClientToMaster (ClientAddr). Each process then reads a config
	// file of its own that names its peers at their proxies. Without it every process reads
	// ConfigPath and the links are direct.
	FaultProxies bool
	// Insecure runs every process with --insecure: plaintext links, roles as the hellos claim
	// them. By default the cluster makes a CA and a certificate per process and client in
	// Dir/certs (the config's tls.dir) and every link is mutual TLS.
	Insecure bool
	// MetricsTLS sets the config's tls.metrics: every process serves its metrics over HTTPS
	// and requires a client certificate of the cluster's CA. It needs TLS (not Insecure).
	MetricsTLS bool
	// LossyDisks gives every process a lossy file system of its own (one machine each) that
	// holds its data directory, so that PowerCut can cut its power. It needs root and
	// /dev/fuse, and costs a FUSE mount per process; without it the data directories are plain
	// directories under Dir.
	LossyDisks bool
	// Hosts puts the processes it names on hosts of their own (Host), for tests across
	// network namespaces; the others run on 127.0.0.1. Not with FaultProxies or LossyDisks.
	Hosts map[string]Host
	// CertsByKvctl makes the certificates as an operator does, with kvctl cert init --config
	// on the config file, instead of in this process (the same code, certs.Init).
	CertsByKvctl bool
}

// validate reports every problem of cfg at once.
func (cfg Config) validate() error {
	var errs []error
	if cfg.Binaries.Dir == "" {
		errs = append(errs, errors.New("Binaries.Dir is required"))
	}
	if cfg.Dir == "" {
		errs = append(errs, errors.New("Dir is required"))
	}
	if cfg.LossyDisks && cfg.Binaries.LossyFS == "" {
		errs = append(errs, errors.New("LossyDisks needs Binaries.LossyFS"))
	}
	if cfg.MetricsTLS && cfg.Insecure {
		errs = append(errs, errors.New("MetricsTLS needs TLS, not Insecure"))
	}
	errs = append(errs, cfg.checkHosts()...)
	if cfg.Nodes < 0 {
		errs = append(errs, fmt.Errorf("Nodes is %d: want 0 (the default, 2) or more", cfg.Nodes))
	}
	if len(errs) > 0 {
		return fmt.Errorf("cluster: invalid config: %w", errors.Join(errs...))
	}
	return nil
}

func (cfg *Config) setDefaults() {
	if cfg.Nodes == 0 {
		cfg.Nodes = 2
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "info"
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 15 * time.Second
	}
	short := ShortTimeouts()
	t := &cfg.Timeouts
	for _, f := range []struct{ p, d *time.Duration }{{&t.Prepare, &short.Prepare}, {&t.CommitWait, &short.CommitWait}, {&t.InDoubt, &short.InDoubt}, {&t.Resolve, &short.Resolve}, {&t.LockWait, &short.LockWait}, {&t.Request, &short.Request}} {
		if *f.p == 0 {
			*f.p = *f.d
		}
	}
}

// Exit is how one run of a process ended.
type Exit struct {
	// Name is the process.
	Name string
	// Run numbers the process's starts from 1.
	Run int
	// At is when the exit was seen.
	At time.Time
	// Err is what Wait returned (nil: status 0).
	Err error
	// Expected says the caller caused it: a signal sent through the Cluster, or a crash point
	// armed with StartArmed.
	Expected bool
	// Cause describes it: "sigkill", "sigterm", "power cut", "crashpoint POINT:N", or
	// "unexpected".
	Cause string
}

// process is one run of a kvtx binary.
type process struct {
	name    string
	run     int
	cmd     *exec.Cmd
	crashAt string        // armed crash point, if any
	done    chan struct{} // closed once exit is set
	exit    Exit
	// expect is set, under Cluster.mu, before the Cluster signals the process, so that its
	// exit is not taken for a crash.
	expect string
}

// Cluster runs a master and its nodes as real processes, each run with its own log file, and
// optionally a fault proxy on every link and a lossy file system under every process. A Cluster
// is safe for concurrent use; Close releases it.
type Cluster struct {
	cfg  Config
	real txn.Config // real addresses
	// configPath is the file with the real addresses; processConfig the file each process
	// reads (configPath itself without FaultProxies).
	configPath    string
	processConfig map[string]string
	proxies       map[string]*Proxy
	// disks holds each process's lossy file system when Config.LossyDisks is set.
	disks map[string]*lossy.Process
	// client holds the client certificate (nil with Config.Insecure).
	client *certs.Loader

	mu struct {
		sync.Mutex
		procs  map[string]*process // the latest run of each process
		runs   map[string]int
		exits  []Exit
		closed bool
	}
}

// New writes the config files on free ports, mounts the lossy file systems and starts the
// proxies the config asks for, but starts no process: call StartAll or Start.
func New(cfg Config) (*Cluster, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	ports, err := FreePorts(2 * (cfg.Nodes + 1))
	if err != nil {
		return nil, err
	}
	names := []string{txn.MasterName}
	for i := range cfg.Nodes {
		names = append(names, fmt.Sprintf("node%d", i+1))
	}
	c := &Cluster{cfg: cfg, configPath: filepath.Join(cfg.Dir, "cluster.yaml"), processConfig: map[string]string{}, proxies: map[string]*Proxy{}}
	c.mu.procs = map[string]*process{}
	c.mu.runs = map[string]int{}
	fail := func(err error) (*Cluster, error) {
		c.closeProxies()
		c.stopDisks()
		return nil, err
	}
	dataDir := func(name string) string { return filepath.Join(cfg.Dir, name) }
	if cfg.LossyDisks {
		if err := c.mountDisks(names); err != nil {
			return fail(err)
		}
		dataDir = func(name string) string { return filepath.Join(c.disks[name].Mountpoint, "data") }
	}
	real := txn.Config{
		Master:         cfg.process(txn.MasterName, ports[0], ports[1], dataDir(txn.MasterName)),
		Timeouts:       cfg.Timeouts,
		CommitProtocol: cfg.CommitProtocol,
		GC:             cfg.GC,
		Storage:        cfg.Storage,
		Limits:         cfg.Limits,
	}
	for i, name := range names[1:] {
		real.Nodes = append(real.Nodes, cfg.process(name, ports[2+2*i], ports[3+2*i], dataDir(name)))
	}
	if !cfg.Insecure {
		real.TLS.Dir = filepath.Join(cfg.Dir, "certs")
		real.TLS.Metrics = cfg.MetricsTLS
	}
	c.real = real.WithDefaults()
	if err := WriteConfig(c.configPath, c.real); err != nil {
		return fail(err)
	}
	if !cfg.Insecure {
		if err := c.makeCerts(); err != nil {
			return fail(err)
		}
	}
	if !cfg.FaultProxies {
		for _, name := range names {
			c.processConfig[name] = c.configPath
		}
		return c, nil
	}
	add := func(link, target string) error {
		p, err := NewProxy(link, target)
		if err != nil {
			return err
		}
		c.proxies[link] = p
		return nil
	}
	if err := add(ClientToMaster, c.real.Master.DialAddr()); err != nil {
		return fail(err)
	}
	for _, n := range c.real.Nodes {
		if err := add(MasterToNode(n.Name), n.DialAddr()); err != nil {
			return fail(err)
		}
		if err := add(NodeToMaster(n.Name), c.real.Master.DialAddr()); err != nil {
			return fail(err)
		}
	}
	// The master's view: the nodes at their proxies.
	mview := c.Config()
	for i := range mview.Nodes {
		mview.Nodes[i].Listen = c.proxies[MasterToNode(mview.Nodes[i].Name)].Addr()
	}
	if err := c.writeProcessConfig(txn.MasterName, mview); err != nil {
		return fail(err)
	}
	// Each node's view: the master at its proxy.
	for _, n := range c.real.Nodes {
		nview := c.Config()
		nview.Master.Listen = c.proxies[NodeToMaster(n.Name)].Addr()
		if err := c.writeProcessConfig(n.Name, nview); err != nil {
			return fail(err)
		}
	}
	return c, nil
}

func (c *Cluster) writeProcessConfig(name string, view txn.Config) error {
	path := filepath.Join(c.cfg.Dir, name+".yaml")
	if err := WriteConfig(path, view); err != nil {
		return err
	}
	c.processConfig[name] = path
	return nil
}

// Config returns the cluster config with the real addresses (a copy).
func (c *Cluster) Config() txn.Config {
	cfg := c.real
	cfg.Nodes = slices.Clone(c.real.Nodes)
	return cfg
}

// ConfigPath is the config file with the real addresses, for kvctl --config. Without
// FaultProxies every process reads it too.
func (c *Cluster) ConfigPath() string { return c.configPath }

// Dir is the directory that holds the cluster's files.
func (c *Cluster) Dir() string { return c.cfg.Dir }

// Names returns the processes: "master" first, then the nodes in shard order.
func (c *Cluster) Names() []string {
	names := []string{txn.MasterName}
	for _, n := range c.real.Nodes {
		names = append(names, n.Name)
	}
	return names
}

// Addr returns the real protocol address at which a process is dialled, its advertise
// address with Config.Hosts ("" for an unknown name).
func (c *Cluster) Addr(name string) string {
	if name == txn.MasterName {
		return c.real.Master.DialAddr()
	}
	p, _ := c.real.Node(name)
	return p.DialAddr()
}

// MetricsAddr returns a process's real metrics address ("" for an unknown name).
func (c *Cluster) MetricsAddr(name string) string {
	if name == txn.MasterName {
		return c.real.Master.Metrics
	}
	p, _ := c.real.Node(name)
	return p.Metrics
}

// ClientAddr is the address clients dial: the ClientToMaster proxy with FaultProxies, the
// master's real address without.
func (c *Cluster) ClientAddr() string {
	if p := c.proxies[ClientToMaster]; p != nil {
		return p.Addr()
	}
	return c.real.Master.DialAddr()
}

// Proxy returns the proxy of a link (ClientToMaster, MasterToNode(n), NodeToMaster(n)), or nil
// without FaultProxies.
func (c *Cluster) Proxy(link string) *Proxy { return c.proxies[link] }

// HealNetwork sets every proxy back to Pass.
func (c *Cluster) HealNetwork() {
	for _, p := range c.proxies {
		p.SetMode(Pass, 0)
	}
}

// StartAll starts the nodes, then the master, each waiting until it accepts a hello.
func (c *Cluster) StartAll(ctx context.Context) error {
	for _, n := range c.real.Nodes {
		if err := c.Start(ctx, n.Name); err != nil {
			return err
		}
	}
	return c.Start(ctx, txn.MasterName)
}

// Start starts a process whose previous run, if any, has ended (so it also restarts one after
// Kill, Stop or PowerCut), with its output in a new log file, and waits until it accepts a
// hello: up to Config.StartTimeout, and no longer than ctx.
func (c *Cluster) Start(ctx context.Context, name string) error {
	return c.start(ctx, name, "")
}

// StartArmed is Start with a crash point armed: the process reads KVTX_CRASH_AT=crashAt
// (POINT or POINT:N) and SIGKILLs itself when it reaches the point. An armed process that
// kills itself while it starts is not an error; its exit counts as expected.
func (c *Cluster) StartArmed(ctx context.Context, name, crashAt string) error {
	return c.start(ctx, name, crashAt)
}

func (c *Cluster) start(ctx context.Context, name, crashAt string) error {
	p, err := c.spawn(name, crashAt)
	if err != nil {
		return err
	}
	return c.waitReady(ctx, p)
}

// logPath names the log file of a process run.
func (c *Cluster) logPath(name string, run int) string {
	return filepath.Join(c.cfg.Dir, fmt.Sprintf("%s.%d.log", name, run))
}

func (c *Cluster) spawn(name, crashAt string) (*process, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.closed {
		return nil, errors.New("cluster: closed")
	}
	configPath := c.processConfig[name]
	if configPath == "" {
		return nil, fmt.Errorf("cluster: no process named %q (the cluster has %s)", name, strings.Join(c.Names(), ", "))
	}
	if old := c.mu.procs[name]; old != nil {
		select {
		case <-old.done:
		default:
			return nil, fmt.Errorf("cluster: %s is still running", name)
		}
	}
	c.mu.runs[name]++
	run := c.mu.runs[name]
	out, err := os.Create(c.logPath(name, run))
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	args := []string{"--config", configPath, "--log-level", c.cfg.LogLevel}
	if c.cfg.Insecure {
		args = append(args, "--insecure")
	}
	var cmd *exec.Cmd
	if name == txn.MasterName {
		cmd = c.cfg.command(name, c.cfg.Binaries.Path("kvmaster"), args)
	} else {
		cmd = c.cfg.command(name, c.cfg.Binaries.Path("kvnode"), append(args, name))
	}
	cmd.Stdout, cmd.Stderr = out, out
	// The process sees none of the caller's KVTX_ variables, only the crash point asked for.
	env := withoutKvtxEnv()
	if crashAt != "" {
		env = append(env, "KVTX_CRASH_AT="+crashAt)
	}
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("cluster: start %s: %w", name, err)
	}
	p := &process{name: name, run: run, cmd: cmd, crashAt: crashAt, done: make(chan struct{})}
	c.mu.procs[name] = p
	go func() {
		err := cmd.Wait()
		out.Close()
		e := Exit{Name: name, Run: run, At: time.Now(), Err: err}
		killed := false
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
				killed = true
			}
		}
		c.mu.Lock()
		switch {
		case p.expect != "":
			e.Expected, e.Cause = true, p.expect
		case p.crashAt != "" && killed:
			e.Expected, e.Cause = true, "crashpoint "+p.crashAt
		default:
			e.Cause = "unexpected"
		}
		p.exit = e
		c.mu.exits = append(c.mu.exits, e)
		c.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// withoutKvtxEnv returns this process's environment without its KVTX_ variables.
func withoutKvtxEnv() []string {
	env := make([]string, 0, len(os.Environ())+1)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "KVTX_") {
			env = append(env, e)
		}
	}
	return env
}

func (c *Cluster) waitReady(ctx context.Context, p *process) error {
	deadline := time.Now().Add(c.cfg.StartTimeout)
	addr := c.Addr(p.name)
	for {
		select {
		case <-p.done:
			if p.crashAt != "" {
				return nil // fired during recovery: the caller sees that it exited
			}
			return fmt.Errorf("cluster: %s exited during start-up: %v\n%s", p.name, p.exit.Err, c.tail(p.name, p.run))
		default:
		}
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := wire.Dial(dctx, addr, c.DialOptions(p.name))
		cancel()
		if err == nil {
			conn.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("cluster: %s not ready after %v: %v\n%s", p.name, c.cfg.StartTimeout, err, c.tail(p.name, p.run))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tail returns the end of a process run's log.
func (c *Cluster) tail(name string, run int) string {
	data, _ := os.ReadFile(c.logPath(name, run))
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// latest returns the latest run of a process, nil if it never started.
func (c *Cluster) latest(name string) *process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.procs[name]
}

// Running reports whether the process's latest run is alive.
func (c *Cluster) Running(name string) bool {
	p := c.latest(name)
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

// PID returns the process id of the latest run of a process (0 if it never started).
func (c *Cluster) PID(name string) int {
	if p := c.latest(name); p != nil && p.cmd.Process != nil {
		return p.cmd.Process.Pid
	}
	return 0
}

// Armed returns the crash point the latest run was started with ("" for none).
func (c *Cluster) Armed(name string) string {
	if p := c.latest(name); p != nil {
		return p.crashAt
	}
	return ""
}

// WaitExit waits until the process's latest run exits and returns how it ended; it fails if
// ctx ends first or the process never started.
func (c *Cluster) WaitExit(ctx context.Context, name string) (Exit, error) {
	p := c.latest(name)
	if p == nil {
		return Exit{}, fmt.Errorf("cluster: %s never started", name)
	}
	select {
	case <-p.done:
		return p.exit, nil
	case <-ctx.Done():
		return Exit{}, fmt.Errorf("cluster: %s still running: %w", name, ctx.Err())
	}
}

// signal sends sig to the latest run, marking its exit as caused by the caller (cause, if not
// empty). It returns the run, nil if the process never started.
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

// kill SIGKILLs the named processes at once (paused ones too) and waits until all are dead.
func (c *Cluster) kill(cause string, names []string) {
	var dying []*process
	for _, name := range names {
		if p := c.signal(name, syscall.SIGCONT, ""); p != nil {
			c.signal(name, syscall.SIGKILL, cause)
			dying = append(dying, p)
		}
	}
	for _, p := range dying {
		<-p.done
	}
}

// Kill sends SIGKILL to the named processes at once (paused ones too) and returns when all are
// dead. A process that is not running is left alone.
func (c *Cluster) Kill(names ...string) { c.kill("sigkill", names) }

// Stop sends SIGTERM (and SIGCONT, in case the process is paused) and waits up to within for
// the process to exit, then SIGKILLs it. It returns nil if the process exited 0 by itself, or
// was never started.
func (c *Cluster) Stop(name string, within time.Duration) error {
	c.signal(name, syscall.SIGCONT, "")
	p := c.signal(name, syscall.SIGTERM, "sigterm")
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
		if p.exit.Err != nil {
			return fmt.Errorf("cluster: %s exited with %v after SIGTERM", name, p.exit.Err)
		}
		return nil
	case <-time.After(within):
		c.signal(name, syscall.SIGKILL, "sigkill after sigterm timeout")
		<-p.done
		return fmt.Errorf("cluster: %s did not exit within %v of SIGTERM (killed)", name, within)
	}
}

// StopAll stops every running process with Stop, the master first as an operator would (nodes
// first would leave it retrying), and returns the names of those that did not exit 0 by
// themselves within the given time.
func (c *Cluster) StopAll(within time.Duration) []string {
	var unclean []string
	for _, n := range c.Names() {
		if !c.Running(n) {
			continue
		}
		if err := c.Stop(n, within); err != nil {
			unclean = append(unclean, n)
		}
	}
	return unclean
}

// Pause sends SIGSTOP.
func (c *Cluster) Pause(name string) { c.signal(name, syscall.SIGSTOP, "") }

// Resume sends SIGCONT to a paused process.
func (c *Cluster) Resume(name string) { c.signal(name, syscall.SIGCONT, "") }

// Exits returns every process exit seen so far, in order.
func (c *Cluster) Exits() []Exit {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.mu.exits)
}

// LastLog returns the path of the log of the process's latest run ("" if it never ran).
func (c *Cluster) LastLog(name string) string {
	c.mu.Lock()
	run := c.mu.runs[name]
	c.mu.Unlock()
	if run == 0 {
		return ""
	}
	return c.logPath(name, run)
}

// Output returns what every run of the process wrote, in run order, each run under a
// "--- NAME.RUN.log ---" line.
func (c *Cluster) Output(name string) string {
	c.mu.Lock()
	runs := c.mu.runs[name]
	c.mu.Unlock()
	var b strings.Builder
	for run := 1; run <= runs; run++ {
		path := c.logPath(name, run)
		data, _ := os.ReadFile(path)
		fmt.Fprintf(&b, "--- %s ---\n%s", filepath.Base(path), data)
	}
	return b.String()
}

// Close kills every process that still runs (call StopAll first for a clean shutdown), then
// closes the proxies and unmounts the lossy file systems. It returns an error per file system
// that did not unmount cleanly, joined. Calls after the first do nothing.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		return nil
	}
	c.mu.closed = true
	c.mu.Unlock()
	c.kill("sigkill", c.Names())
	c.closeProxies()
	// Only now that nothing uses them.
	return c.stopDisks()
}

func (c *Cluster) closeProxies() {
	for _, p := range c.proxies {
		p.Close()
	}
}
