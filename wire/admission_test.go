package wire

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gate is a handler whose Gets with key "hold" block until release; it counts the requests
// it was handed.
type gate struct {
	handled atomic.Int64
	held    chan struct{} // one send per Get that started holding
	open    chan struct{}
	once    sync.Once
}

func newGate() *gate { return &gate{held: make(chan struct{}, 64), open: make(chan struct{})} }

func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

func (g *gate) Handle(ctx context.Context, req *Request) (Message, error) {
	g.handled.Add(1)
	if m, ok := req.Message().(*GetRequest); ok && len(m.Keys) > 0 && bytes.HasPrefix(m.Keys[0], []byte("hold")) {
		g.held <- struct{}{}
		select {
		case <-g.open:
		case <-ctx.Done():
		}
	}
	return replyFor(req.Type), nil
}

// bigGet is a Get of about n bytes whose handler holds until the gate opens.
func bigGet(n int) *GetRequest {
	return &GetRequest{Keys: [][]byte{append([]byte("hold"), make([]byte, n)...)}}
}

func TestRequestsPastTheInFlightBudgetAreRefusedAsBusy(t *testing.T) {
	g := newGate()
	defer g.release()
	s := startServer(t, g, ServerConfig{MaxBytesInFlight: 1 << 20, BusyWait: 50 * time.Millisecond})
	c := dial(t, s, DialOptions{Role: "client"})

	first := make(chan error, 1)
	go func() { first <- c.Call(context.Background(), bigGet(700<<10), new(GetReply)) }()
	waitHeld(t, g)
	if in := s.InFlight(); in.Requests != 1 || in.Bytes < 700<<10 {
		t.Fatalf("in flight with one request held: %+v", in)
	}

	// A second one does not fit beside it: refused as busy, and never handed to the handler.
	err := c.Call(context.Background(), bigGet(700<<10), new(GetReply))
	if CodeOf(err) != CodeBusy || !strings.Contains(err.Error(), "retry shortly") {
		t.Fatalf("second large request: %v, want busy", err)
	}
	if n := g.handled.Load(); n != 1 {
		t.Fatalf("the handler was handed %d requests, want only the first", n)
	}
	// The connection is still in step: a small request fits and is served.
	if err := c.Call(context.Background(), &GetRequest{Keys: [][]byte{[]byte("k")}}, new(GetReply)); err != nil {
		t.Fatalf("a small request beside the held one: %v", err)
	}

	g.release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := c.Call(context.Background(), bigGet(700<<10), new(GetReply)); err != nil {
		t.Fatalf("once the first finished: %v", err)
	}
	if in := s.InFlight(); in.Requests != 0 || in.Bytes != 0 || in.Waiting != 0 {
		t.Fatalf("nothing in flight, but the budget says %+v", in)
	}
}

func TestTrustedPeersWaitForRoomAndTheProtocolLaneNeverWaits(t *testing.T) {
	g := newGate()
	defer g.release()
	s := startServer(t, g, ServerConfig{MaxBytesInFlight: 1 << 20, BusyWait: 50 * time.Millisecond,
		Trusted: func(h Hello) bool { return h.Role == "master" }})
	client := dial(t, s, DialOptions{Role: "client"})
	master := dial(t, s, DialOptions{Role: "master"})
	protocol := dial(t, s, DialOptions{Role: "master", Lane: LaneProtocol})

	first := make(chan error, 1)
	go func() { first <- client.Call(context.Background(), bigGet(700<<10), new(GetReply)) }()
	waitHeld(t, g)

	// The master's request does not fit either, but it waits instead of being refused.
	waited := make(chan error, 1)
	go func() { waited <- master.Call(context.Background(), bigGet(700<<10), new(GetReply)) }()
	waitFor(t, "the master's request to wait", func() bool { return s.InFlight().Waiting == 1 })
	// A protocol-lane request is served with the budget full and a request waiting.
	if err := protocol.Call(context.Background(), &StatusRequest{}, new(StatusReply)); err != nil {
		t.Fatalf("protocol lane with the budget full: %v", err)
	}
	select {
	case err := <-waited:
		t.Fatalf("the master's request returned %v while the budget was full", err)
	default:
	}

	g.release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatalf("the master's request, once there was room: %v", err)
	}
}

func TestAdmissionIsFirstComeFirstServed(t *testing.T) {
	a := newAdmission(100, 10)
	if !a.acquire(context.Background(), 60, 0) {
		t.Fatal("first")
	}
	bigIn := make(chan bool, 1)
	go func() { bigIn <- a.acquire(context.Background(), 80, 0) }()
	waitFor(t, "the large request to wait", func() bool { return a.snapshot().Waiting == 1 })
	// A small request that would fit waits behind the large one that came first.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if a.acquire(ctx, 10, 0) {
		t.Fatal("a small request overtook the large one waiting")
	}
	a.release(60)
	if !<-bigIn {
		t.Fatal("the large request was not admitted once there was room")
	}
	// Alone in flight, a request larger than the budget still gets through.
	a.release(80)
	if !a.acquire(context.Background(), 1000, 0) {
		t.Fatal("a request over the budget, alone")
	}
	if in := a.snapshot(); in.Bytes != 1000 || in.Requests != 1 || in.Waiting != 0 {
		t.Fatalf("snapshot %+v", in)
	}
}

func TestConnectionsPerHostAreBoundedButNotForTrustedPeers(t *testing.T) {
	s := startServer(t, HandlerFunc(echoHandler), ServerConfig{MaxConnsPerHost: 2,
		Trusted: func(h Hello) bool { return h.Role == "master" }})
	dial(t, s, DialOptions{Role: "client"})
	dial(t, s, DialOptions{Role: "client"})
	_, err := Dial(context.Background(), s.Addr().String(), DialOptions{Role: "client"})
	if CodeOf(err) != CodeUnavailable || !strings.Contains(err.Error(), "too many connections from 127.0.0.1 (limit 2 per host)") {
		t.Fatalf("third client connection from one host: %v", err)
	}
	// The cluster's own processes still get in.
	for range 3 {
		m := dial(t, s, DialOptions{Role: "master"})
		if err := m.Call(context.Background(), &StatusRequest{}, new(StatusReply)); err != nil {
			t.Fatal(err)
		}
	}
	var we *Error
	if !errors.As(err, &we) {
		t.Fatalf("refusal is not a *wire.Error: %T", err)
	}
}

// waitFor polls cond; the bound is a guard against a hang, not an assertion on speed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 30s for %s", what)
		}
	}
}

func waitHeld(t *testing.T, g *gate) {
	t.Helper()
	select {
	case <-g.held:
	case <-time.After(30 * time.Second):
		t.Fatal("the first request never reached its handler")
	}
}

// An authenticated client that holds every connection slot does not keep the cluster's own
// processes out.
func TestClientsHoldingEverySlotDoNotKeepTheMasterOut(t *testing.T) {
	s := startServer(t, HandlerFunc(echoHandler), ServerConfig{MaxConns: 2,
		Trusted: func(h Hello) bool { return h.Role == "master" }})
	dial(t, s, DialOptions{Role: "client"})
	dial(t, s, DialOptions{Role: "client"})
	if _, err := Dial(context.Background(), s.Addr().String(), DialOptions{Role: "client"}); CodeOf(err) != CodeUnavailable {
		t.Fatalf("a third client connection with MaxConns 2: %v", err)
	}
	m := dial(t, s, DialOptions{Role: "master"})
	if err := m.Call(context.Background(), &StatusRequest{}, new(StatusReply)); err != nil {
		t.Fatalf("the master, with every slot held by clients: %v", err)
	}
}
