package wire

import (
	"context"
	"errors"
	"fmt"
	"strconv"
)

// ProtocolVersion is the version carried in Hello and HelloReply; peers with
// another version are refused with CodeVersionMismatch.
const ProtocolVersion uint32 = 1

// MsgType identifies the body type of a frame. It is the fifth byte of every
// frame header.
type MsgType uint8

// Message types. Requests are answered either by their matching reply type,
// by MsgAck, or by MsgError.
const (
	MsgError        MsgType = 1  // body *Error; a failed request (or, with id 0, a fatal connection error)
	MsgHello        MsgType = 2  // body *Hello; must be the first frame a client sends
	MsgHelloReply   MsgType = 3  // body *HelloReply
	MsgGet          MsgType = 4  // body *GetRequest
	MsgGetReply     MsgType = 5  // body *GetReply
	MsgTxn          MsgType = 6  // body *TxnRequest
	MsgTxnReply     MsgType = 7  // body *TxnReply
	MsgApply        MsgType = 8  // body *ApplyRequest
	MsgApplyReply   MsgType = 9  // body *ApplyReply
	MsgPrepare      MsgType = 10 // body *PrepareRequest
	MsgPrepareReply MsgType = 11 // body *PrepareReply
	MsgCommit       MsgType = 12 // body *CommitRequest
	MsgAbort        MsgType = 13 // body *AbortRequest
	MsgAck          MsgType = 14 // body *Ack
	MsgOutcome      MsgType = 15 // body *OutcomeRequest
	MsgOutcomeReply MsgType = 16 // body *OutcomeReply
	MsgStatus       MsgType = 17 // body *StatusRequest
	MsgStatusReply  MsgType = 18 // body *StatusReply
	MsgSync         MsgType = 19 // body *SyncRequest; reply *Ack
	MsgCommitBatch  MsgType = 20 // body *CommitBatchRequest; reply *Ack
	MsgScan         MsgType = 21 // body *ScanRequest
	MsgScanReply    MsgType = 22 // body *ScanReply

	MsgRestoreBegin      MsgType = 23 // body *RestoreBeginRequest
	MsgRestoreBeginReply MsgType = 24 // body *RestoreBeginReply
	MsgRestore           MsgType = 25 // body *RestoreRequest
	MsgRestoreReply      MsgType = 26 // body *RestoreReply
	MsgSafePoint         MsgType = 27 // body *SafePointRequest; reply *Ack
	MsgOracleBound       MsgType = 28 // body *OracleBoundRequest
	MsgOracleBoundReply  MsgType = 29 // body *OracleBoundReply
)

var msgTypeNames = [...]string{
	MsgError:        "error",
	MsgHello:        "hello",
	MsgHelloReply:   "hello_reply",
	MsgGet:          "get",
	MsgGetReply:     "get_reply",
	MsgTxn:          "txn",
	MsgTxnReply:     "txn_reply",
	MsgApply:        "apply",
	MsgApplyReply:   "apply_reply",
	MsgPrepare:      "prepare",
	MsgPrepareReply: "prepare_reply",
	MsgCommit:       "commit",
	MsgAbort:        "abort",
	MsgAck:          "ack",
	MsgOutcome:      "outcome",
	MsgOutcomeReply: "outcome_reply",
	MsgStatus:       "status",
	MsgStatusReply:  "status_reply",
	MsgSync:         "sync",
	MsgCommitBatch:  "commit_batch",
	MsgScan:         "scan",
	MsgScanReply:    "scan_reply",

	MsgRestoreBegin:      "restore_begin",
	MsgRestoreBeginReply: "restore_begin_reply",
	MsgRestore:           "restore",
	MsgRestoreReply:      "restore_reply",
	MsgSafePoint:         "safe_point",
	MsgOracleBound:       "oracle_bound",
	MsgOracleBoundReply:  "oracle_bound_reply",
}

// String returns the lower-case name of t ("get", "prepare_reply", ...), or
// "unknown(N)" for a value that is not a known message type. It never allocates
// for known types.
func (t MsgType) String() string {
	if t.Valid() {
		return msgTypeNames[t]
	}
	return "unknown(" + strconv.Itoa(int(t)) + ")"
}

// Valid reports whether t is one of the message types defined by this
// protocol version.
func (t MsgType) Valid() bool { return t >= MsgError && t <= MsgOracleBoundReply }

// IsRequest reports whether a client may send t after the hello, i.e. whether
// a server dispatches it to its Handler. Replies, MsgError, MsgAck and MsgHello
// are not requests.
func (t MsgType) IsRequest() bool {
	switch t {
	case MsgGet, MsgTxn, MsgApply, MsgPrepare, MsgCommit, MsgAbort, MsgOutcome, MsgStatus, MsgSync, MsgCommitBatch, MsgScan, MsgRestoreBegin, MsgRestore, MsgSafePoint, MsgOracleBound:
		return true
	}
	return false
}

// Message is implemented by every message body type. The methods have value
// receivers, so both T and *T are Messages; decoding needs a *T.
//
// Bodies are msgpack maps keyed by field name, with zero fields omitted, so
// peers ignore fields they do not know and a nil byte slice and an empty one
// are not distinguished on the wire (both decode as nil).
type Message interface {
	MsgType() MsgType
}

// NewMessage returns a new zero body for t (e.g. &GetRequest{} for MsgGet), or
// nil if t is unknown. The result is always a pointer, ready for Unmarshal.
func NewMessage(t MsgType) Message {
	switch t {
	case MsgError:
		return &Error{}
	case MsgHello:
		return &Hello{}
	case MsgHelloReply:
		return &HelloReply{}
	case MsgGet:
		return &GetRequest{}
	case MsgGetReply:
		return &GetReply{}
	case MsgTxn:
		return &TxnRequest{}
	case MsgTxnReply:
		return &TxnReply{}
	case MsgApply:
		return &ApplyRequest{}
	case MsgApplyReply:
		return &ApplyReply{}
	case MsgPrepare:
		return &PrepareRequest{}
	case MsgPrepareReply:
		return &PrepareReply{}
	case MsgCommit:
		return &CommitRequest{}
	case MsgAbort:
		return &AbortRequest{}
	case MsgAck:
		return &Ack{}
	case MsgOutcome:
		return &OutcomeRequest{}
	case MsgOutcomeReply:
		return &OutcomeReply{}
	case MsgStatus:
		return &StatusRequest{}
	case MsgStatusReply:
		return &StatusReply{}
	case MsgCommitBatch:
		return &CommitBatchRequest{}
	case MsgSync:
		return &SyncRequest{}
	case MsgScan:
		return &ScanRequest{}
	case MsgScanReply:
		return &ScanReply{}
	case MsgRestoreBegin:
		return &RestoreBeginRequest{}
	case MsgRestoreBeginReply:
		return &RestoreBeginReply{}
	case MsgRestore:
		return &RestoreRequest{}
	case MsgSafePoint:
		return &SafePointRequest{}
	case MsgRestoreReply:
		return &RestoreReply{}
	case MsgOracleBound:
		return &OracleBoundRequest{}
	case MsgOracleBoundReply:
		return &OracleBoundReply{}
	}
	return nil
}

// Code classifies an error carried in a MsgError body.
type Code uint16

// Error codes. The comments say what a client may conclude.
const (
	CodeOK               Code = 0
	CodeBadRequest       Code = 1  // malformed frame or message body
	CodeVersionMismatch  Code = 2  // hello carried another protocol version or cluster id
	CodeTooLarge         Code = 3  // a limit was exceeded (frame, key, value, txn size)
	CodeNotFound         Code = 4  // the key or transaction does not exist
	CodeCompareFailed    Code = 5  // a transaction compare did not hold; see Error.Index
	CodeConflict         Code = 6  // lock conflict; safe to retry
	CodeLocked           Code = 7  // read gave up waiting for a lock; safe to retry
	CodeUnavailable      Code = 8  // a process could not be reached; nothing was committed
	CodeUnknownOutcome   Code = 9  // the transaction may or may not have committed
	CodeWrongShard       Code = 10 // the key does not belong to the receiving process
	CodeAborted          Code = 11 // aborted for another reason
	CodeTimeout          Code = 12 // a deadline expired or the call was cancelled
	CodeShuttingDown     Code = 13 // the process is shutting down
	CodeInternal         Code = 14 // a bug or an unexpected failure
	CodeUnknownMessage   Code = 15 // the frame's message type is not known
	CodeNotEmpty         Code = 16 // a restore found data in the cluster it was to fill; nothing was written
	CodeCompacted        Code = 17 // a read below the GC safe point: the versions it needs may be gone
	CodeSpaceExceeded    Code = 18 // a node is over its disk quota: nothing was written; retry once space is freed
	CodePermissionDenied Code = 19 // the sender's role may not send this request here; nothing was done
	CodeBusy             Code = 20 // the server had too much in flight to read the request: nothing was done; retry shortly
)

var codeNames = [...]string{
	CodeOK:               "ok",
	CodeBadRequest:       "bad_request",
	CodeVersionMismatch:  "version_mismatch",
	CodeTooLarge:         "too_large",
	CodeNotFound:         "not_found",
	CodeCompareFailed:    "compare_failed",
	CodeConflict:         "conflict",
	CodeLocked:           "locked",
	CodeUnavailable:      "unavailable",
	CodeUnknownOutcome:   "unknown_outcome",
	CodeWrongShard:       "wrong_shard",
	CodeAborted:          "aborted",
	CodeTimeout:          "timeout",
	CodeShuttingDown:     "shutting_down",
	CodeInternal:         "internal",
	CodeUnknownMessage:   "unknown_message",
	CodeNotEmpty:         "not_empty",
	CodeCompacted:        "compacted",
	CodeSpaceExceeded:    "space_exceeded",
	CodePermissionDenied: "permission_denied",
	CodeBusy:             "busy",
}

// String returns the snake_case name of c ("bad_request", ...), or "code(N)"
// for a value this version does not know.
func (c Code) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "code(" + strconv.Itoa(int(c)) + ")"
}

// Error is the body of MsgError and the Go error a Call returns for it. It
// survives the wire unchanged: the receiver sees the same Code, Message,
// TxnID and Index the sender set.
type Error struct {
	Code    Code   `codec:",omitempty"`
	Message string `codec:",omitempty"`
	TxnID   uint64 `codec:",omitempty"` // the transaction concerned, if any
	Index   int    `codec:",omitempty"` // with CodeCompareFailed: index of the failed compare in the request
}

// Error returns "wire: <code>: <message>".
func (e *Error) Error() string {
	if e.Message == "" {
		return "wire: " + e.Code.String()
	}
	return "wire: " + e.Code.String() + ": " + e.Message
}

// MsgType returns MsgError.
func (Error) MsgType() MsgType { return MsgError }

// Errorf returns an *Error with the given code and a message formatted as by
// fmt.Sprintf. The message should not repeat the "wire: " prefix, which
// Error() adds.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf classifies err: nil is CodeOK; an *Error anywhere in the chain
// (errors.As) gives its Code; context.DeadlineExceeded and context.Canceled
// give CodeTimeout; ErrNotSent gives CodeUnavailable (the request never left
// this process); anything else is CodeInternal.
func CodeOf(err error) Code {
	if err == nil {
		return CodeOK
	}
	var we *Error
	if errors.As(err, &we) {
		return we.Code
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return CodeTimeout
	}
	if errors.Is(err, ErrNotSent) {
		return CodeUnavailable
	}
	return CodeInternal
}

// Hello is the first frame a client sends on a connection (MsgHello).
type Hello struct {
	Version   uint32 `codec:",omitempty"`
	Role      string `codec:",omitempty"` // "client", "master" or "node"
	Name      string `codec:",omitempty"`
	ClusterID uint64 `codec:",omitempty"`
	Lane      Lane   `codec:",omitempty"` // the traffic this connection carries (default LaneClient)
}

// MsgType returns MsgHello.
func (Hello) MsgType() MsgType { return MsgHello }

// HelloReply accepts a Hello (MsgHelloReply).
type HelloReply struct {
	Version   uint32 `codec:",omitempty"`
	Name      string `codec:",omitempty"`
	ClusterID uint64 `codec:",omitempty"`
	// MaxBytesInFlight is the server's ServerConfig.MaxBytesInFlight, so that a peer can tell
	// whether the server admits as much as the peer sends it (0 from a server that did not say).
	MaxBytesInFlight int64 `codec:",omitempty"`
}

// MsgType returns MsgHelloReply.
func (HelloReply) MsgType() MsgType { return MsgHelloReply }

// KeyValue is one key's result in a GetReply. Found is false (and Value nil)
// when the key has no live version at the read timestamp.
type KeyValue struct {
	Key     []byte `codec:",omitempty"`
	Value   []byte `codec:",omitempty"`
	Version uint64 `codec:",omitempty"`
	Found   bool   `codec:",omitempty"`
}

// GetRequest reads Keys at ReadTS (MsgGet); ReadTS 0 asks the server to pick
// a timestamp.
type GetRequest struct {
	Keys   [][]byte `codec:",omitempty"`
	ReadTS uint64   `codec:",omitempty"`
	// Committed, from the master to a node, lists transactions the master knows are committed
	// and whose phase 2 is still under way, that hold locks on this request's keys: the node
	// applies them (as CommitRequests) before it serves the request, instead of waiting for
	// their phase 2.
	Committed []CommitRequest `codec:",omitempty"`
}

// MsgType returns MsgGet.
func (GetRequest) MsgType() MsgType { return MsgGet }

// GetReply answers a GetRequest (MsgGetReply), one value per requested key in
// request order, with the timestamp actually read at.
type GetReply struct {
	Values []KeyValue `codec:",omitempty"`
	ReadTS uint64     `codec:",omitempty"`
}

// MsgType returns MsgGetReply.
func (GetReply) MsgType() MsgType { return MsgGetReply }

// ScanRequest reads one page of the keys in [Start, End) at ReadTS (MsgScan), in key order;
// an empty End means no upper bound, ReadTS 0 asks the server to pick a timestamp (the master
// does; a node requires one). The page holds at most Limit keys and stops growing once its
// keys and values reach MaxBytes (0: the server's defaults); KeysOnly leaves values out.
type ScanRequest struct {
	Start    []byte `codec:",omitempty"`
	End      []byte `codec:",omitempty"`
	ReadTS   uint64 `codec:",omitempty"`
	Limit    int    `codec:",omitempty"`
	MaxBytes int    `codec:",omitempty"`
	KeysOnly bool   `codec:",omitempty"`
}

// MsgType returns MsgScan.
func (ScanRequest) MsgType() MsgType { return MsgScan }

// ScanReply answers a ScanRequest (MsgScanReply): the page's keys in order, the timestamp
// read at, and whether keys remain in the range after the last one (More): the next page
// starts just after it, at the same ReadTS.
type ScanReply struct {
	Values []KeyValue `codec:",omitempty"`
	ReadTS uint64     `codec:",omitempty"`
	More   bool       `codec:",omitempty"`
}

// MsgType returns MsgScanReply.
func (ScanReply) MsgType() MsgType { return MsgScanReply }

// RestoreRequest writes keys at their own versions (MsgRestore): each Values entry is a key,
// its value and its version (Found is ignored), every version in [1, BackupTS]. The master
// refuses it unless its oracle is already at or above BackupTS (a RestoreBeginRequest went
// first), routes the keys by its shard map and replies once every node has made its part
// durable. Writing the same key at the same version again is harmless, so a failed restore
// may be run again. A batch is bounded by the frame and by the servers' restore limits.
type RestoreRequest struct {
	BackupTS uint64     `codec:",omitempty"`
	Values   []KeyValue `codec:",omitempty"`
}

// MsgType returns MsgRestore.
func (RestoreRequest) MsgType() MsgType { return MsgRestore }

// RestoreReply answers a RestoreRequest (MsgRestoreReply): how many keys were written.
type RestoreReply struct {
	Keys int `codec:",omitempty"`
}

// MsgType returns MsgRestoreReply.
func (RestoreReply) MsgType() MsgType { return MsgRestoreReply }

// OpKind is the kind of a transaction write.
type OpKind uint8

// Write kinds.
const (
	OpPut    OpKind = 1 // set Key to Value
	OpDelete OpKind = 2 // remove Key
)

// String returns "put", "delete" or "op(N)".
func (k OpKind) String() string {
	switch k {
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	}
	return "op(" + strconv.Itoa(int(k)) + ")"
}

// Op is one write of a transaction.
type Op struct {
	Kind  OpKind `codec:",omitempty"`
	Key   []byte `codec:",omitempty"`
	Value []byte `codec:",omitempty"`
}

// CompareKind is the kind of a transaction precondition.
type CompareKind uint8

// Precondition kinds.
const (
	CmpValueEqual     CompareKind = 1 // the key exists and its value equals Value
	CmpVersionEqual   CompareKind = 2 // the key's version equals Version (0: missing)
	CmpVersionLess    CompareKind = 3 // the key's version is less than Version
	CmpVersionGreater CompareKind = 4 // the key's version is greater than Version
	CmpExists         CompareKind = 5 // the key exists
	CmpMissing        CompareKind = 6 // the key does not exist
)

var compareKindNames = [...]string{
	CmpValueEqual:     "value_equal",
	CmpVersionEqual:   "version_equal",
	CmpVersionLess:    "version_less",
	CmpVersionGreater: "version_greater",
	CmpExists:         "exists",
	CmpMissing:        "missing",
}

// String returns the snake_case name of k ("value_equal", ...) or "compare(N)".
func (k CompareKind) String() string {
	if k >= CmpValueEqual && k <= CmpMissing {
		return compareKindNames[k]
	}
	return "compare(" + strconv.Itoa(int(k)) + ")"
}

// Compare is one precondition of a transaction.
type Compare struct {
	Kind    CompareKind `codec:",omitempty"`
	Key     []byte      `codec:",omitempty"`
	Value   []byte      `codec:",omitempty"`
	Version uint64      `codec:",omitempty"`
}

// TxnRequest asks for an atomic transaction (MsgTxn): if every Compare holds,
// apply every Op.
type TxnRequest struct {
	Compares []Compare `codec:",omitempty"`
	Ops      []Op      `codec:",omitempty"`
}

// MsgType returns MsgTxn.
func (TxnRequest) MsgType() MsgType { return MsgTxn }

// TxnReply reports a committed transaction (MsgTxnReply); Path is "1pc" or
// "2pc".
type TxnReply struct {
	TxnID    uint64 `codec:",omitempty"`
	CommitTS uint64 `codec:",omitempty"`
	Path     string `codec:",omitempty"`
}

// MsgType returns MsgTxnReply.
func (TxnReply) MsgType() MsgType { return MsgTxnReply }

// ApplyRequest asks a single participant to check and apply a transaction in
// one phase (MsgApply).
type ApplyRequest struct {
	TxnID    uint64    `codec:",omitempty"`
	TS       uint64    `codec:",omitempty"`
	Compares []Compare `codec:",omitempty"`
	Ops      []Op      `codec:",omitempty"`
	// Committed is as in GetRequest.
	Committed []CommitRequest `codec:",omitempty"`
}

// MsgType returns MsgApply.
func (ApplyRequest) MsgType() MsgType { return MsgApply }

// ApplyReply reports a one-phase commit (MsgApplyReply).
type ApplyReply struct {
	CommitTS uint64 `codec:",omitempty"`
}

// MsgType returns MsgApplyReply.
func (ApplyReply) MsgType() MsgType { return MsgApplyReply }

// PrepareRequest is the first phase of two-phase commit (MsgPrepare).
type PrepareRequest struct {
	TxnID        uint64    `codec:",omitempty"`
	StartTS      uint64    `codec:",omitempty"`
	Compares     []Compare `codec:",omitempty"`
	Ops          []Op      `codec:",omitempty"`
	Participants []string  `codec:",omitempty"`
	// Parallel selects the parallel commit protocol: the transaction is committed exactly when
	// every participant holds a durable yes vote, and participants in doubt resolve it among
	// themselves (OutcomeRequest to each other). The participant keeps the flag in its record.
	Parallel bool `codec:",omitempty"`
	// Committed is as in GetRequest.
	Committed []CommitRequest `codec:",omitempty"`
	// SentAt is when the master sent the prepare (Unix nanoseconds, its clock). Under the
	// parallel protocol a node refuses a prepare sent longer ago than the late bound, so that
	// no prepare can succeed once a transaction's outcome markers may be gone.
	SentAt uint64 `codec:",omitempty"`
}

// MsgType returns MsgPrepare.
func (PrepareRequest) MsgType() MsgType { return MsgPrepare }

// PrepareReply is a participant's yes vote (MsgPrepareReply).
type PrepareReply struct {
	MinCommitTS uint64 `codec:",omitempty"`
}

// MsgType returns MsgPrepareReply.
func (PrepareReply) MsgType() MsgType { return MsgPrepareReply }

// CommitRequest is the second phase of two-phase commit (MsgCommit), answered
// by MsgAck.
type CommitRequest struct {
	TxnID    uint64 `codec:",omitempty"`
	CommitTS uint64 `codec:",omitempty"`
}

// MsgType returns MsgCommit.
func (CommitRequest) MsgType() MsgType { return MsgCommit }

// AbortRequest rolls back a prepared transaction (MsgAbort), answered by
// MsgAck.
type AbortRequest struct {
	TxnID uint64 `codec:",omitempty"`
}

// MsgType returns MsgAbort.
func (AbortRequest) MsgType() MsgType { return MsgAbort }

// Ack is the empty success reply (MsgAck).
type Ack struct{}

// MsgType returns MsgAck.
func (Ack) MsgType() MsgType { return MsgAck }

// OutcomeState is the fate of a transaction.
type OutcomeState uint8

// Transaction fates.
const (
	OutcomePending   OutcomeState = 1
	OutcomeCommitted OutcomeState = 2
	OutcomeAborted   OutcomeState = 3
	// OutcomePrepared is a node's answer for a transaction it holds a yes vote for and has
	// not finished (OutcomeReply.MinCommitTS is its vote's minimum commit timestamp).
	OutcomePrepared OutcomeState = 4
)

// String returns "pending", "committed", "aborted" or "outcome(N)".
func (s OutcomeState) String() string {
	switch s {
	case OutcomePending:
		return "pending"
	case OutcomeCommitted:
		return "committed"
	case OutcomeAborted:
		return "aborted"
	case OutcomePrepared:
		return "prepared"
	}
	return "outcome(" + strconv.Itoa(int(s)) + ")"
}

// OutcomeRequest asks for the fate of a transaction (MsgOutcome); From names
// the asker. Asked of the master, it answers what it decided (classic protocol);
// asked of a node, it answers what the node durably knows, and a node that never
// prepared the transaction first records it aborted (the parallel protocol's
// termination query).
type OutcomeRequest struct {
	TxnID uint64 `codec:",omitempty"`
	From  string `codec:",omitempty"`
}

// MsgType returns MsgOutcome.
func (OutcomeRequest) MsgType() MsgType { return MsgOutcome }

// OutcomeReply answers an OutcomeRequest (MsgOutcomeReply); CommitTS is set
// when State is OutcomeCommitted, MinCommitTS when it is OutcomePrepared.
type OutcomeReply struct {
	State       OutcomeState `codec:",omitempty"`
	CommitTS    uint64       `codec:",omitempty"`
	MinCommitTS uint64       `codec:",omitempty"`
}

// MsgType returns MsgOutcomeReply.
func (OutcomeReply) MsgType() MsgType { return MsgOutcomeReply }

// CommitBatchRequest is the second phase of several committed transactions at once
// (MsgCommitBatch), answered by MsgAck once every one of them is applied as by CommitRequest.
// The master sends one when commits for a node queue up behind a request in flight.
type CommitBatchRequest struct {
	Commits []CommitRequest `codec:",omitempty"`
}

// MsgType returns MsgCommitBatch.
func (CommitBatchRequest) MsgType() MsgType { return MsgCommitBatch }

// SyncRequest asks a node to make the listed commits durable (MsgSync): it applies any of them
// that it holds prepared again (a restart lost them before they were synced), then waits for a
// sync round that began after the request, and replies with an Ack. The master sends it before
// forgetting decisions whose commits the node applied without waiting for a sync.
type SyncRequest struct {
	Commits []CommitRequest
	// Forget lists commits that every participant has synced (an earlier SyncRequest): no
	// participant can find them prepared again, so the node may drop their outcome markers.
	Forget []CommitRequest `codec:",omitempty"`
}

// MsgType returns MsgSync.
func (SyncRequest) MsgType() MsgType { return MsgSync }

// StatusRequest asks a process for its status (MsgStatus).
type StatusRequest struct{}

// MsgType returns MsgStatus.
func (StatusRequest) MsgType() MsgType { return MsgStatus }

// TxnInfo describes one prepared (or in-doubt) transaction in a status report.
type TxnInfo struct {
	TxnID        uint64   `codec:",omitempty"`
	StartTS      uint64   `codec:",omitempty"`
	AgeMillis    int64    `codec:",omitempty"`
	Keys         [][]byte `codec:",omitempty"`
	Participants []string `codec:",omitempty"`
	InDoubt      bool     `codec:",omitempty"`
	Waiting      string   `codec:",omitempty"`
	// State is the transaction's phase where the reporting process has one to tell (the
	// master: preparing, committed, unknown, applied); empty from a node, whose transactions
	// are all prepared.
	State string `codec:",omitempty"`
}

// ProcessStatus describes one process of the cluster in a status report.
type ProcessStatus struct {
	Name        string    `codec:",omitempty"`
	Role        string    `codec:",omitempty"`
	Addr        string    `codec:",omitempty"`
	MetricsAddr string    `codec:",omitempty"`
	Up          bool      `codec:",omitempty"`
	Error       string    `codec:",omitempty"`
	Prepared    []TxnInfo `codec:",omitempty"`
	LocksHeld   int       `codec:",omitempty"`
	InDoubt     int       `codec:",omitempty"`
	// MaxTS is a node's highest timestamp read at or committed at: every vote it gives from now
	// on has a minimum commit timestamp above it.
	MaxTS uint64 `codec:",omitempty"`
	// DataBytes is what a node's shard takes on disk (its files' allocated bytes, measured about
	// once a second), QuotaBytes the most it may take (0: no quota); SafePoint its GC safe point.
	DataBytes  int64  `codec:",omitempty"`
	QuotaBytes int64  `codec:",omitempty"`
	SafePoint  uint64 `codec:",omitempty"`
	// Alarms are a node's raised alarms: "nospace" while it is at or over its disk quota and
	// refuses new writes.
	Alarms []string `codec:",omitempty"`
}

// StatusReply answers a StatusRequest (MsgStatusReply).
type StatusReply struct {
	Processes []ProcessStatus `codec:",omitempty"`
}

// MsgType returns MsgStatusReply.
func (StatusReply) MsgType() MsgType { return MsgStatusReply }
