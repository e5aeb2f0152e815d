package wire

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// Compile-time checks that the exported API keeps the signatures other
// packages are written against.
var (
	_ uint32  = ProtocolVersion
	_ [13]int = [HeaderSize]int{}
	_ int     = DefaultMaxFrame

	_ func(MsgType) string                                          = MsgType.String
	_ func(MsgType) bool                                            = MsgType.Valid
	_ func(Code) string                                             = Code.String
	_ func(OutcomeState) string                                     = OutcomeState.String
	_ func(*Error) string                                           = (*Error).Error
	_ func(*Error) MsgType                                          = (*Error).MsgType
	_ func(Code, string, ...any) *Error                             = Errorf
	_ func(error) Code                                              = CodeOf
	_ func(MsgType) Message                                         = NewMessage
	_ func(io.Writer, MsgType, uint64, []byte) error                = WriteFrame
	_ func(io.Reader, int) (Frame, error)                           = ReadFrame
	_ func(Message) ([]byte, error)                                 = Marshal
	_ func([]byte, Message) error                                   = Unmarshal
	_ func(context.Context, string, DialOptions) (*Conn, error)     = Dial
	_ func(*Conn, context.Context, Message, Message) error          = (*Conn).Call
	_ func(*Conn) error                                             = (*Conn).Close
	_ func(*Conn) error                                             = (*Conn).Err
	_ func(*Conn) string                                            = (*Conn).RemoteName
	_ func(*Request, Message) error                                 = (*Request).Decode
	_ func(Handler, ServerConfig) *Server                           = NewServer
	_ func(*Server, net.Listener) error                             = (*Server).Serve
	_ func(*Server, context.Context) error                          = (*Server).Shutdown
	_ func(*Server) net.Addr                                        = (*Server).Addr
	_ func(HandlerFunc, context.Context, *Request) (Message, error) = HandlerFunc.Handle

	_ Handler = HandlerFunc(nil)
	_ error   = (*Error)(nil)

	_ = Error{Code: CodeOK, Message: "", TxnID: 0, Index: 0}
	_ = DialOptions{Role: "", Name: "", ClusterID: 0, MaxFrame: 0, DialTimeout: time.Second}
	_ = ServerConfig{Name: "", ClusterID: 0, MaxFrame: 0, IdleTimeout: 0, ReadTimeout: 0, WriteTimeout: 0,
		HelloTimeout: 0, MaxConns: 0, MaxInFlight: 0, Logger: nil, Observer: Observer(nil)}
	_ = Request{Type: MsgGet, ID: 0, Peer: Hello{}}
	_ = Frame{Type: MsgGet, ID: 0, Body: nil}
	_ = Hello{Version: 0, Role: "", Name: "", ClusterID: 0}
	_ = HelloReply{Version: 0, Name: "", ClusterID: 0}
	_ = KeyValue{Key: nil, Value: nil, Version: 0, Found: false}
	_ = GetRequest{Keys: nil, ReadTS: 0}
	_ = GetReply{Values: nil, ReadTS: 0}
	_ = Op{Kind: OpPut | OpDelete, Key: nil, Value: nil}
	_ = Compare{Kind: CmpValueEqual | CmpVersionEqual | CmpVersionLess | CmpVersionGreater | CmpExists | CmpMissing, Key: nil, Value: nil, Version: 0}
	_ = TxnRequest{Compares: nil, Ops: nil}
	_ = TxnReply{TxnID: 0, CommitTS: 0, Path: ""}
	_ = ApplyRequest{TxnID: 0, TS: 0, Compares: nil, Ops: nil}
	_ = ApplyReply{CommitTS: 0}
	_ = PrepareRequest{TxnID: 0, StartTS: 0, Compares: nil, Ops: nil, Participants: nil}
	_ = PrepareReply{MinCommitTS: 0}
	_ = CommitRequest{TxnID: 0, CommitTS: 0}
	_ = AbortRequest{TxnID: 0}
	_ = OutcomeRequest{TxnID: 0, From: ""}
	_ = OutcomeReply{State: OutcomePending | OutcomeCommitted | OutcomeAborted, CommitTS: 0}
	_ = TxnInfo{TxnID: 0, StartTS: 0, AgeMillis: int64(0), Keys: nil, Participants: nil, InDoubt: false, Waiting: "", State: ""}
	_ = ProcessStatus{Name: "", Role: "", Addr: "", MetricsAddr: "", Up: false, Error: "", Prepared: nil, LocksHeld: 0, InDoubt: 0}
	_ = StatusReply{Processes: nil}
	_ = ScanRequest{Start: nil, End: nil, ReadTS: 0, Limit: 0, MaxBytes: 0, KeysOnly: false}
	_ = ScanReply{Values: nil, ReadTS: 0, More: false}
	_ = RestoreBeginRequest{BackupTS: 0, Force: false}
	_ = RestoreNodeState{Name: "", HasData: false, Locks: 0, Prepared: 0}
	_ = RestoreBeginReply{Nodes: nil, OracleTS: 0}
	_ = RestoreRequest{BackupTS: 0, Values: nil}
	_ = RestoreReply{Keys: 0}
	_ = SafePointRequest{SafePoint: 0}
	_ = OracleBoundRequest{From: ""}
	_ = OracleBoundReply{Bound: 0}

	_ []Message = []Message{Ack{}, StatusRequest{}, Error{}}
)

func TestConstantValues(t *testing.T) {
	types := []MsgType{MsgError, MsgHello, MsgHelloReply, MsgGet, MsgGetReply, MsgTxn, MsgTxnReply, MsgApply,
		MsgApplyReply, MsgPrepare, MsgPrepareReply, MsgCommit, MsgAbort, MsgAck, MsgOutcome, MsgOutcomeReply,
		MsgStatus, MsgStatusReply, MsgSync, MsgCommitBatch, MsgScan, MsgScanReply,
		MsgRestoreBegin, MsgRestoreBeginReply, MsgRestore, MsgRestoreReply, MsgSafePoint, MsgOracleBound, MsgOracleBoundReply}
	for i, mt := range types {
		if int(mt) != i+1 {
			t.Errorf("%s = %d, want %d", mt, mt, i+1)
		}
	}
	if next := MsgType(len(types) + 1); next.Valid() {
		t.Errorf("message type %d is valid but not listed here", next)
	}
	codes := []Code{CodeOK, CodeBadRequest, CodeVersionMismatch, CodeTooLarge, CodeNotFound, CodeCompareFailed,
		CodeConflict, CodeLocked, CodeUnavailable, CodeUnknownOutcome, CodeWrongShard, CodeAborted, CodeTimeout,
		CodeShuttingDown, CodeInternal, CodeUnknownMessage, CodeNotEmpty, CodeCompacted, CodeSpaceExceeded, CodePermissionDenied}
	for i, c := range codes {
		if int(c) != i {
			t.Errorf("%s = %d, want %d", c, c, i)
		}
	}
	if OpPut != 1 || OpDelete != 2 || CmpValueEqual != 1 || CmpMissing != 6 || OutcomePending != 1 || OutcomeAborted != 3 {
		t.Error("kind constants changed")
	}
}
