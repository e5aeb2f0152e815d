// Package e2e holds kvtx's end-to-end tests: they build the real binaries (with the
// crashpoints tag, inert unless KVTX_CRASH_AT is set), run a master and nodes as processes on
// 127.0.0.1 with temporary data directories (the harness of cmd/internal/cluster), and talk to
// them over real TCP with the Go client and kvctl.
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kvtx/kvtx/cmd/internal/cluster"
	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/certs"
	"github.com/kvtx/kvtx/txn/client"
	"github.com/kvtx/kvtx/wire"
)

// bins are the binaries built once by TestMain: kvmaster, kvnode, kvctl and lossyfs.
var bins cluster.Binaries

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kvtx-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if bins, err = cluster.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testCluster is a cluster.Cluster bound to one test: its lower-case methods fail the test
// where the harness returns an error. When the test fails, the processes' logs are printed.
type testCluster struct {
	*cluster.Cluster
	t *testing.T
}

// newCluster makes a cluster of a master and n nodes (short protocol timeouts, debug logs)
// and starts every process.
func newCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	c := prepareCluster(t, n)
	c.startAll()
	return c
}

// prepareCluster makes the cluster without starting anything.
func prepareCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	return prepare(t, cluster.Config{Nodes: n})
}

// preparePowerLossCluster is prepareCluster with each process's data directory on a lossy
// file system of its own (one machine each), whose power cutPower cuts.
func preparePowerLossCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	return prepare(t, cluster.Config{Nodes: n, LossyDisks: true})
}

func prepare(t *testing.T, cfg cluster.Config) *testCluster {
	t.Helper()
	cfg.Binaries, cfg.Dir, cfg.LogLevel = bins, t.TempDir(), "debug"
	cl, err := cluster.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // before the directory goes (cleanups run last first)
		if err := cl.Close(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			for _, name := range cl.Names() {
				if out := cl.Output(name); out != "" {
					t.Logf("logs of %s:\n%s", name, out)
				}
			}
		}
	})
	return &testCluster{Cluster: cl, t: t}
}

// startAll starts the nodes, then the master, each waiting until it accepts a hello.
func (c *testCluster) startAll() {
	c.t.Helper()
	if err := c.StartAll(context.Background()); err != nil {
		c.t.Fatal(err)
	}
}

// start starts a process (again, after it died) and waits until it accepts a hello.
func (c *testCluster) start(name string) {
	c.t.Helper()
	if err := c.Start(context.Background(), name); err != nil {
		c.t.Fatal(err)
	}
}

// startArmed is start with the crash point armed: the process kills itself there.
func (c *testCluster) startArmed(name, point string) {
	c.t.Helper()
	if err := c.StartArmed(context.Background(), name, point); err != nil {
		c.t.Fatal(err)
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (c *testCluster) stop(name string) {
	c.t.Helper()
	if err := c.Stop(name, 15*time.Second); err != nil {
		c.t.Fatalf("%v\n%s", err, c.Output(name))
	}
}

// waitExit waits for a process to exit by itself (a crash point) and returns how it ended.
func (c *testCluster) waitExit(name string, within time.Duration) error {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	exit, err := c.WaitExit(ctx, name)
	if err != nil {
		c.t.Fatal(err)
	}
	return exit.Err
}

// cutPower SIGKILLs the named processes (those running) and then cuts the power of their
// machines at once: their file systems forget every write that was not fsynced.
func (c *testCluster) cutPower(names ...string) {
	c.t.Helper()
	sums, err := c.PowerCut(names...)
	for _, name := range names {
		if sum, ok := sums[name]; ok {
			c.t.Logf("power cut of %s: %v", name, sum)
		}
	}
	if err != nil {
		c.t.Fatal(err)
	}
}

// client dials the master.
func (c *testCluster) client() *client.Client {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, c.ClientAddr(), c.clientOptions(client.Options{Timeout: 10 * time.Second}))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// clientOptions are o with the cluster's client certificate (nothing with an insecure
// cluster).
func (c *testCluster) clientOptions(o client.Options) client.Options {
	o.TLS, o.ExplainTLS = c.ClientTLS(txn.MasterName), c.TLSRefusal
	return o
}

// kvctlArgs are the flags that point kvctl at the cluster: its endpoint and certificates.
func (c *testCluster) kvctlArgs() []string {
	return append([]string{"--endpoint", c.ClientAddr()}, c.KvctlArgs()...)
}

// kvctl runs the CLI against the cluster and returns stdout, stderr and the exit status.
func (c *testCluster) kvctl(args ...string) (string, string, int) {
	c.t.Helper()
	return runKvctl(c.t, append(c.kvctlArgs(), args...)...)
}

// rawConn opens a connection to the process named to, over TLS with the client certificate
// (plain TCP with an insecure cluster), on which a test writes frames of its own.
func (c *testCluster) rawConn(to string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	if cfg := c.ClientTLS(to); cfg != nil {
		return tls.DialWithDialer(d, "tcp", c.Addr(to), cfg)
	}
	return d.Dial("tcp", c.Addr(to))
}

// dialAs opens a wire connection to the process named to with the certificate of the process
// or client named as, introducing itself as as (role role) in the hello.
func (c *testCluster) dialAs(ctx context.Context, as, role, to string, opts wire.DialOptions) (*wire.Conn, error) {
	c.t.Helper()
	opts.Role, opts.Name = role, as
	if dir := c.CertsDir(); dir != "" {
		opts.TLS = c.loader(as).ClientConfig(to)
	}
	return wire.Dial(ctx, c.Addr(to), opts)
}

// loader loads the certificate of the process or client named name from the cluster's
// certificate directory.
func (c *testCluster) loader(name string) *certs.Loader {
	c.t.Helper()
	l, err := certs.NewLoader(certs.FilesFor(c.CertsDir(), name), certs.LoaderOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), CheckEvery: -1})
	if err != nil {
		c.t.Fatal(err)
	}
	return l
}

func runKvctl(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return runKvctlWithInput(t, nil, args...)
}

// runKvctlWithInput is runKvctl with stdin as the CLI's standard input.
func runKvctlWithInput(t *testing.T, stdin io.Reader, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bins.Path("kvctl"), args...)
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
func (c *testCluster) keysOnEveryShard(prefix string) []string {
	sm := c.Config().ShardMap()
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
func (c *testCluster) waitQuiet(cl *client.Client, d time.Duration) {
	c.t.Helper()
	waitFor(c.t, d, "the cluster quiet", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		procs, err := cl.Status(ctx)
		cancel()
		if err != nil {
			return false, err.Error()
		}
		quiet := true
		var b strings.Builder
		for _, p := range procs {
			fmt.Fprintf(&b, "%s up=%v locks=%d prepared=%d in_doubt=%d err=%s; ", p.Name, p.Up, p.LocksHeld, len(p.Prepared), p.InDoubt, p.Error)
			if !p.Up || p.LocksHeld != 0 || len(p.Prepared) != 0 {
				quiet = false
			}
		}
		return quiet, b.String()
	})
}

// waitFor polls cond until it holds, failing the test after within with what and the last
// state cond described. It is the e2e tests' one way of waiting for the cluster.
func waitFor(t *testing.T, within time.Duration, what string, cond func() (ok bool, state string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v: %s", what, within, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ctx returns a context bounded for one test step.
func stepCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
