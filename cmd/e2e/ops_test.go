package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvtx/kvtx/cmd/internal/cluster"
	"github.com/kvtx/kvtx/txn/client"
	"github.com/kvtx/kvtx/wire"
)

// TestBadInputGetsClearErrors proves that malformed frames, sent over TLS with a valid client
// certificate so that they reach the frame decoder, get an error frame and a closed
// connection on the master's and a node's port; that a peer without TLS gets an error frame
// saying TLS is required; that an oversized key or value is refused with a message naming
// the limit and writes nothing; and that other clients keep working throughout.
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
		body, err := wire.Marshal(&wire.Hello{Version: version, Role: "client"}) // the certificate's name
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
		{"a valid hello without TLS", hello(wire.ProtocolVersion), wire.CodeBadRequest},
	}
	for _, target := range []string{"master", "node1"} {
		for _, tc := range cases {
			var conn net.Conn
			var err error
			if strings.Contains(tc.name, "without TLS") {
				conn, err = net.DialTimeout("tcp", c.Addr(target), 2*time.Second)
			} else {
				conn, err = c.rawConn(target)
			}
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
			if strings.Contains(tc.name, "without TLS") && !strings.Contains(gotErr.Message, "speaks only TLS") {
				t.Fatalf("%s on %s: %q does not say that TLS is required", tc.name, target, gotErr.Message)
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
// line, before anything is served: an unknown node name, an invalid config file, pprof on a
// network address, a port in use, a data directory that belongs to another node.
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

	out, code = run("kvnode", "--config", c.ConfigPath(), "--pprof-listen", "0.0.0.0:6060", "node1")
	if code != 1 || !strings.Contains(out, "loopback") {
		t.Fatalf("pprof on a network address: %d %q", code, out)
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

// /debug/pprof is not on the metrics port (anyone who can scrape could start a CPU profile or
// a trace), only on the loopback listener --pprof-listen opens.
func TestPprofHasAListenerOfItsOwn(t *testing.T) {
	c := prepareCluster(t, 2)
	ports, err := cluster.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	pprofAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	cmd := exec.Command(bins.Path("kvnode"), "--config", c.ConfigPath(), "--pprof-listen", pprofAddr, "node1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("node1's log:\n%s", out.String())
		}
	}()
	status := func(url string) int {
		resp, err := http.Get(url)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor(t, 20*time.Second, "pprof served on "+pprofAddr, func() (bool, string) {
		code := status("http://" + pprofAddr + "/debug/pprof/")
		return code == http.StatusOK, fmt.Sprint(code)
	})
	if code := status("http://" + c.MetricsAddr("node1") + "/debug/pprof/"); code != http.StatusNotFound {
		t.Fatalf("/debug/pprof/ on the metrics port: status %d, want 404", code)
	}
	if code := status("http://" + c.MetricsAddr("node1") + "/metrics"); code != http.StatusOK {
		t.Fatalf("/metrics: status %d", code)
	}
}
