package server

import (
	"errors"
	"testing"

	"github.com/kvtx/kvtx/wire"
)

// Only the master drives a node's shard, only nodes ask the master how a transaction ended,
// and clients get reads, transactions, scans, restores and status.
func TestEachRoleMaySendOnlyItsRequests(t *testing.T) {
	for _, tc := range []struct {
		rules acl
		role  string
		t     wire.MsgType
		ok    bool
	}{
		{nodeACL, roleMaster, wire.MsgPrepare, true},
		{nodeACL, roleClient, wire.MsgPrepare, false},
		{nodeACL, roleNode, wire.MsgPrepare, false},
		{nodeACL, roleClient, wire.MsgApply, false},
		{nodeACL, roleClient, wire.MsgCommit, false},
		{nodeACL, roleClient, wire.MsgAbort, false},
		{nodeACL, roleClient, wire.MsgSync, false},
		{nodeACL, roleClient, wire.MsgGet, false},
		{nodeACL, roleClient, wire.MsgSafePoint, false},
		{nodeACL, roleNode, wire.MsgOutcome, true},
		{nodeACL, roleClient, wire.MsgOutcome, false},
		{nodeACL, roleClient, wire.MsgStatus, true},
		{nodeACL, "", wire.MsgStatus, false},
		{masterACL, roleClient, wire.MsgTxn, true},
		{masterACL, roleClient, wire.MsgOutcome, false},
		{masterACL, roleNode, wire.MsgOutcome, true},
		{masterACL, roleNode, wire.MsgTxn, false},
		{masterACL, roleNode, wire.MsgOracleBound, true},
		{masterACL, roleClient, wire.MsgOracleBound, false},
		{nodeACL, roleMaster, wire.MsgOracleBound, false},
		{masterACL, roleClient, wire.MsgPrepare, false},
		{masterACL, roleMaster, wire.MsgCommit, false},
	} {
		err := tc.rules.allow("node1", wire.Hello{Role: tc.role, Name: "x"}, tc.t)
		var we *wire.Error
		if tc.ok != (err == nil) || err != nil && (!errors.As(err, &we) || we.Code != wire.CodePermissionDenied) {
			t.Errorf("%s from role %q: %v, want allowed %v", tc.t, tc.role, err, tc.ok)
		}
	}
}
