package txn

import (
	"context"
	"errors"
	"testing"
)

// Near the end of the 64-bit range the oracle stops with ErrTimestampsExhausted instead of
// wrapping around to 0, which once let a poisoned commit timestamp of 2^64-1 make the master
// hand out timestamps that every node had already passed.
func TestOracleRefusesToWrap(t *testing.T) {
	ctx := context.Background()
	store := NewMemDecisionStore()
	if err := store.SaveMark(ctx, MaxTimestamp-2); err != nil {
		t.Fatal(err)
	}
	o, err := NewOracle(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	if mark, _ := store.LoadMark(); mark != MaxTimestamp {
		t.Fatalf("persisted mark %d, want it capped at %d", mark, uint64(MaxTimestamp))
	}
	for _, want := range []uint64{MaxTimestamp - 1, MaxTimestamp} {
		if ts, err := o.Next(ctx); err != nil || ts != want {
			t.Fatalf("Next = %d, %v; want %d", ts, err, want)
		}
	}
	if ts, err := o.Next(ctx); !errors.Is(err, ErrTimestampsExhausted) {
		t.Fatalf("Next past the last timestamp = %d, %v; want ErrTimestampsExhausted", ts, err)
	}
	if err := o.Observe(ctx, MaxTimestamp+1); !errors.Is(err, ErrTimestampsExhausted) {
		t.Fatalf("Observe(2^64-1) = %v, want ErrTimestampsExhausted", err)
	}
	if last := o.Last(); last != MaxTimestamp {
		t.Fatalf("Last = %d after the refusals, want %d", last, uint64(MaxTimestamp))
	}
}
