package chaos

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/kvtx/kvtx/txn/client"
)

// Status is how an operation ended.
type Status int

// Operation statuses.
const (
	// Invoked: sent, no answer yet.
	Invoked Status = iota
	// OK: the operation took effect (a write committed, a read returned).
	OK
	// Failed: definitely did not take effect (aborted, compare failed, refused).
	Failed
	// Unknown: may or may not have taken effect (unknown outcome, timeout, lost connection).
	Unknown
)

// String names the status.
func (s Status) String() string {
	return [...]string{"invoked", "ok", "failed", "unknown"}[s]
}

// Op is one recorded operation of a workload: what was invoked, when, and how it ended.
type Op struct {
	// ID is unique in the history and names the operation's marker key.
	ID int64
	// Workload is "bank", "append" or "register".
	Workload string
	// Client numbers the workload's client (porcupine's client id).
	Client int
	// Kind is the operation: "transfer", "read", "append", "write", ...
	Kind string
	// Write says whether the operation may change data.
	Write bool
	// Keys are the keys read or written; Shards the shards they live on.
	Keys   []string
	Shards []int
	// In are the values written, per key of Keys.
	In []string
	// Out are the values read, per key of Keys ("" with Found false for a missing key).
	Out   []string
	Found []bool
	// Group is the workload's key group (append and register).
	Group int
	// Markers are keys the write also sets to "1", one on each shard it writes, so that its
	// outcome can be read back after healing, shard by shard (none for reads).
	Markers []string
	// Invoke and Return bound the operation in time (Return is zero while invoked).
	Invoke, Return time.Time
	// Status is the outcome; Reason the error code's name when not OK; Err the message.
	Status Status
	Reason string
	Err    string
	// Applied is, for writes, whether every marker was found after healing; MarkersFound how
	// many were (between 0 and len(Markers): a half-applied write).
	Applied      bool
	MarkersFound int
}

// Recorder keeps the history of every operation. It is safe for concurrent use.
type Recorder struct {
	mu   sync.Mutex
	ops  []*Op
	next int64
}

// Invoke records the start of op and returns it with its ID.
func (r *Recorder) Invoke(op *Op) *Op {
	r.mu.Lock()
	r.next++
	op.ID = r.next
	op.Invoke = time.Now()
	op.Status = Invoked
	r.ops = append(r.ops, op)
	r.mu.Unlock()
	return op
}

// Complete records how op ended, classifying err: nil is OK, an abort, failed compare or
// refused request is Failed, anything else (unknown outcome, a deadline, a lost connection) is
// Unknown for a write. A read that fails is Failed: it changed nothing.
func (r *Recorder) Complete(op *Op, err error) {
	now := time.Now()
	st, reason := classify(err, op.Write)
	r.mu.Lock()
	op.Return, op.Status, op.Reason = now, st, reason
	if err != nil {
		op.Err = err.Error()
	}
	r.mu.Unlock()
}

// classify maps a client error to a status and a reason.
func classify(err error, write bool) (Status, string) {
	if err == nil {
		return OK, ""
	}
	reason := "error"
	var ce *client.Error
	if errors.As(err, &ce) {
		reason = ce.Reason()
	} else if errors.Is(err, context.DeadlineExceeded) {
		reason = "deadline"
	}
	if !write {
		return Failed, reason
	}
	switch {
	case errors.Is(err, client.ErrUnknownOutcome):
		return Unknown, reason
	case errors.Is(err, client.ErrAborted), errors.Is(err, client.ErrCompareFailed), errors.Is(err, client.ErrInvalid):
		return Failed, reason
	}
	return Unknown, reason
}

// Ops returns a snapshot of the history in invocation order.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Op, len(r.ops))
	for i, op := range r.ops {
		out[i] = *op
	}
	return out
}

// setApplied records, after healing, how many markers of each write were found.
func (r *Recorder) setApplied(found map[int64]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, op := range r.ops {
		if op.Write {
			op.MarkersFound = found[op.ID]
			op.Applied = len(op.Markers) > 0 && op.MarkersFound == len(op.Markers)
		}
	}
}

// Event is something the runner did, with its time: a fault, a heal, a restart.
type Event struct {
	// At is when it happened.
	At time.Time
	// Kind is "kill", "restart", "crashpoint", "partition", "heal", "pause", "resume", ...
	Kind string
	// Target is the process or link concerned.
	Target string
	// Detail adds whatever helps to follow the run.
	Detail string
}
