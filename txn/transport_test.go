package txn

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvtx/kvtx/wire"
)

// WireTransport sends each request on its type's lane: with every request slot of the node's
// client-lane connection held by reads waiting for a lock, a prepare and the commit that
// releases the lock still reach the node, on the protocol-lane connection, and the commit
// frees the reads.
func TestWireTransportSendsCommitsPastReadsThatFillTheClientLane(t *testing.T) {
	committed := make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	lanes := map[wire.MsgType]wire.Lane{}
	waiting := 0 // reads in their handler
	srv := wire.NewServer(wire.HandlerFunc(func(ctx context.Context, req *wire.Request) (wire.Message, error) {
		mu.Lock()
		lanes[req.Type] = req.Peer.Lane
		mu.Unlock()
		switch req.Type {
		case wire.MsgGet:
			mu.Lock()
			waiting++
			mu.Unlock()
			select {
			case <-committed:
				return &wire.GetReply{Values: []wire.KeyValue{{}}}, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		case wire.MsgCommit:
			once.Do(func() { close(committed) })
		case wire.MsgStatus:
			return &wire.StatusReply{}, nil
		}
		return nil, nil
	}), wire.ServerConfig{MaxInFlight: 2, Logger: quiet})
	tr := NewWireTransport(map[string]string{"node1": serveWire(t, srv)}, wire.DialOptions{Role: "master", Name: MasterName}, nil)
	t.Cleanup(func() { tr.Close() })

	const reads = 5 // more than MaxInFlight: the node stops reading the client lane
	errs := make(chan error, reads)
	for range reads {
		go func() {
			errs <- tr.Call(context.Background(), "node1", &wire.GetRequest{Keys: [][]byte{[]byte("k")}, ReadTS: 1}, &wire.GetReply{})
		}()
	}
	waitFor(t, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return waiting == 2, fmt.Sprintf("%d reads in their handlers, want 2 (MaxInFlight)", waiting)
	})
	// On the client lane the prepare and the commit would never be read; the timeout only turns
	// that hang into a failure.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tr.Call(ctx, "node1", &wire.PrepareRequest{TxnID: 3, StartTS: 3}, nil); err != nil {
		t.Fatalf("a prepare did not get past the waiting reads: %v", err)
	}
	if err := tr.Call(ctx, "node1", &wire.CommitRequest{TxnID: 1, CommitTS: 2}, &wire.Ack{}); err != nil {
		t.Fatalf("the commit did not get past the waiting reads: %v", err)
	}
	for range reads {
		if err := <-errs; err != nil {
			t.Errorf("read: %v", err)
		}
	}
	if err := tr.Call(context.Background(), "node1", &wire.StatusRequest{}, &wire.StatusReply{}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for typ, want := range map[wire.MsgType]wire.Lane{wire.MsgGet: wire.LaneClient, wire.MsgCommit: wire.LaneProtocol,
		wire.MsgStatus: wire.LaneProtocol, wire.MsgPrepare: wire.LaneProtocol} {
		if lanes[typ] != want {
			t.Errorf("%s arrived on the %s lane, want %s", typ, lanes[typ], want)
		}
	}
}

// serveWire serves srv on a loopback port until the test ends and returns its address.
func serveWire(t *testing.T, srv *wire.Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return l.Addr().String()
}

// A master whose budget of requests in flight is larger than a node's warns, once, when it
// connects to that node: what it admits would wait at the node and could time out there. A
// node that admits as much gets no warning.
func TestWireTransportWarnsOfANodeThatAdmitsLessThanItSends(t *testing.T) {
	status := wire.HandlerFunc(func(context.Context, *wire.Request) (wire.Message, error) { return &wire.StatusReply{}, nil })
	addrs := map[string]string{
		"small": serveWire(t, wire.NewServer(status, wire.ServerConfig{MaxBytesInFlight: 8 << 20, Logger: quiet})),
		"equal": serveWire(t, wire.NewServer(status, wire.ServerConfig{MaxBytesInFlight: 32 << 20, Logger: quiet})),
	}
	var mu sync.Mutex
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logged.Write(p)
	}), nil))
	tr := NewWireTransport(addrs, wire.DialOptions{Role: "master", Name: MasterName}, nil)
	tr.WarnIfAdmitsLess(32<<20, log)
	t.Cleanup(func() { tr.Close() })
	for _, to := range []string{"small", "equal"} {
		// A read and a status go on the two lanes' connections: two dials of each node.
		if err := tr.Call(context.Background(), to, &wire.GetRequest{}, nil); err != nil {
			t.Fatal(err)
		}
		if err := tr.Call(context.Background(), to, &wire.StatusRequest{}, &wire.StatusReply{}); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	out := logged.String()
	if n := strings.Count(out, "process=small"); n != 1 || !strings.Contains(out, "its_max_inflight_bytes=8388608") {
		t.Errorf("warnings about the node that admits 8 MiB: %d, want 1; log:\n%s", n, out)
	}
	if strings.Contains(out, "process=equal") {
		t.Errorf("warned about a node that admits as much as the master sends:\n%s", out)
	}
}

// writerFunc is an io.Writer made of a function.
type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
