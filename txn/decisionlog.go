package txn

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/kvtx/kvtx/kv"
)

// Decision is the master's durable record that a transaction committed. Presumed abort: an
// aborted transaction has no record, and a transaction with none is aborted.
type Decision struct {
	TxnID        uint64
	CommitTS     uint64
	Participants []string
}

// DecisionStore keeps decision records and the oracle's mark. Record must be durable when it
// returns; Forget need not be (a forgotten decision that comes back is re-driven harmlessly,
// since Commit is idempotent).
type DecisionStore interface {
	MarkStore
	Record(ctx context.Context, d Decision) error
	// Forget drops the decisions of txnIDs, all in one write.
	Forget(txnIDs ...uint64) error
	Load() ([]Decision, error)
}

var (
	markKey        = []byte("m/oracle")
	decisionPrefix = []byte("d/")
)

// BadgerDecisionStore is the master's DecisionStore on a Badger DB. Concurrent Records share
// fsyncs through a kv.GroupSyncer.
type BadgerDecisionStore struct {
	db     *badger.DB
	syncer *kv.GroupSyncer
}

var _ DecisionStore = (*BadgerDecisionStore)(nil)

// OpenDecisionStore opens (or creates) the master's Badger DB in dir. observe, if not nil, gets
// the duration of every fsync round.
func OpenDecisionStore(dir string, observe func(time.Duration)) (*BadgerDecisionStore, error) {
	db, syncer, err := kv.OpenSyncedBadger(dir, false, observe)
	if err != nil {
		return nil, fmt.Errorf("txn: open decision log: %w", err)
	}
	return &BadgerDecisionStore{db: db, syncer: syncer}, nil
}

// Close closes the DB.
func (s *BadgerDecisionStore) Close() error {
	return kv.CloseSyncedBadger(s.db, s.syncer)
}

// LoadMark implements MarkStore.
func (s *BadgerDecisionStore) LoadMark() (uint64, error) {
	var mark uint64
	err := s.db.View(func(tx *badger.Txn) error {
		item, err := tx.Get(markKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("txn: oracle mark has %d bytes, want 8", len(v))
			}
			mark = binary.BigEndian.Uint64(v)
			return nil
		})
	})
	return mark, err
}

// SaveMark implements MarkStore.
func (s *BadgerDecisionStore) SaveMark(ctx context.Context, mark uint64) error {
	if err := s.db.Update(func(tx *badger.Txn) error {
		return tx.Set(markKey, binary.BigEndian.AppendUint64(nil, mark))
	}); err != nil {
		return err
	}
	return s.syncer.Sync(ctx)
}

func decisionKey(txnID uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), decisionPrefix...), txnID)
}

// Record implements DecisionStore.
func (s *BadgerDecisionStore) Record(ctx context.Context, d Decision) error {
	val := binary.BigEndian.AppendUint64(nil, d.CommitTS)
	val = append(val, strings.Join(d.Participants, "\x00")...)
	if err := s.db.Update(func(tx *badger.Txn) error {
		return tx.Set(decisionKey(d.TxnID), val)
	}); err != nil {
		return fmt.Errorf("txn: write decision %d: %w", d.TxnID, err)
	}
	if err := s.syncer.Sync(ctx); err != nil {
		return fmt.Errorf("txn: sync decision %d: %w", d.TxnID, err)
	}
	return nil
}

// Forget implements DecisionStore. A batch too big for one Badger transaction is split.
func (s *BadgerDecisionStore) Forget(txnIDs ...uint64) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, id := range txnIDs {
		if err := wb.Delete(decisionKey(id)); err != nil {
			return fmt.Errorf("txn: forget decision %d: %w", id, err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("txn: forget %d decisions: %w", len(txnIDs), err)
	}
	return nil
}

// Load implements DecisionStore.
func (s *BadgerDecisionStore) Load() ([]Decision, error) {
	var out []Decision
	err := s.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: decisionPrefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			key := it.Item().Key()
			if len(key) != len(decisionPrefix)+8 {
				return fmt.Errorf("txn: bad decision key %x", key)
			}
			d := Decision{TxnID: binary.BigEndian.Uint64(key[len(decisionPrefix):])}
			err := it.Item().Value(func(v []byte) error {
				if len(v) < 8 {
					return fmt.Errorf("txn: decision %d: record has %d bytes", d.TxnID, len(v))
				}
				d.CommitTS = binary.BigEndian.Uint64(v)
				if len(v) > 8 {
					d.Participants = strings.Split(string(v[8:]), "\x00")
				}
				return nil
			})
			if err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

// MemDecisionStore is an in-memory DecisionStore for tests. Everything it holds survives a
// simulated master restart (it stands for the disk); it is safe for concurrent use.
type MemDecisionStore struct {
	mu        sync.Mutex
	mark      uint64
	decisions map[uint64]Decision
	// FailRecord, when set, makes Record fail with this error (a broken disk).
	FailRecord error
}

var _ DecisionStore = (*MemDecisionStore)(nil)

// NewMemDecisionStore returns an empty store.
func NewMemDecisionStore() *MemDecisionStore {
	return &MemDecisionStore{decisions: map[uint64]Decision{}}
}

// LoadMark implements MarkStore.
func (s *MemDecisionStore) LoadMark() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mark, nil
}

// SaveMark implements MarkStore.
func (s *MemDecisionStore) SaveMark(_ context.Context, mark uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mark = mark
	return nil
}

// Record implements DecisionStore.
func (s *MemDecisionStore) Record(_ context.Context, d Decision) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.FailRecord != nil {
		return s.FailRecord
	}
	d.Participants = append([]string(nil), d.Participants...)
	s.decisions[d.TxnID] = d
	return nil
}

// Forget implements DecisionStore.
func (s *MemDecisionStore) Forget(txnIDs ...uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range txnIDs {
		delete(s.decisions, id)
	}
	return nil
}

// Load implements DecisionStore.
func (s *MemDecisionStore) Load() ([]Decision, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Decision, 0, len(s.decisions))
	for _, d := range s.decisions {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TxnID < out[j].TxnID })
	return out, nil
}
