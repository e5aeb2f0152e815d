package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvtx/kvtx/cmd/internal/cluster"
	"github.com/kvtx/kvtx/txn/client"
	"github.com/kvtx/kvtx/wire"
)

// TestBadInputGetsClearErrors proves that malformed frames get an error frame and a closed
// connection on the master's and a node's port, that an oversized key or value is refused
// with a message naming the limit and writes nothing, and that other clients keep working
// throughout.
func TestBadInputGetsClearErrors(t *testing.T) {
	c := newCluster(t, 2)
	cl := c.client()

	// A well-behaved client writes all along.
	var stop atomic.Bool
	var good, bad atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := cl.Put(ctx, []byte(fmt.Sprintf("good%d", i%10)), []byte("v"))
			cancel()
			if err != nil {
				bad.Add(1)
				t.Errorf("a good client failed during the bad-input barrage: %v", err)
				return
			}
			good.Add(1)
		}
	}()

	hello := func(version uint32) []byte {
		body, err := wire.Marshal(&wire.Hello{Version: version, Role: "client", Name: "blaster"})
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		wire.WriteFrame(&b, wire.MsgHello, 1, body)
		return b.Bytes()
	}
	header := func(length uint32, typ wire.MsgType, id uint64) []byte {
		h := make([]byte, wire.HeaderSize)
		binary.BigEndian.PutUint32(h, length)
		h[4] = byte(typ)
		binary.BigEndian.PutUint64(h[5:], id)
		return h
	}
	cases := []struct {
		name  string
		input []byte
		code  wire.Code
	}{
		{"wrong protocol version", hello(99), wire.CodeVersionMismatch},
		{"first frame is not a hello", append(header(1, wire.MsgGet, 1), 0xc0), wire.CodeBadRequest},
		{"declared length of 4 GiB", append(hello(wire.ProtocolVersion), header(0xFFFFFFFF, wire.MsgGet, 2)...), wire.CodeTooLarge},
		{"unknown message type", append(hello(wire.ProtocolVersion), append(header(1, 200, 2), 0xc0)...), wire.CodeUnknownMessage},
		{"invalid msgpack body", append(hello(wire.ProtocolVersion), append(header(3, wire.MsgGet, 2), 0xc1, 0xc1, 0xc1)...), wire.CodeBadRequest},
		{"a reply type sent as a request", append(hello(wire.ProtocolVersion), append(header(1, wire.MsgGetReply, 2), 0x80)...), 0},
	}
	for _, target := range []string{"master", "node1"} {
		for _, tc := range cases {
			conn, err := net.DialTimeout("tcp", c.Addr(target), 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Write(tc.input); err != nil {
				t.Fatal(err)
			}
			var gotErr *wire.Error
			for {
				f, err := wire.ReadFrame(conn, wire.DefaultMaxFrame)
				if err != nil {
					if gotErr == nil {
						t.Fatalf("%s on %s: connection ended (%v) without an error frame", tc.name, target, err)
					}
					if errors.Is(err, os.ErrDeadlineExceeded) {
						t.Fatalf("%s on %s: connection not closed after the error frame", tc.name, target)
					}
					break
				}
				if f.Type == wire.MsgHelloReply {
					continue
				}
				if f.Type != wire.MsgError {
					t.Fatalf("%s on %s: got %s frame, want an error", tc.name, target, f.Type)
				}
				gotErr = &wire.Error{}
				if err := wire.Unmarshal(f.Body, gotErr); err != nil {
					t.Fatal(err)
				}
			}
			if tc.code != 0 && gotErr.Code != tc.code {
				t.Fatalf("%s on %s: code %s (%s), want %s", tc.name, target, gotErr.Code, gotErr.Message, tc.code)
			}
			conn.Close()
		}
	}

	// Oversized input through the real client and CLI: a clear error naming the limit.
	big := strings.Repeat("k", 5000)
	_, errOut, code := c.kvctl("put", big, "v")
	if code != 4 || !strings.Contains(errOut, "max_key_bytes") || !strings.Contains(errOut, "5000") {
		t.Fatalf("oversized key: code %d stderr %q", code, errOut)
	}
	keys := c.keysOnEveryShard("limit")
	ctx := stepCtx(t)
	_, err := cl.Txn(ctx, nil, client.Put([]byte(keys[0]), []byte("small")), client.Put([]byte(keys[1]), make([]byte, 2<<20)))
	if !errors.Is(err, client.ErrInvalid) || !strings.Contains(err.Error(), "max_value_bytes") {
		t.Fatalf("oversized value: %v", err)
	}
	for _, kv := range snapshot(t, cl, keys) {
		if kv.Found {
			t.Fatalf("a refused transaction wrote %q", kv.Key)
		}
	}
	stop.Store(true)
	wg.Wait()
	if good.Load() == 0 || bad.Load() != 0 {
		t.Fatalf("good client: %d ok, %d failed", good.Load(), bad.Load())
	}
	// Every process is still alive and serving.
	out, _, code := c.kvctl("status")
	if code != 0 || strings.Contains(out, "DOWN") {
		t.Fatalf("status after bad input: %d %q", code, out)
	}
}

// TestStartupErrors proves that a bad start fails at once with exit status 1 and one clear
// line, before anything is served: an unknown node name, an invalid config file, a port in
// use, a data directory that belongs to another node.
func TestStartupErrors(t *testing.T) {
	c := prepareCluster(t, 2)
	run := func(args ...string) (string, int) {
		cmd := exec.Command(bins.Path(args[0]), args[1:]...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return out.String(), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return out.String(), 0
	}
	out, code := run("kvnode", "--config", c.ConfigPath(), "node9")
	if code != 1 || !strings.Contains(out, `unknown node "node9"`) {
		t.Fatalf("unknown node: %d %q", code, out)
	}
	badCfg := filepath.Join(c.Dir(), "bad.yaml")
	os.WriteFile(badCfg, []byte("master: [this is not\n"), 0o644)
	out, code = run("kvmaster", "--config", badCfg)
	if code != 1 || !strings.Contains(out, "parse config") {
		t.Fatalf("invalid config: %d %q", code, out)
	}
	typo := filepath.Join(c.Dir(), "typo.yaml")
	os.WriteFile(typo, []byte("master: {listen: 127.0.0.1:1, lissten: x}\n"), 0o644)
	out, code = run("kvmaster", "--config", typo)
	if code != 1 || !strings.Contains(out, "lissten") {
		t.Fatalf("unknown field: %d %q", code, out)
	}
	out, code = run("kvmaster", "--config", filepath.Join(c.Dir(), "missing.yaml"))
	if code != 1 || !strings.Contains(out, "missing.yaml") {
		t.Fatalf("unreadable config: %d %q", code, out)
	}

	l, err := net.Listen("tcp", c.Addr("node1"))
	if err != nil {
		t.Fatal(err)
	}
	out, code = run("kvnode", "--config", c.ConfigPath(), "node1")
	l.Close()
	if code != 1 || !strings.Contains(out, "address already in use") {
		t.Fatalf("port in use: %d %q", code, out)
	}

	// node1 and node2 each claim their data directory; then a config swaps them.
	c.start("node1")
	c.start("node2")
	c.stop("node1")
	c.stop("node2")
	swapped := c.Config()
	swapped.Nodes[0].DataDir, swapped.Nodes[1].DataDir = swapped.Nodes[1].DataDir, swapped.Nodes[0].DataDir
	swappedPath := filepath.Join(c.Dir(), "swapped.yaml")
	if err := cluster.WriteConfig(swappedPath, swapped); err != nil {
		t.Fatal(err)
	}
	out, code = run("kvnode", "--config", swappedPath, "node1")
	if code != 1 || !strings.Contains(out, "belongs to") {
		t.Fatalf("data dir of another node: %d %q", code, out)
	}
}

// TestPrometheusScrapesEveryProcess runs a real Prometheus server that scrapes the master and
// both nodes, and reads the committed-transaction count back through its HTTP API. It loads
// kvtx's alert rules (their "for" durations cut to 0: promtool's rule tests cover those) and
// sees KvtxProcessDown fire for a node that is killed.
func TestPrometheusScrapesEveryProcess(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("the prometheus binary is required (Debian package prometheus; .ci/run installs it)")
	}
	c := newCluster(t, 2)
	cl := c.client()
	ctx := stepCtx(t)
	keys := c.keysOnEveryShard("prom")
	const singles, multis = 7, 5
	for i := 0; i < singles; i++ {
		if _, err := cl.Put(ctx, []byte(fmt.Sprintf("p%d", i)), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < multis; i++ {
		if _, err := cl.Txn(ctx, nil, client.Put([]byte(keys[0]), []byte("v")), client.Put([]byte(keys[1]), []byte("v"))); err != nil {
			t.Fatal(err)
		}
	}

	var targets []string
	for _, name := range c.Names() {
		targets = append(targets, c.MetricsAddr(name))
	}
	ports, err := cluster.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	promPort := ports[0]
	dir := t.TempDir()
	rules, err := os.ReadFile(filepath.Join("..", "..", "txn", "server", "monitoring", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	rules = regexp.MustCompile(`for: \S+`).ReplaceAll(rules, []byte("for: 0s"))
	if err := os.WriteFile(filepath.Join(dir, "alerts.yml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("global: {scrape_interval: 500ms, evaluation_interval: 1s}\nrule_files: [alerts.yml]\nscrape_configs:\n  - job_name: kvtx\n    static_configs:\n      - targets: ['%s']\n", strings.Join(targets, "', '"))
	os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644)
	logf, _ := os.Create(filepath.Join(dir, "prometheus.log"))
	prom := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", promPort))
	prom.Stdout, prom.Stderr = logf, logf
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		prom.Process.Kill()
		prom.Wait()
		if t.Failed() {
			data, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", data)
		}
	})
	query := func(q string) (string, error) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/v1/query?query=%s", promPort, url.QueryEscape(q)))
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var r struct {
			Status string `json:"status"`
			Data   struct {
				Result []struct {
					Value []any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			return "", fmt.Errorf("%v: %s", err, body)
		}
		if r.Status != "success" || len(r.Data.Result) == 0 {
			return "", fmt.Errorf("no result yet: %s", body)
		}
		return fmt.Sprint(r.Data.Result[0].Value[1]), nil
	}
	checks := []struct{ q, want string }{
		{`count(up{job="kvtx"} == 1)`, "3"},
		{`sum(kvtx_txn_total{outcome="committed"})`, fmt.Sprint(singles + multis)},
		{`sum(kvtx_txn_total{path="2pc",outcome="committed"})`, fmt.Sprint(multis)},
		{`count(kvtx_connections)`, "3"},
		{`count(kvtx_fsync_duration_seconds_count)`, "3"},
		{`sum(kvtx_prepared_txns)`, "0"},
	}
	for _, ch := range checks {
		waitFor(t, 60*time.Second, "prometheus "+ch.q+" = "+ch.want, func() (bool, string) {
			got, err := query(ch.q)
			return err == nil && got == ch.want, fmt.Sprintf("%q (%v)", got, err)
		})
	}
	if got, err := query(`count(ALERTS{alertname="KvtxProcessDown"})`); err == nil {
		t.Fatalf("KvtxProcessDown with every process up: %s", got)
	}
	c.Kill("node2")
	firing := fmt.Sprintf(`count(ALERTS{alertname="KvtxProcessDown", alertstate="firing", instance=%q})`, c.MetricsAddr("node2"))
	waitFor(t, 60*time.Second, "KvtxProcessDown firing for the killed node2", func() (bool, string) {
		got, err := query(firing)
		return err == nil && got == "1", fmt.Sprintf("%q (%v)", got, err)
	})
}
