package wire

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// A request still waiting for the writer when its call gives up, or when the connection
// breaks, was never sent, and says so (ErrNotSent): behind a request the server is slow to
// read, callers learn that nothing was executed instead of "no answer". The request being
// written when the call gives up may reach the server, and does not say that.
func TestRequestsWaitingForTheWriterAreNotSent(t *testing.T) {
	hangUp := make(chan struct{})
	addr := fakeServer(t, func(net.Conn) { <-hangUp }) // it reads nothing until told to hang up
	// More than the socket buffers hold: the writer blocks on it.
	const big = 64 << 20
	c, err := Dial(context.Background(), addr, DialOptions{MaxFrame: 2 * big})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	first := make(chan error, 1)
	go func() { first <- c.Call(context.Background(), &GetRequest{Keys: [][]byte{make([]byte, big)}}, nil) }()
	waitFor(t, "the writer to take the large request", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pending) == 1 && len(c.wq) == 0
	})
	queuedCall := make(chan error, 1)
	go func() { queuedCall <- c.Call(context.Background(), &GetRequest{ReadTS: 2}, nil) }()

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = c.Call(ctx, &GetRequest{ReadTS: 3}, nil)
	if !errors.Is(err, ErrNotSent) || !errors.Is(err, context.DeadlineExceeded) || CodeOf(err) != CodeTimeout {
		t.Fatalf("call that timed out waiting for the writer: %v, want ErrNotSent and the deadline", err)
	}
	if c.Err() != nil {
		t.Fatalf("a withdrawn request broke the connection: %v", c.Err())
	}

	close(hangUp)
	if err := <-first; !errors.Is(err, ErrConnLost) || errors.Is(err, ErrNotSent) {
		t.Fatalf("request being written when the connection broke: %v, want ErrConnLost", err)
	}
	if err := <-queuedCall; !errors.Is(err, ErrNotSent) || errors.Is(err, ErrConnLost) {
		t.Fatalf("request queued behind it when the connection broke: %v, want ErrNotSent", err)
	}
}
