package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/kvtx/kvtx/kv"
	"github.com/kvtx/kvtx/txn"
)

var (
	markKey        = []byte("m/oracle")
	decisionPrefix = []byte("d/")
)

// badgerDecisionStore is the master's txn.DecisionStore on a Badger DB. Concurrent Records
// share fsyncs through a kv.GroupSyncer.
type badgerDecisionStore struct {
	db     *badger.DB
	syncer *kv.GroupSyncer
}

var _ txn.DecisionStore = (*badgerDecisionStore)(nil)

// openDecisionStore opens (or creates) the master's Badger DB in dir. observe, if not nil, gets
// the duration of every fsync round.
func openDecisionStore(dir string, observe func(time.Duration)) (*badgerDecisionStore, error) {
	db, syncer, err := kv.OpenSyncedBadger(dir, false, observe)
	if err != nil {
		return nil, fmt.Errorf("server: open decision log: %w", err)
	}
	return &badgerDecisionStore{db: db, syncer: syncer}, nil
}

// Close closes the DB.
func (s *badgerDecisionStore) Close() error {
	return kv.CloseSyncedBadger(s.db, s.syncer)
}

// LoadMark implements txn.MarkStore.
func (s *badgerDecisionStore) LoadMark() (uint64, error) {
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
				return fmt.Errorf("server: oracle mark has %d bytes, want 8", len(v))
			}
			mark = binary.BigEndian.Uint64(v)
			return nil
		})
	})
	return mark, err
}

// SaveMark implements txn.MarkStore.
func (s *badgerDecisionStore) SaveMark(ctx context.Context, mark uint64) error {
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

// Record implements txn.DecisionStore.
func (s *badgerDecisionStore) Record(ctx context.Context, d txn.Decision) error {
	val := binary.BigEndian.AppendUint64(nil, d.CommitTS)
	val = append(val, strings.Join(d.Participants, "\x00")...)
	if err := s.db.Update(func(tx *badger.Txn) error {
		return tx.Set(decisionKey(d.TxnID), val)
	}); err != nil {
		return fmt.Errorf("server: write decision %d: %w", d.TxnID, err)
	}
	if err := s.syncer.Sync(ctx); err != nil {
		return fmt.Errorf("server: sync decision %d: %w", d.TxnID, err)
	}
	return nil
}

// Forget implements txn.DecisionStore. A batch too big for one Badger transaction is split.
func (s *badgerDecisionStore) Forget(txnIDs ...uint64) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, id := range txnIDs {
		if err := wb.Delete(decisionKey(id)); err != nil {
			return fmt.Errorf("server: forget decision %d: %w", id, err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("server: forget %d decisions: %w", len(txnIDs), err)
	}
	return nil
}

// Load implements txn.DecisionStore.
func (s *badgerDecisionStore) Load() ([]txn.Decision, error) {
	var out []txn.Decision
	err := s.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: decisionPrefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			key := it.Item().Key()
			if len(key) != len(decisionPrefix)+8 {
				return fmt.Errorf("server: bad decision key %x", key)
			}
			d := txn.Decision{TxnID: binary.BigEndian.Uint64(key[len(decisionPrefix):])}
			err := it.Item().Value(func(v []byte) error {
				if len(v) < 8 {
					return fmt.Errorf("server: decision %d: record has %d bytes", d.TxnID, len(v))
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
