package txn

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
)

// MarkStore persists the oracle's high-water mark: every timestamp ever handed out is at most
// the last saved mark. SaveMark must be durable when it returns.
type MarkStore interface {
	LoadMark() (uint64, error)
	SaveMark(ctx context.Context, mark uint64) error
}

// OracleBatch is how far ahead of the timestamps it hands out the oracle persists its mark: one
// fsync per OracleBatch timestamps.
const OracleBatch = 1_000_000

// MaxTimestamp is the highest timestamp the oracle hands out or observes (math.MaxUint64 is
// kept for reads of metadata).
const MaxTimestamp = math.MaxUint64 - 1

// ErrTimestampsExhausted is returned once the oracle has handed out or observed MaxTimestamp:
// it never wraps around to reuse a timestamp.
var ErrTimestampsExhausted = errors.New("txn: timestamps exhausted")

// Oracle hands out strictly increasing 64-bit timestamps that are never reused, also across
// restarts: it starts above the persisted mark. It is safe for concurrent use; Next costs a
// mutex and, once per OracleBatch timestamps, one durable write.
type Oracle struct {
	store MarkStore
	mu    struct {
		sync.Mutex
		last uint64 // last timestamp handed out or observed
		mark uint64 // persisted: every handed-out timestamp is <= mark
	}
}

// NewOracle loads the persisted mark and persists a new one ahead of it.
func NewOracle(ctx context.Context, store MarkStore) (*Oracle, error) {
	mark, err := store.LoadMark()
	if err != nil {
		return nil, fmt.Errorf("txn: load oracle mark: %w", err)
	}
	o := &Oracle{store: store}
	o.mu.last = mark
	o.mu.mark = mark
	if err := o.extendLocked(ctx, mark); err != nil {
		return nil, err
	}
	return o, nil
}

// Next returns a timestamp greater than every timestamp returned or observed before.
func (o *Oracle) Next(ctx context.Context) (uint64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.mu.last >= MaxTimestamp {
		return 0, fmt.Errorf("%w: the last one handed out is %d", ErrTimestampsExhausted, o.mu.last)
	}
	ts := o.mu.last + 1
	if ts > o.mu.mark {
		if err := o.extendLocked(ctx, ts); err != nil {
			return 0, err
		}
	}
	o.mu.last = ts
	return ts, nil
}

// Observe makes every later Next return more than ts. The master observes commit timestamps
// that participants raised above the oracle (MinCommitTS), before it answers the client.
func (o *Oracle) Observe(ctx context.Context, ts uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if ts <= o.mu.last {
		return nil
	}
	if ts > MaxTimestamp {
		return fmt.Errorf("%w: cannot observe %d", ErrTimestampsExhausted, ts)
	}
	if ts > o.mu.mark {
		if err := o.extendLocked(ctx, ts); err != nil {
			return err
		}
	}
	o.mu.last = ts
	return nil
}

// Last returns the last timestamp handed out or observed.
func (o *Oracle) Last() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.mu.last
}

// Bound returns the oracle's persisted mark: every timestamp it has handed out or observed,
// before or since a restart, is at most Bound. Nodes learn it (OracleBoundRequest) to refuse
// timestamps no master could have issued.
func (o *Oracle) Bound() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.mu.mark
}

func (o *Oracle) extendLocked(ctx context.Context, ts uint64) error {
	mark := uint64(MaxTimestamp)
	if ts < MaxTimestamp-OracleBatch {
		mark = ts + OracleBatch
	}
	if err := o.store.SaveMark(ctx, mark); err != nil {
		return fmt.Errorf("txn: persist oracle mark: %w", err)
	}
	o.mu.mark = mark
	return nil
}
