package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// noWait is the lockOwner.readFrom value of an owner no reader ever has to
// wait for (callers never read at math.MaxUint64).
const noWait = math.MaxUint64

// lockOwner holds the locks of one Apply call or one prepared transaction.
// All of its keys point at it in the lock table and are released together.
// txnID and prepared never change after the owner is published; readFrom and
// wake are guarded by Store.mu.
type lockOwner struct {
	txnID    uint64
	prepared bool // false: an in-progress one-phase Apply

	// readFrom is the lowest read timestamp that must wait for this owner:
	// its writes, if any, will be committed at a timestamp >= readFrom, so a
	// Get below it cannot see them and need not wait. For an Apply it is the
	// commit timestamp (chosen when the locks are taken); for a prepared
	// transaction it is the minimum commit timestamp, fixed when Prepare
	// takes the locks (any reader that got there first raised maxTS above its
	// ts), the commit timestamp once Commit starts, startTS+1 after the
	// recovery of a record that does not hold its minimum, and noWait once
	// Abort has started.
	readFrom uint64

	// wake is created by the first waiter and closed on release.
	wake chan struct{}
}

// errLockWait is returned by waitLocked when Options.LockWait has elapsed;
// callers convert it into their typed error.
var errLockWait = errors.New("kv: lock wait bound exceeded")

// smallSet is the size up to which duplicate detection uses pairwise
// comparison instead of a map.
const smallSet = 16

// holderLocked returns the first of keys that is locked, and its owner, or
// (“”, nil) if none is.
func (s *Store) holderLocked(keys []string) (string, *lockOwner) {
	for _, k := range keys {
		if o := s.mu.locks[k]; o != nil {
			return k, o
		}
	}
	return "", nil
}

// readBlockerLocked returns the first key whose lock, or whose write not yet
// durable (Store.mu.pending), a read at ts must wait for, and its owner, or
// (nil, nil).
func (s *Store) readBlockerLocked(keys [][]byte, ts uint64) ([]byte, *lockOwner) {
	if len(s.mu.locks) == 0 && len(s.mu.pending) == 0 {
		return nil, nil
	}
	for _, k := range keys {
		if o := s.mu.locks[string(k)]; o != nil && ts >= o.readFrom {
			return k, o
		}
		for _, o := range s.mu.pending[string(k)] {
			if ts >= o.readFrom {
				return k, o
			}
		}
	}
	return nil, nil
}

// acquireLocked points every key at o. The keys must all be free.
func (s *Store) acquireLocked(keys []string, o *lockOwner) {
	for _, k := range keys {
		s.mu.locks[k] = o
	}
}

// releaseLocked frees o's keys, wakes everyone waiting for o and hands the
// keys to the Applies queued for them, oldest first.
func (s *Store) releaseLocked(keys []string, o *lockOwner) {
	for _, k := range keys {
		if s.mu.locks[k] == o {
			delete(s.mu.locks, k)
		}
	}
	if o.wake != nil {
		close(o.wake)
		o.wake = nil
	}
	s.grantLocked(keys)
}

// applyWaiter is an Apply queued for its keys. Queued Applies get their keys
// in arrival order: the lock table hands a released key to the oldest Apply
// waiting for it, and a new Apply queues behind any Apply already waiting for
// one of its keys. Without the queue every release woke all waiters to race
// for the key, and on a hot key a writer could lose the race for seconds
// (kvctl bench -w put -c 32 --keys 4 --txn-keys 1: p50 2.5 ms, max 173 ms).
// Waiters hold nothing and the oldest one is first in line for every one of
// its keys, so the queue cannot deadlock.
//
// One exception keeps a prepared transaction's lock from blocking keys it does
// not hold: a waiter that needs a key locked by a prepared transaction is
// parked. It keeps its place in every queue, but does not hold back its other
// keys: an Apply behind it that needs no prepared key may go first. A prepared
// lock can last for as long as the transaction is in doubt (seconds, or an
// outage); one-phase locks last one Badger write. Without parking, an Apply of
// {a, b} with b in doubt made every Apply of a wait behind it: with one key in
// doubt, 16 clients putting single keys beside 4 writing 2-key one-phase
// transactions over the same 16 keys, the puts that succeeded took p95 2.00 s
// (lock_wait) at 15-18 ops/s; parked, 4-6 ms at 62-74 ops/s, as without the
// 2-key writers. Once the prepared lock goes, the parked waiter is first in
// line again among those still queued, so it is not starved.
type applyWaiter struct {
	keys    []string
	owner   *lockOwner
	ready   chan struct{} // closed when granted
	granted bool          // the keys are locked for owner
}

// parkedLocked reports whether w waits for a key locked by a prepared
// transaction (see applyWaiter).
func (s *Store) parkedLocked(w *applyWaiter) bool {
	for _, k := range w.keys {
		if o := s.mu.locks[k]; o != nil && o.prepared {
			return true
		}
	}
	return false
}

// firstInLineLocked returns the oldest Apply queued for k that is not parked,
// or nil.
func (s *Store) firstInLineLocked(k string) *applyWaiter {
	for _, w := range s.mu.queues[k] {
		if !s.parkedLocked(w) {
			return w
		}
	}
	return nil
}

// queuedLocked reports whether an Apply that is not parked is queued for any
// of keys, or a Prepare waits for one: a new Apply must then queue too.
func (s *Store) queuedLocked(keys []string) bool {
	if len(s.mu.queues) == 0 && len(s.mu.prepWaiting) == 0 {
		return false
	}
	for _, k := range keys {
		if s.mu.prepWaiting[k] > 0 || s.firstInLineLocked(k) != nil {
			return true
		}
	}
	return false
}

// enqueueLocked queues w behind every Apply already waiting for its keys.
func (s *Store) enqueueLocked(w *applyWaiter) {
	for _, k := range w.keys {
		s.mu.queues[k] = append(s.mu.queues[k], w)
	}
}

// unqueueLocked takes w out of its queues.
func (s *Store) unqueueLocked(w *applyWaiter) {
	for _, k := range w.keys {
		q := slices.DeleteFunc(s.mu.queues[k], func(x *applyWaiter) bool { return x == w })
		if len(q) == 0 {
			delete(s.mu.queues, k)
		} else {
			s.mu.queues[k] = q
		}
	}
}

// dequeueLocked takes w, which gave up, out of its queues, and grants what
// its leaving makes grantable.
func (s *Store) dequeueLocked(w *applyWaiter) {
	s.unqueueLocked(w)
	s.grantLocked(w.keys)
}

// grantLocked locks keys for the first Apply in line for each of them (parked
// ones aside) if it is first in line for all of its keys and they are all
// free. The owner's readFrom is noWait until the Apply picks its commit
// timestamp, as for a Prepare still writing: a read that gets ahead raises
// maxTS, which the commit timestamp is then chosen above.
func (s *Store) grantLocked(keys []string) {
	if len(s.mu.queues) == 0 {
		return
	}
	for _, k := range keys {
		if s.mu.prepWaiting[k] > 0 {
			continue
		}
		w := s.firstInLineLocked(k)
		if w == nil || !s.grantableLocked(w) {
			continue
		}
		s.unqueueLocked(w)
		w.owner.readFrom = noWait
		s.acquireLocked(w.keys, w.owner)
		w.granted = true
		close(w.ready)
	}
}

// grantableLocked reports whether w is first in line for all its keys and
// they are free, with no Prepare waiting for them.
func (s *Store) grantableLocked(w *applyWaiter) bool {
	for _, k := range w.keys {
		if s.mu.locks[k] != nil || s.mu.prepWaiting[k] > 0 || s.firstInLineLocked(k) != w {
			return false
		}
	}
	return true
}

// grantAroundLocked runs the grants that the Applies queued for keys, which a
// prepared transaction has just locked, no longer hold back: they are parked.
func (s *Store) grantAroundLocked(keys []string) {
	if len(s.mu.queues) == 0 {
		return
	}
	for _, k := range keys {
		for _, w := range slices.Clone(s.mu.queues[k]) {
			s.grantLocked(w.keys)
		}
	}
}

// queueForLocked queues an Apply for keys and waits, dropping s.mu meanwhile,
// until they are granted to o, up to LockWait, ctx or Close. If
// it gives up it leaves the queue; a grant that raced with giving up wins.
func (s *Store) queueForLocked(ctx context.Context, keys []string, o *lockOwner) error {
	w := &applyWaiter{keys: keys, owner: o, ready: make(chan struct{})}
	s.enqueueLocked(w)
	s.mu.Unlock()
	timer := time.NewTimer(s.lockWait)
	var err error
	select {
	case <-w.ready:
	case <-timer.C:
		err = errLockWait
	case <-ctx.Done():
		err = ctx.Err()
	case <-s.closing:
		err = ErrClosed
	}
	timer.Stop()
	s.mu.Lock()
	if w.granted {
		return nil
	}
	s.dequeueLocked(w)
	switch {
	case err == errLockWait:
		k, holder := s.holderLocked(keys)
		if holder == nil { // free, but an older Apply is first in line
			k = keys[0]
			for _, kk := range keys {
				if q := s.mu.queues[kk]; len(q) > 0 {
					k, holder = kk, q[0].owner
					break
				}
			}
		}
		var id uint64
		if holder != nil {
			id = holder.txnID
		}
		return &ConflictError{Key: []byte(k), TxnID: id}
	case err == ErrClosed:
		return err
	}
	return fmt.Errorf("kv: transaction %d waiting for its locks: %w", o.txnID, err)
}

// waitLocked waits until o releases its locks, dropping s.mu meanwhile. timer bounds the
// total wait of one call
// across retries: pass nil the first time and the returned timer after;
// the caller stops it. It returns errLockWait when the bound has passed,
// ErrClosed when the store is closing, or ctx's error (wrapped).
func (s *Store) waitLocked(ctx context.Context, o *lockOwner, timer *time.Timer) (*time.Timer, error) {
	if o.wake == nil {
		o.wake = make(chan struct{})
	}
	ch := o.wake
	s.mu.Unlock()
	defer s.mu.Lock()
	if timer == nil {
		timer = time.NewTimer(s.lockWait)
	}
	select {
	case <-ch:
		return timer, nil
	case <-timer.C:
		return timer, errLockWait
	case <-ctx.Done():
		return timer, fmt.Errorf("kv: waiting for lock held by transaction %d: %w", o.txnID, ctx.Err())
	case <-s.closing:
		return timer, ErrClosed
	}
}

// waitChan waits, without s.mu held, for ch to be closed, ctx to end or the
// store to close.
func (s *Store) waitChan(ctx context.Context, ch <-chan struct{}, what string) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kv: waiting for %s: %w", what, ctx.Err())
	case <-s.closing:
		return ErrClosed
	}
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// dedupeOps returns ops with only the last op for each key, in the order of
// those last ops. Without duplicates it returns ops itself.
func dedupeOps(ops []Op) []Op {
	n := len(ops)
	if n < 2 {
		return ops
	}
	if n <= smallSet {
		dup := false
	scan:
		for i := 1; i < n; i++ {
			for j := 0; j < i; j++ {
				if bytes.Equal(ops[i].Key, ops[j].Key) {
					dup = true
					break scan
				}
			}
		}
		if !dup {
			return ops
		}
	}
	seen := make(map[string]struct{}, n)
	out := make([]Op, 0, n)
	for i := n - 1; i >= 0; i-- {
		if _, ok := seen[string(ops[i].Key)]; ok {
			continue
		}
		seen[string(ops[i].Key)] = struct{}{}
		out = append(out, ops[i])
	}
	if len(out) == n {
		return ops
	}
	slices.Reverse(out)
	return out
}

// distinctKeys returns the keys to lock for ops (already deduplicated) and
// cmps: every op key, in order, then each compare key not seen before.
func distinctKeys(ops []Op, cmps []Compare) [][]byte {
	n := len(ops) + len(cmps)
	raw := make([][]byte, 0, n)
	for i := range ops {
		raw = append(raw, ops[i].Key)
	}
	var seen map[string]struct{}
	if n > smallSet && len(cmps) > 0 {
		seen = make(map[string]struct{}, n)
		for _, k := range raw {
			seen[string(k)] = struct{}{}
		}
	}
	for i := range cmps {
		k := cmps[i].Key
		if seen != nil {
			if _, ok := seen[string(k)]; ok {
				continue
			}
			seen[string(k)] = struct{}{}
		} else if containsKey(raw, k) {
			continue
		}
		raw = append(raw, k)
	}
	return raw
}

func containsKey(keys [][]byte, k []byte) bool {
	for _, x := range keys {
		if bytes.Equal(x, k) {
			return true
		}
	}
	return false
}

// joinKeys converts keys to strings that share one backing allocation, so
// the lock table costs one allocation per call rather than one per key.
func joinKeys(raw [][]byte) []string {
	total := 0
	for _, k := range raw {
		total += len(k)
	}
	var sb strings.Builder
	sb.Grow(total)
	for _, k := range raw {
		sb.Write(k)
	}
	all := sb.String()
	keys := make([]string, len(raw))
	off := 0
	for i, k := range raw {
		keys[i] = all[off : off+len(k)]
		off += len(k)
	}
	return keys
}

// recentSet remembers the last capacity transaction ids added to it.
type recentSet struct {
	capacity int
	ring     []uint64
	next     int // once ring is full: index of the oldest id
	set      map[uint64]struct{}
}

func newRecentSet(capacity int) *recentSet {
	return &recentSet{capacity: capacity, set: make(map[uint64]struct{})}
}

func (r *recentSet) has(id uint64) bool {
	_, ok := r.set[id]
	return ok
}

func (r *recentSet) add(id uint64) {
	if _, ok := r.set[id]; ok {
		return
	}
	if len(r.ring) < r.capacity {
		r.ring = append(r.ring, id)
	} else {
		delete(r.set, r.ring[r.next])
		r.ring[r.next] = id
		r.next = (r.next + 1) % r.capacity
	}
	r.set[id] = struct{}{}
}

// waitForHolderLocked is how a Prepare waits for the Apply holding key k, as
// waitLocked does.
// While it waits, a release of k does not hand k to a queued Apply: the
// Prepare, which waits for no one once it holds its locks, gets a chance at
// it first; the Prepare grants what it held back whenever it leaves without
// the key (see Prepare). Giving up after LockWait is a *ConflictError naming
// k and its holder; on error the timer is stopped and s.mu released.
func (s *Store) waitForHolderLocked(ctx context.Context, k string, holder *lockOwner, timer *time.Timer) (*time.Timer, error) {
	s.mu.prepWaiting[k]++
	timer, err := s.waitLocked(ctx, holder, timer)
	if s.mu.prepWaiting[k]--; s.mu.prepWaiting[k] == 0 {
		delete(s.mu.prepWaiting, k)
	}
	if err != nil {
		s.grantLocked([]string{k})
		if err == errLockWait {
			return timer, &ConflictError{Key: []byte(k), TxnID: holder.txnID}
		}
		return timer, err
	}
	return timer, nil
}
