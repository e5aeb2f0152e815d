package wire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"testing"
)

// sampleMessages returns one fully populated body of every message type.
func sampleMessages() []Message {
	k := func(s string) []byte { return []byte(s) }
	cmps := []Compare{
		{Kind: CmpValueEqual, Key: k("a"), Value: k("va")},
		{Kind: CmpVersionGreater, Key: k("b"), Version: 9},
		{Kind: CmpMissing, Key: k("c")},
	}
	ops := []Op{{Kind: OpPut, Key: k("a"), Value: k("new")}, {Kind: OpDelete, Key: k("b")}}
	return []Message{
		&Error{Code: CodeCompareFailed, Message: "compare 2 failed", TxnID: 77, Index: 2},
		&Hello{Version: ProtocolVersion, Role: "node", Name: "n1", ClusterID: 1 << 60},
		&HelloReply{Version: ProtocolVersion, Name: "m", ClusterID: 3},
		&GetRequest{Keys: [][]byte{k("a"), k("b"), {0, 0xff}}, ReadTS: 1<<64 - 1},
		&GetReply{Values: []KeyValue{
			{Key: k("a"), Value: k("1"), Version: 4, Found: true},
			{Key: k("b")},
		}, ReadTS: 12},
		&TxnRequest{Compares: cmps, Ops: ops},
		&TxnReply{TxnID: 5, CommitTS: 6, Path: "2pc"},
		&ApplyRequest{TxnID: 5, TS: 7, Compares: cmps, Ops: ops},
		&ApplyReply{CommitTS: 8},
		&PrepareRequest{TxnID: 5, StartTS: 3, Compares: cmps, Ops: ops, Participants: []string{"n1", "n2"}},
		&PrepareReply{MinCommitTS: 10},
		&CommitRequest{TxnID: 5, CommitTS: 11},
		&AbortRequest{TxnID: 5},
		&Ack{},
		&OutcomeRequest{TxnID: 5, From: "n2"},
		&OutcomeReply{State: OutcomeCommitted, CommitTS: 11},
		&StatusRequest{},
		&SyncRequest{Commits: []CommitRequest{{TxnID: 5, CommitTS: 11}, {TxnID: 7, CommitTS: 12}}},
		&CommitBatchRequest{Commits: []CommitRequest{{TxnID: 5, CommitTS: 11}, {TxnID: 1<<64 - 1, CommitTS: 1 << 40}}},
		&ScanRequest{Start: []byte("a"), End: []byte("b\x00"), ReadTS: 77, Limit: 100, MaxBytes: 1 << 20, KeysOnly: true},
		&ScanReply{Values: []KeyValue{{Key: []byte("a1"), Value: []byte("v"), Version: 5, Found: true}}, ReadTS: 77, More: true},
		&RestoreBeginRequest{BackupTS: 1 << 40, Force: true},
		&RestoreBeginReply{Nodes: []RestoreNodeState{{Name: "n1", HasData: true, Locks: 2, Prepared: 1}, {Name: "n2"}}, OracleTS: 1<<40 + 5},
		&RestoreRequest{BackupTS: 99, Values: []KeyValue{{Key: k("a"), Value: k("1"), Version: 4}, {Key: k("b"), Value: k("2"), Version: 99}}},
		&RestoreReply{Keys: 2},
		&SafePointRequest{SafePoint: 9},
		&OracleBoundRequest{From: "n1"},
		&OracleBoundReply{Bound: 1<<40 + 1_000_000},
		&StatusReply{Processes: []ProcessStatus{
			{Name: "n1", Role: "node", Addr: "127.0.0.1:1", MetricsAddr: "127.0.0.1:2", Up: true, LocksHeld: 3, InDoubt: 1,
				Prepared: []TxnInfo{{TxnID: 5, StartTS: 3, AgeMillis: -1, Keys: [][]byte{k("a")},
					Participants: []string{"n1"}, InDoubt: true, Waiting: "outcome"}},
				DataBytes: 9 << 20, QuotaBytes: 8 << 20, Alarms: []string{"nospace"}},
			{Name: "n2", Error: "unreachable"},
		}},
	}
}

func TestSampleMessagesCoverEveryType(t *testing.T) {
	seen := map[MsgType]bool{}
	for _, m := range sampleMessages() {
		seen[m.MsgType()] = true
	}
	for mt := MsgType(0); mt < 255; mt++ {
		if mt.Valid() != seen[mt] {
			t.Errorf("type %d: Valid()=%v, sampled=%v", mt, mt.Valid(), seen[mt])
		}
	}
}

func TestMarshalRoundTripEveryType(t *testing.T) {
	for _, m := range sampleMessages() {
		body, err := Marshal(m)
		if err != nil {
			t.Fatalf("Marshal %s: %v", m.MsgType(), err)
		}
		got := NewMessage(m.MsgType())
		if err := Unmarshal(body, got); err != nil {
			t.Fatalf("Unmarshal %s: %v", m.MsgType(), err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("%s round trip:\n got %+v\nwant %+v", m.MsgType(), got, m)
		}
		// A value (not pointer) message marshals identically.
		vbody, err := Marshal(reflect.ValueOf(m).Elem().Interface().(Message))
		if err != nil || string(vbody) != string(body) {
			t.Errorf("%s: value marshal differs: %v", m.MsgType(), err)
		}
	}
}

func TestNewMessage(t *testing.T) {
	for mt := MsgType(0); mt < 255; mt++ {
		m := NewMessage(mt)
		if !mt.Valid() {
			if m != nil {
				t.Errorf("NewMessage(%d) = %T, want nil", mt, m)
			}
			continue
		}
		if m == nil || m.MsgType() != mt || reflect.TypeOf(m).Kind() != reflect.Pointer {
			t.Errorf("NewMessage(%s) = %#v", mt, m)
		}
	}
}

// Message types, codes and kinds print as their names, and unknown values say so.
func TestTypesCodesAndKindsPrintTheirNames(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{MsgGet.String(), "get"},
		{MsgTxn.String(), "txn"},
		{MsgPrepare.String(), "prepare"},
		{MsgPrepareReply.String(), "prepare_reply"},
		{MsgStatusReply.String(), "status_reply"},
		{MsgSync.String(), "sync"},
		{MsgType(0).String(), "unknown(0)"},
		{MsgType(99).String(), "unknown(99)"},
		{CodeOK.String(), "ok"},
		{CodeVersionMismatch.String(), "version_mismatch"},
		{CodeUnknownOutcome.String(), "unknown_outcome"},
		{CodeUnknownMessage.String(), "unknown_message"},
		{CodeSpaceExceeded.String(), "space_exceeded"},
		{CodePermissionDenied.String(), "permission_denied"},
		{Code(400).String(), "code(400)"},
		{OutcomePending.String(), "pending"},
		{OutcomeCommitted.String(), "committed"},
		{OutcomeAborted.String(), "aborted"},
		{OutcomeState(9).String(), "outcome(9)"},
		{OpDelete.String(), "delete"},
		{CmpVersionLess.String(), "version_less"},
		{CompareKind(0).String(), "compare(0)"},
		{CompareKind(7).String(), "compare(7)"},
		{Errorf(CodeConflict, "key %q locked", "k").Error(), `wire: conflict: key "k" locked`},
		{(&Error{Code: CodeTimeout}).Error(), "wire: timeout"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	want := []string{"ok", "bad_request", "version_mismatch", "too_large", "not_found", "compare_failed", "conflict", "locked",
		"unavailable", "unknown_outcome", "wrong_shard", "aborted", "timeout", "shutting_down", "internal", "unknown_message", "not_empty", "compacted"}
	for i, w := range want {
		if got := Code(i).String(); got != w {
			t.Errorf("Code(%d) = %q, want %q", i, got, w)
		}
	}
	requests := 0
	for mt := MsgType(0); mt < 255; mt++ {
		if mt.IsRequest() {
			requests++
			if !mt.Valid() || mt != MsgSync && mt != MsgCommitBatch && mt != MsgSafePoint && NewMessage(mt+1) == nil {
				t.Errorf("%s: request without a following reply type", mt)
			}
		}
	}
	if requests != 15 {
		t.Errorf("%d request types, want 15", requests)
	}
}

func TestCodeOf(t *testing.T) {
	we := Errorf(CodeCompareFailed, "x")
	for _, c := range []struct {
		err  error
		want Code
	}{
		{nil, CodeOK},
		{we, CodeCompareFailed},
		{fmt.Errorf("txn: %w", we), CodeCompareFailed},
		{context.DeadlineExceeded, CodeTimeout},
		{fmt.Errorf("call: %w", context.Canceled), CodeTimeout},
		{fmt.Errorf("%w: x", ErrNotSent), CodeUnavailable},
		{io.EOF, CodeInternal},
		{errors.New("boom"), CodeInternal},
	} {
		if got := CodeOf(c.err); got != c.want {
			t.Errorf("CodeOf(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}

func TestUnmarshalRejectsInvalidInput(t *testing.T) {
	valid, _ := Marshal(&GetRequest{Keys: [][]byte{[]byte("k")}, ReadTS: 3})
	cases := map[string][]byte{
		"nil":              nil,
		"empty":            {},
		"truncated":        valid[:len(valid)-1],
		"trailing bytes":   append(append([]byte{}, valid...), 0xc0),
		"string not map":   {0xa3, 'a', 'b', 'c'},
		"int as slice":     {0x81, 0xa4, 'K', 'e', 'y', 's', 0x05},
		"nil map key":      {0x81, 0xc0, 0x01},
		"reserved byte":    {0xc1},
		"huge array len":   {0x81, 0xa4, 'K', 'e', 'y', 's', 0xdd, 0xff, 0xff, 0xff, 0xff},
		"huge bin len":     {0x81, 0xa4, 'K', 'e', 'y', 's', 0x91, 0xc6, 0xff, 0xff, 0xff, 0xff, 1},
		"string as uint64": {0x81, 0xa6, 'R', 'e', 'a', 'd', 'T', 'S', 0xa1, 'x'},
	}
	for name, body := range cases {
		m := &GetRequest{ReadTS: 99}
		err := Unmarshal(body, m)
		var we *Error
		if !errors.As(err, &we) || we.Code != CodeBadRequest {
			t.Errorf("%s: err = %v, want bad_request", name, err)
			continue
		}
		if m.ReadTS != 0 || m.Keys != nil {
			t.Errorf("%s: target not left zero: %+v", name, m)
		}
	}
	if err := Unmarshal(valid, GetRequest{}); CodeOf(err) != CodeInternal {
		t.Errorf("non-pointer target: %v", err)
	}
	if err := Unmarshal(valid, (*GetRequest)(nil)); CodeOf(err) != CodeInternal {
		t.Errorf("nil pointer target: %v", err)
	}
}

func TestUnmarshalSkipsUnknownFieldsAndZeroesTarget(t *testing.T) {
	// {"ReadTS": 5, "Future": [1,2]} decodes into GetRequest, ignoring Future.
	body := []byte{0x82, 0xa6, 'R', 'e', 'a', 'd', 'T', 'S', 0x05, 0xa6, 'F', 'u', 't', 'u', 'r', 'e', 0x92, 0x01, 0x02}
	m := &GetRequest{Keys: [][]byte{[]byte("stale")}}
	if err := Unmarshal(body, m); err != nil {
		t.Fatal(err)
	}
	if m.ReadTS != 5 || m.Keys != nil {
		t.Fatalf("got %+v", m)
	}
}

func TestUnmarshalDoesNotAliasBody(t *testing.T) {
	body, _ := Marshal(&GetReply{Values: []KeyValue{{Key: []byte("key"), Value: []byte("value"), Found: true}}})
	var r GetReply
	if err := Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	for i := range body {
		body[i] = 0
	}
	if string(r.Values[0].Key) != "key" || string(r.Values[0].Value) != "value" {
		t.Fatalf("decoded bytes alias the body: %q %q", r.Values[0].Key, r.Values[0].Value)
	}
}

func TestRequestDecode(t *testing.T) {
	src := &TxnRequest{Ops: []Op{{Kind: OpPut, Key: []byte("k"), Value: []byte("v")}}}
	r := &Request{Type: MsgTxn, ID: 1, msg: src}
	var got TxnRequest
	if err := r.Decode(&got); err != nil || !reflect.DeepEqual(&got, src) {
		t.Fatalf("Decode = %v, %+v", err, got)
	}
	if err := r.Decode(&GetRequest{}); CodeOf(err) != CodeBadRequest {
		t.Fatalf("mismatched Decode: %v", err)
	}
	if r.Message() != src {
		t.Fatal("Message() is not the decoded body")
	}
	// A foreign type with the right MsgType goes through msgpack.
	var alt altTxn
	if err := r.Decode(&alt); err != nil || len(alt.Ops) != 1 || string(alt.Ops[0].Key) != "k" {
		t.Fatalf("foreign-type Decode = %v, %+v", err, alt)
	}
}

type altTxn struct{ Ops []struct{ Key []byte } }

func (altTxn) MsgType() MsgType { return MsgTxn }

func TestNilMessagesDoNotPanic(t *testing.T) {
	if _, err := Marshal(nil); CodeOf(err) != CodeInternal {
		t.Errorf("Marshal(nil): %v", err)
	}
	if got := msgTypeOf((*GetRequest)(nil)); got != 0 {
		t.Errorf("msgTypeOf(nil *GetRequest) = %v", got)
	}
	var c Conn // never used for I/O: the request is rejected first
	if err := c.Call(context.Background(), (*GetRequest)(nil), nil); CodeOf(err) != CodeInternal {
		t.Errorf("Call(nil *GetRequest): %v", err)
	}
	if err := c.Call(context.Background(), nil, nil); CodeOf(err) != CodeInternal {
		t.Errorf("Call(nil): %v", err)
	}
}
