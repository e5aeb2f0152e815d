// Package wire is kvtx's network protocol: message types, framing, a
// multiplexed client connection (Conn) and a concurrent server (Server). It
// knows nothing about storage or transactions; it moves typed messages.
//
// # Framing
//
// Every frame is a 13-byte header (a 4-byte big-endian body length, a 1-byte
// MsgType and an 8-byte big-endian request id) followed by a msgpack body of
// that length. Readers reject a declared length above their limit (default
// DefaultMaxFrame) before allocating, and grow body buffers only as bytes
// arrive.
//
// # Protocol
//
// A client opens a TCP connection and sends MsgHello; the server answers
// MsgHelloReply, or MsgError with CodeVersionMismatch and closes. The client
// then sends requests, each with a fresh request id, and may keep many in
// flight: the server runs each in its own goroutine and answers with a frame
// carrying the same id, possibly out of order. A request's answer is its reply
// type (MsgGet → MsgGetReply, ...), MsgAck (MsgCommit, MsgAbort), or MsgError.
// A MsgError with id 0 is about the whole connection (e.g. CodeShuttingDown)
// and is followed by the server closing it. Malformed input gets one MsgError
// and the connection is closed.
//
// # TLS
//
// With ServerConfig.TLS and DialOptions.TLS every connection is TLS, the
// handshake first, then the hello; HelloTimeout bounds both. With
// ServerConfig.Identify the peer's name and role are its certificate's: a
// hello that claims others is refused with CodePermissionDenied, and
// Request.Peer carries the verified ones. A connection counts toward MaxConns
// only once authenticated (past the handshake and hello); until then it counts
// toward MaxPending, so peers that never finish a handshake cannot take the
// slots of those that do. This package knows no certificate format: the
// caller's tls.Config and Identify do (package txn/certs for kvtx).
//
// # Errors
//
// All errors of this package are prefixed "wire: ". Failures that cross the
// wire are *Error values with a Code; CodeOf classifies any error. A Call that
// fails because the connection broke wraps ErrNotSent (the request never left
// this process) or ErrConnLost (the server may have executed it); one whose
// context ended wraps ErrNotSent too if the request was still waiting for the
// connection's writer.
package wire
