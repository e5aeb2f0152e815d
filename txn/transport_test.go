package txn

import (
	"context"
	"fmt"
	"net"
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
	tr := NewWireTransport(map[string]string{"node1": l.Addr().String()}, wire.DialOptions{Role: "master", Name: MasterName}, nil)
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
