package server

import (
	"slices"

	"github.com/kvtx/kvtx/wire"
)

// The roles a peer may have: a process of the cluster or a client.
const (
	roleMaster = "master"
	roleNode   = "node"
	roleClient = "client"
)

// An acl says, for each request type a process serves, which roles may send it; a type not
// listed is refused to everyone. A peer's role is its certificate's (wire.ServerConfig.Identify),
// or with --insecure the role its hello claims.
type acl map[wire.MsgType][]string

// masterACL: clients read, write, scan, restore and ask for status; nodes ask the master,
// under the classic protocol, how a transaction they hold in doubt ended, and what bound its
// timestamp oracle has reached (to refuse timestamps no master could have issued).
var masterACL = acl{
	wire.MsgGet:          {roleClient},
	wire.MsgScan:         {roleClient},
	wire.MsgTxn:          {roleClient},
	wire.MsgRestoreBegin: {roleClient},
	wire.MsgRestore:      {roleClient},
	wire.MsgOutcome:      {roleNode},
	wire.MsgOracleBound:  {roleNode},
	wire.MsgStatus:       {roleClient, roleNode, roleMaster},
}

// nodeACL: only the master drives a node's shard; the other nodes ask it how a transaction
// ended (the parallel protocol's termination), and anyone may ask for status (kvctl status
// asks the nodes when the master is down).
var nodeACL = acl{
	wire.MsgGet:          {roleMaster},
	wire.MsgScan:         {roleMaster},
	wire.MsgApply:        {roleMaster},
	wire.MsgPrepare:      {roleMaster},
	wire.MsgCommit:       {roleMaster},
	wire.MsgCommitBatch:  {roleMaster},
	wire.MsgAbort:        {roleMaster},
	wire.MsgSync:         {roleMaster},
	wire.MsgSafePoint:    {roleMaster},
	wire.MsgRestoreBegin: {roleMaster},
	wire.MsgRestore:      {roleMaster},
	wire.MsgOutcome:      {roleMaster, roleNode},
	wire.MsgStatus:       {roleClient, roleNode, roleMaster},
}

// allow refuses, with CodePermissionDenied, a request of type t from peer that a's roles do
// not include; self names the process in the error.
func (a acl) allow(self string, peer wire.Hello, t wire.MsgType) error {
	if slices.Contains(a[t], peer.Role) {
		return nil
	}
	return wire.Errorf(wire.CodePermissionDenied, "%s: %s (role %q) may not send %s here", self, peer.Name, peer.Role, t)
}

// clusterPeer is the wire.ServerConfig.Trusted of every process: the master and the nodes.
// Their connections take no client's connection slot, and their requests, which come from
// work the cluster already admitted, wait for room in the in-flight budget instead of being
// refused as busy.
func clusterPeer(peer wire.Hello) bool { return peer.Role == roleMaster || peer.Role == roleNode }
