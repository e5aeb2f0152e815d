package kv

import (
	"errors"
	"fmt"
	"strconv"
)

// Sentinel errors. Every error returned by this package that falls into one of
// these classes satisfies errors.Is against the matching sentinel; the struct
// types below carry the detail and unwrap to their sentinel.
var (
	// ErrClosed is returned by every operation on a Store (or GroupSyncer)
	// after Close has begun, including calls that were waiting for a lock.
	ErrClosed = errors.New("kv: store closed")

	// ErrLocked is returned by Get when a key stayed locked by a transaction
	// whose writes the read must see for longer than Options.LockWait.
	// The read had no effect other than raising maxTS; it may be retried.
	ErrLocked = errors.New("kv: key locked")

	// ErrConflict is returned by Prepare when a key is locked by another
	// prepared transaction, and by Prepare and Apply when a key stayed locked
	// for longer than Options.LockWait. Nothing was locked or written.
	ErrConflict = errors.New("kv: lock conflict")

	// ErrCompareFailed is returned by Apply and Prepare when a Compare did
	// not hold against the latest committed version. Nothing was written and
	// no lock is kept.
	ErrCompareFailed = errors.New("kv: compare failed")

	// ErrAborted is returned by Prepare for a transaction this store has
	// already finished (committed or aborted): a late duplicate.
	ErrAborted = errors.New("kv: transaction aborted")

	// ErrInvalidArgument is returned for arguments that can never succeed:
	// an unknown OpKind or CompareKind, a zero or maximal timestamp, or a
	// commit timestamp below what Prepare demanded. Nothing was changed.
	ErrInvalidArgument = errors.New("kv: invalid argument")

	// ErrNotPrepared is returned by Commit and CommitNoSync for a transaction
	// this store never prepared, or aborted: no prepare record of it was
	// ever written here (a committed one leaves an outcome marker, for which
	// Commit returns nil). It means the store lost a prepare record, for example a
	// wiped data directory, or a coordinator bug; nothing was written.
	ErrNotPrepared = errors.New("kv: transaction not prepared here")

	// ErrCompacted is returned by Get and Scan at a timestamp below the store's GC safe point
	// (SetSafePoint): the versions that read would need may be gone.
	ErrCompacted = errors.New("kv: version compacted")

	// ErrTooLarge is returned by Get when the values read would exceed Options.MaxReadBytes:
	// the read stops there, before it spends more memory.
	ErrTooLarge = errors.New("kv: reply too large")

	// ErrSpaceExceeded is returned by Apply and Prepare of a transaction that writes, and by
	// Restore, while the store is at or over its disk quota (Options.QuotaBytes): nothing was
	// written. Reads, and Commit and Abort of prepared transactions, go on.
	ErrSpaceExceeded = errors.New("kv: space exceeded")
)

// LockedError is returned by Get when Key stayed locked by transaction TxnID
// for longer than the lock wait bound. It unwraps to ErrLocked.
type LockedError struct {
	Key   []byte
	TxnID uint64
}

// Error returns `kv: key "k" locked by transaction 123`.
func (e *LockedError) Error() string {
	return "kv: key " + quoteKey(e.Key) + " locked by transaction " + strconv.FormatUint(e.TxnID, 10)
}

// Unwrap returns ErrLocked.
func (e *LockedError) Unwrap() error { return ErrLocked }

// ConflictError is returned by Prepare and Apply when Key is locked by
// transaction TxnID and the call gave up: at once for a key held by another
// prepared transaction (Prepare), after the lock wait bound otherwise. No lock
// was taken and nothing was written. It unwraps to ErrConflict.
type ConflictError struct {
	Key   []byte
	TxnID uint64
}

// Error returns `kv: key "k" is locked by transaction 123`, or without the
// transaction when TxnID is 0 (unknown).
func (e *ConflictError) Error() string {
	if e.TxnID == 0 {
		return "kv: key " + quoteKey(e.Key) + " is locked"
	}
	return "kv: key " + quoteKey(e.Key) + " is locked by transaction " + strconv.FormatUint(e.TxnID, 10)
}

// Unwrap returns ErrConflict.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// CompareFailedError reports the first Compare (by Index into the caller's
// slice) that did not hold, and the latest committed state of its key that
// it was checked against. Nothing was written. It unwraps to ErrCompareFailed.
type CompareFailedError struct {
	Index   int
	Compare Compare
	Actual  Value
}

// Error describes the failed compare and the actual state, for example
// `kv: compare 0 failed: version of "k" is 3, want = 2`. Keys and values
// longer than 64 bytes are shortened.
func (e *CompareFailedError) Error() string {
	return fmt.Sprintf("kv: compare %d failed: %s", e.Index, e.Detail())
}

// Detail says what the key held and what the compare wanted, e.g.
// `version of "k" is 3, want = 2`, without the compare's index.
func (e *CompareFailedError) Detail() string {
	c, a := e.Compare, e.Actual
	var what string
	key := quoteKey(c.Key)
	switch c.Kind {
	case CmpValueEqual:
		if !a.Found {
			what = key + " is missing, want value " + quoteValue(c.Value)
		} else {
			what = "value of " + key + " is " + quoteValue(a.Value) + ", want " + quoteValue(c.Value)
		}
	case CmpVersionEqual, CmpVersionLess, CmpVersionGreater:
		op := map[CompareKind]string{CmpVersionEqual: "=", CmpVersionLess: "<", CmpVersionGreater: ">"}[c.Kind]
		what = fmt.Sprintf("version of %s is %d, want %s %d", key, a.Version, op, c.Version)
	case CmpExists:
		what = key + " is missing, want it to exist"
	case CmpMissing:
		what = fmt.Sprintf("%s exists at version %d, want it missing", key, a.Version)
	default:
		what = fmt.Sprintf("unknown compare kind %d on %s", c.Kind, key)
	}
	return what
}

// Unwrap returns ErrCompareFailed.
func (e *CompareFailedError) Unwrap() error { return ErrCompareFailed }

// AbortedError is returned by Prepare for transaction TxnID, which this store
// has already finished; Reason says how it knows. It unwraps to ErrAborted.
type AbortedError struct {
	TxnID  uint64
	Reason string
}

// Error returns `kv: transaction 123 aborted: <reason>`.
func (e *AbortedError) Error() string {
	s := "kv: transaction " + strconv.FormatUint(e.TxnID, 10) + " aborted"
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Unwrap returns ErrAborted.
func (e *AbortedError) Unwrap() error { return ErrAborted }

// maxQuoted bounds how much of a key or value an error message shows.
const maxQuoted = 64

func quoteKey(b []byte) string { return quoteBytes(b) }

func quoteValue(b []byte) string { return quoteBytes(b) }

func quoteBytes(b []byte) string {
	if len(b) <= maxQuoted {
		return strconv.Quote(string(b))
	}
	return strconv.Quote(string(b[:maxQuoted])) + "…(" + strconv.Itoa(len(b)) + " bytes)"
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidArgument}, args...)...)
}

// CompactedError is returned by Get and Scan for a read at TS below SafePoint. It unwraps to
// ErrCompacted.
type CompactedError struct {
	TS, SafePoint uint64
}

// Error returns `kv: version 12 compacted: the GC safe point is 20`.
func (e *CompactedError) Error() string {
	return "kv: version " + strconv.FormatUint(e.TS, 10) + " compacted: the GC safe point is " + strconv.FormatUint(e.SafePoint, 10)
}

// Unwrap returns ErrCompacted.
func (e *CompactedError) Unwrap() error { return ErrCompacted }
