package kv

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// bank is a two-shard bank: account i lives on shard i%2. Transfers within
// a shard use one-phase Apply with optimistic version compares; transfers
// across shards use Prepare on both shards and then Commit (or, sometimes
// by choice, Abort) on both. Timestamps come from a shared oracle.
type bank struct {
	t        *testing.T
	shards   [2]*Store
	accounts int
	initial  int64
	oracle   oracle
	txnIDs   atomic.Uint64

	onePhase, twoPhase, aborted, retries, reads atomic.Int64
}

func acct(i int) []byte { return []byte(fmt.Sprintf("acct-%02d", i)) }

func encBal(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

func decBal(t *testing.T, v Value) int64 {
	if !v.Found || len(v.Value) != 8 {
		t.Errorf("account %s: bad balance %+v", v.Key, v)
		return 0
	}
	return int64(binary.BigEndian.Uint64(v.Value))
}

// retryable reports errors a client of the store would retry.
func retryable(err error) bool {
	return errors.Is(err, ErrConflict) || errors.Is(err, ErrCompareFailed) || errors.Is(err, ErrLocked)
}

// read returns the balance and version of account i at ts.
func (b *bank) read(i int, ts uint64) (Value, error) {
	vs, err := b.shards[i%2].Get(context.Background(), [][]byte{acct(i)}, ts)
	if err != nil {
		return Value{}, err
	}
	return vs[0], nil
}

// transfer moves amount from account from to account to, retrying until
// it commits. It reports whether money moved (false if from was too poor).
func (b *bank) transfer(rng *rand.Rand, from, to int, amount int64) bool {
	ctx := context.Background()
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			b.retries.Add(1)
			time.Sleep(time.Duration(rng.IntN(500*min(attempt, 20))) * time.Microsecond)
		}
		startTS := b.oracle.next()
		fv, err := b.read(from, startTS)
		if err != nil {
			if retryable(err) {
				continue
			}
			b.t.Error(err)
			return false
		}
		tv, err := b.read(to, startTS)
		if err != nil {
			if retryable(err) {
				continue
			}
			b.t.Error(err)
			return false
		}
		fb, tb := decBal(b.t, fv), decBal(b.t, tv)
		if fb < amount {
			return false
		}
		fromOp := Op{Kind: OpPut, Key: acct(from), Value: encBal(fb - amount)}
		toOp := Op{Kind: OpPut, Key: acct(to), Value: encBal(tb + amount)}
		fromCmp := Compare{Kind: CmpVersionEqual, Key: acct(from), Version: fv.Version}
		toCmp := Compare{Kind: CmpVersionEqual, Key: acct(to), Version: tv.Version}
		id := b.txnIDs.Add(1)

		if from%2 == to%2 {
			cts, err := b.shards[from%2].Apply(ctx, id, b.oracle.next(), []Compare{fromCmp, toCmp}, []Op{fromOp, toOp})
			if err != nil {
				if retryable(err) {
					continue
				}
				b.t.Error(err)
				return false
			}
			b.oracle.observe(cts)
			b.onePhase.Add(1)
			return true
		}

		rec := func(op Op) PrepareRecord {
			return PrepareRecord{TxnID: id, StartTS: startTS, Ops: []Op{op}, Participants: []string{"s0", "s1"}}
		}
		minFrom, errFrom := b.shards[from%2].Prepare(ctx, rec(fromOp), []Compare{fromCmp})
		var minTo uint64
		errTo := errors.New("not attempted")
		if errFrom == nil {
			minTo, errTo = b.shards[to%2].Prepare(ctx, rec(toOp), []Compare{toCmp})
		}
		for _, err := range []error{errFrom, errTo} {
			if err != nil && !retryable(err) && err.Error() != "not attempted" {
				b.t.Error(err)
			}
		}
		// Abort when a vote was no, and now and then by choice.
		if errFrom != nil || errTo != nil || rng.IntN(10) == 0 {
			for _, s := range b.shards {
				if err := s.Abort(ctx, id); err != nil {
					b.t.Error(err)
				}
			}
			b.aborted.Add(1)
			continue
		}
		// Half the time commit at the smallest timestamp the shards allow,
		// which may be below reads that other clients have already done:
		// the minimum commit timestamps must keep those reads repeatable.
		commitTS := max(minFrom, minTo)
		if rng.IntN(2) == 0 {
			commitTS = max(commitTS, b.oracle.next())
		}
		b.oracle.observe(commitTS)
		// Commit in random order, concurrently with the reads of others.
		order := []int{from % 2, to % 2}
		if rng.IntN(2) == 0 {
			order[0], order[1] = order[1], order[0]
		}
		for _, sh := range order {
			if err := b.shards[sh].Commit(ctx, id, commitTS); err != nil {
				b.t.Error(err)
			}
		}
		b.twoPhase.Add(1)
		return true
	}
}

// audit reads every account at one snapshot and checks the total.
func (b *bank) audit() {
	for {
		ts := b.oracle.next()
		var sum int64
		ok := true
		for sh := range 2 {
			var keys [][]byte
			for i := sh; i < b.accounts; i += 2 {
				keys = append(keys, acct(i))
			}
			vs, err := b.shards[sh].Get(context.Background(), keys, ts)
			if errors.Is(err, ErrLocked) {
				ok = false
				break
			}
			if err != nil {
				b.t.Error(err)
				return
			}
			for _, v := range vs {
				sum += decBal(b.t, v)
			}
		}
		if !ok {
			continue
		}
		b.reads.Add(1)
		if want := int64(b.accounts) * b.initial; sum != want {
			b.t.Errorf("snapshot at %d: total %d, want %d", ts, sum, want)
		}
		return
	}
}

func TestConcurrentBankInvariant(t *testing.T) {
	b := &bank{t: t, accounts: 12, initial: 1000}
	for sh := range 2 {
		opts := testOpts(t, t.TempDir())
		opts.LockWait = 500 * time.Millisecond
		if sh == 1 {
			opts.MaxTSBatch = 25 // exercise concurrent high-water-mark writes
		}
		b.shards[sh] = openTest(t, opts)
	}
	for sh := range 2 {
		var ops []Op
		for i := sh; i < b.accounts; i += 2 {
			ops = append(ops, Op{Kind: OpPut, Key: acct(i), Value: encBal(b.initial)})
		}
		cts := mustApply(t, b.shards[sh], b.oracle.next(), nil, ops...)
		b.oracle.observe(cts)
	}

	const workers, transfers, auditors = 8, 60, 3
	var wg sync.WaitGroup
	var done atomic.Bool
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for range transfers {
				from := rng.IntN(b.accounts)
				to := rng.IntN(b.accounts - 1)
				if to >= from {
					to++
				}
				b.transfer(rng, from, to, int64(1+rng.IntN(50)))
			}
		})
	}
	var auditWG sync.WaitGroup
	for range auditors {
		auditWG.Go(func() {
			for !done.Load() {
				b.audit()
			}
		})
	}
	wg.Wait()
	done.Store(true)
	auditWG.Wait()
	b.audit()
	t.Logf("one-phase %d, two-phase %d, aborted %d, retries %d, consistent snapshots %d",
		b.onePhase.Load(), b.twoPhase.Load(), b.aborted.Load(), b.retries.Load(), b.reads.Load())
	if b.onePhase.Load() == 0 || b.twoPhase.Load() == 0 || b.reads.Load() < 2 {
		t.Fatal("the workload did not exercise both commit paths and reads")
	}
	// Every balance is non-negative and versions only moved forward.
	final := b.oracle.next()
	for i := range b.accounts {
		v, err := b.read(i, final)
		if err != nil {
			t.Fatal(err)
		}
		if decBal(t, v) < 0 {
			t.Fatalf("account %d is negative", i)
		}
	}
	// openTest's cleanup asserts that no locks or prepare records remain.
}
