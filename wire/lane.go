package wire

import "strconv"

// Lane is the class of traffic a connection carries, chosen by the client in its Hello. A
// server gives every connection its own in-flight budget (ServerConfig.MaxInFlight) and stops
// reading a connection whose budget is spent, so a request that would free what the running
// ones wait for (the Commit that releases a lock held against waiting reads) must not travel on
// their connection: behind a full connection it is not even read. A second budget on the same
// connection would not help, since the reader cannot get to a frame behind one it has no slot
// for. Protocol traffic therefore has a connection of its own, which a server keeps for it by
// refusing every other request on it; the budget of client traffic cannot hold it up. CockroachDB's connection classes and
// TiKV's separate raft connections keep their system traffic apart in the same way.
type Lane uint8

const (
	// LaneClient is the default: a connection that carries any request. Requests on it may
	// wait, for example a read for a lock, up to the lock-wait bound.
	LaneClient Lane = iota
	// LaneProtocol carries only the requests of LaneProtocol type (MsgType.Lane), none of
	// which waits for a client-lane request that is not already running. A server closes a
	// protocol-lane connection that sends any other request, with CodeBadRequest.
	LaneProtocol
)

// Valid reports whether l is a lane this protocol version defines.
func (l Lane) Valid() bool { return l <= LaneProtocol }

// String returns "client", "protocol" or "lane(N)".
func (l Lane) String() string {
	switch l {
	case LaneClient:
		return "client"
	case LaneProtocol:
		return "protocol"
	}
	return "lane(" + strconv.Itoa(int(l)) + ")"
}

// Lane returns the lane that requests of type t travel on. The protocol lane carries the
// commit protocol between the master and the participants (Prepare, Commit, CommitBatch,
// Abort, Sync, Outcome, OracleBound), the GC safe point and Status: each ends in bounded time
// without waiting for a client-lane request that is not already running, and each decides, frees or
// reports on what waiting requests wait for. A prepare never waits for another prepared
// transaction, only for the one-phase writes holding its keys, which finish their write
// without waiting for anyone; a safe point, sent once a second, waits only for the reads
// already running below it. A prepare belongs there although it starts new work: a
// transaction prepared on one node waits for its prepare on the others, and behind reads
// that wait for a transaction prepared there, waiting in turn for its prepare on the first
// node, the two would wait for each other until the reads gave up. The client lane carries
// what may wait for a prepared transaction's lock, up to the lock-wait bound (Get, Scan,
// Apply, Txn), and restores.
func (t MsgType) Lane() Lane {
	switch t {
	case MsgPrepare, MsgCommit, MsgCommitBatch, MsgAbort, MsgSync, MsgOutcome, MsgSafePoint, MsgStatus, MsgOracleBound:
		return LaneProtocol
	}
	return LaneClient
}
