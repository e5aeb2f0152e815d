package wire

// The messages of administration rather than of the transaction path: restoring a backup, and
// the GC safe point.

// RestoreBeginRequest opens the restore of a backup taken at BackupTS (MsgRestoreBegin). The
// master asks every node what it holds (RestoreNodeState) and refuses with CodeNotEmpty when a
// node holds any version of any key, a lock or a prepared transaction, unless Force is set
// (locks and prepared transactions are refused even then). Otherwise it durably raises its
// oracle above BackupTS before it replies, so that every write after the restore gets a higher
// version. A node answers the same request with its own state alone.
type RestoreBeginRequest struct {
	BackupTS uint64 `codec:",omitempty"`
	Force    bool   `codec:",omitempty"`
}

// MsgType returns MsgRestoreBegin.
func (RestoreBeginRequest) MsgType() MsgType { return MsgRestoreBegin }

// RestoreNodeState is what one node holds, as a restore sees it.
type RestoreNodeState struct {
	Name string `codec:",omitempty"`
	// HasData is set when the node's store holds any version of any key, deletions included.
	HasData  bool `codec:",omitempty"`
	Locks    int  `codec:",omitempty"`
	Prepared int  `codec:",omitempty"`
}

// RestoreBeginReply answers a RestoreBeginRequest (MsgRestoreBeginReply): every node's state,
// in shard order (Nodes names the cluster's shard map), and the oracle's last timestamp, which
// is at least BackupTS once the master has accepted.
type RestoreBeginReply struct {
	Nodes    []RestoreNodeState `codec:",omitempty"`
	OracleTS uint64             `codec:",omitempty"`
}

// MsgType returns MsgRestoreBeginReply.
func (RestoreBeginReply) MsgType() MsgType { return MsgRestoreBeginReply }

// SafePointRequest tells a node the cluster's GC safe point (MsgSafePoint), answered by MsgAck
// once it is durable there: the node refuses reads below it and may drop the versions no read
// at or above it can see.
type SafePointRequest struct {
	SafePoint uint64 `codec:",omitempty"`
}

// MsgType returns MsgSafePoint.
func (SafePointRequest) MsgType() MsgType { return MsgSafePoint }

// OracleBoundRequest asks the master for its timestamp oracle's bound (MsgOracleBound): a node
// sends it, over its own authenticated link to the master, when a request carries a timestamp
// above the bound it has learned, to tell a timestamp the master may have issued from one no
// master could have. From names the asking node.
type OracleBoundRequest struct {
	From string `codec:",omitempty"`
}

// MsgType returns MsgOracleBound.
func (OracleBoundRequest) MsgType() MsgType { return MsgOracleBound }

// OracleBoundReply answers an OracleBoundRequest (MsgOracleBoundReply): Bound is at least every
// timestamp the master has handed out or observed (its oracle's persisted mark), so a timestamp
// above it was issued by no master of this cluster.
type OracleBoundReply struct {
	Bound uint64 `codec:",omitempty"`
}

// MsgType returns MsgOracleBoundReply.
func (OracleBoundReply) MsgType() MsgType { return MsgOracleBoundReply }
