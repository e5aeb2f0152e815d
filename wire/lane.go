package wire

import "strconv"

// Lane is the class of traffic a connection carries, chosen by the client in its Hello. A
// server gives every connection its own in-flight budget (ServerConfig.MaxInFlight) and stops
// reading a connection whose budget is spent, so a request that would free what the running
// ones wait for (the Commit that releases a lock held against waiting reads) must not travel on
// their connection: behind a full connection it is not even read. Protocol traffic therefore
// has a connection of its own, which a server keeps for it by refusing every other request on
// it; the budget of client traffic cannot hold it up. CockroachDB's connection classes and
// TiKV's separate raft connections keep their system traffic apart in the same way.
type Lane uint8

const (
	// LaneClient is the default: a connection that carries any request. Requests on it may
	// wait, for example a read for a lock, up to the lock-wait bound.
	LaneClient Lane = iota
	// LaneProtocol carries only the requests of LaneProtocol type (MsgType.Lane), none of
	// which waits for a request of the client lane. A server closes a protocol-lane connection
	// that sends any other request, with CodeBadRequest.
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

// Lane returns the lane that requests of type t travel on. The protocol lane carries what
// finishes a transaction already decided or asks about one (Commit, CommitBatch, Abort, Sync,
// Outcome), the GC safe point and Status: each does a bounded amount of work and waits for no
// client request (a safe point, sent once a second, waits only for the reads already running
// below it), and each frees, or reports on, what waiting requests wait for.
// Everything else is LaneClient, Prepare included: a prepare starts new work, takes locks, and
// may wait for a one-phase write's; it is admitted with the client traffic that it competes
// with.
func (t MsgType) Lane() Lane {
	switch t {
	case MsgCommit, MsgCommitBatch, MsgAbort, MsgSync, MsgOutcome, MsgSafePoint, MsgStatus:
		return LaneProtocol
	}
	return LaneClient
}
