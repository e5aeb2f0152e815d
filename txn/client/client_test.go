package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/kvtx/kvtx/wire"
)

// A write that waited behind others on a connection the master does not read, and whose
// deadline passed before it was sent, was not executed: it is refused as busy (aborted, safe
// to retry), not reported as an unknown outcome.
func TestAWriteThatWasNeverSentIsBusyNotUnknown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	hangUp, reading := make(chan struct{}), make(chan struct{})
	go func() { // a master that answers the hello, reads the start of one request, then nothing
		nc, err := l.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		f, err := wire.ReadFrame(nc, 0)
		if err != nil || f.Type != wire.MsgHello {
			return
		}
		body, _ := wire.Marshal(&wire.HelloReply{Version: wire.ProtocolVersion, Name: "master"})
		_ = wire.WriteFrame(nc, wire.MsgHelloReply, f.ID, body)
		if _, err := io.ReadFull(nc, make([]byte, 16)); err == nil {
			close(reading)
		}
		<-hangUp
	}()
	c, err := Dial(context.Background(), l.Addr().String(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Writes of 7 MiB each, more than the socket's buffers hold, so that the writer is busy with
	// the first when the last one comes.
	big := bytes.Repeat([]byte{'v'}, 7<<20)
	const ahead = 4
	done := make(chan error, ahead)
	for range ahead {
		go func() {
			_, err := c.Put(context.Background(), []byte("big"), big)
			done <- err
		}()
	}
	<-reading
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = c.Put(ctx, []byte("k"), []byte("v"))
	if !errors.Is(err, ErrBusy) || !errors.Is(err, ErrAborted) || errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("a put that never left the client: %v, want busy (aborted), not unknown", err)
	}
	close(hangUp)
	for range ahead {
		<-done // sent (at least in part) when the connection broke: unknown, or not sent
	}
}
