package wire

import (
	"context"
	"strings"
	"sync"
	"testing"
)

// A client-lane connection whose every request slot is taken by handlers waiting for a commit
// stops being read; the commit, sent on a protocol-lane connection of the same peer, is served
// all the same and frees them. (Sent on the full connection itself, it would never be read.)
func TestAFullClientLaneDoesNotHoldUpTheProtocolLane(t *testing.T) {
	committed := make(chan struct{})
	var once sync.Once
	s := startServer(t, HandlerFunc(func(ctx context.Context, req *Request) (Message, error) {
		switch req.Type {
		case MsgGet: // a read waiting for a prepared transaction's lock
			select {
			case <-committed:
				return &GetReply{}, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		case MsgCommit:
			once.Do(func() { close(committed) })
		}
		return nil, nil
	}), ServerConfig{MaxInFlight: 2})

	clientLane := dial(t, s, DialOptions{Name: "master"})
	protocolLane := dial(t, s, DialOptions{Name: "master", Lane: LaneProtocol})
	const reads = 5 // more than MaxInFlight: the server stops reading clientLane
	errs := make(chan error, reads)
	for range reads {
		go func() {
			errs <- clientLane.Call(context.Background(), &GetRequest{Keys: [][]byte{[]byte("k")}, ReadTS: 1}, &GetReply{})
		}()
	}
	if err := protocolLane.Call(context.Background(), &CommitRequest{TxnID: 1, CommitTS: 2}, nil); err != nil {
		t.Fatalf("commit on the protocol lane: %v", err)
	}
	for range reads {
		if err := <-errs; err != nil {
			t.Errorf("read: %v", err)
		}
	}
}

// A protocol-lane connection serves exactly the protocol-lane requests; any other request
// gets CodeBadRequest and the connection is closed, so client traffic cannot take its slots.
// An unknown lane is refused in the hello.
func TestAProtocolLaneConnectionServesOnlyProtocolRequests(t *testing.T) {
	s := startServer(t, HandlerFunc(echoHandler), ServerConfig{})
	for _, req := range []Message{&PrepareRequest{TxnID: 1, StartTS: 1}, &CommitRequest{TxnID: 1, CommitTS: 2}, &CommitBatchRequest{Commits: []CommitRequest{{TxnID: 1, CommitTS: 2}}},
		&AbortRequest{TxnID: 1}, &SyncRequest{}, &OutcomeRequest{TxnID: 1}, &SafePointRequest{SafePoint: 1}, &StatusRequest{}, &OracleBoundRequest{From: "n1"}} {
		if req.MsgType().Lane() != LaneProtocol {
			t.Errorf("%s travels on the %s lane, want protocol", req.MsgType(), req.MsgType().Lane())
		}
		c := dial(t, s, DialOptions{Lane: LaneProtocol})
		if err := c.Call(context.Background(), req, nil); err != nil && CodeOf(err) != CodeUnknownMessage {
			t.Errorf("%s on the protocol lane: %v", req.MsgType(), err) // echoHandler knows not all of them
		}
		if c.Err() != nil {
			t.Errorf("%s on the protocol lane broke the connection: %v", req.MsgType(), c.Err())
		}
	}
	for _, req := range []Message{&GetRequest{ReadTS: 1}, &ScanRequest{}, &TxnRequest{}, &ApplyRequest{},
		&RestoreBeginRequest{}, &RestoreRequest{}} {
		if req.MsgType().Lane() != LaneClient {
			t.Errorf("%s travels on the %s lane, want client", req.MsgType(), req.MsgType().Lane())
		}
		c := dial(t, s, DialOptions{Lane: LaneProtocol})
		err := c.Call(context.Background(), req, nil)
		if CodeOf(err) != CodeBadRequest || !strings.Contains(err.Error(), "protocol-lane") {
			t.Errorf("%s on the protocol lane: %v, want bad_request", req.MsgType(), err)
		}
		<-c.Done() // closed after the error frame
		// The client lane serves it.
		cc := dial(t, s, DialOptions{})
		if err := cc.Call(context.Background(), req, nil); CodeOf(err) == CodeBadRequest {
			t.Errorf("%s on the client lane: %v", req.MsgType(), err)
		}
	}

	r := dialRaw(t, s)
	r.send(&Hello{Version: ProtocolVersion, Role: "node", Name: "raw", Lane: 7}, 1)
	if we := r.expectErrorThenEOF(CodeBadRequest, 1); !strings.Contains(we.Message, "unknown lane 7") {
		t.Errorf("unknown lane: %v", we)
	}
}
