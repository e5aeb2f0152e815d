package server

import (
	"context"
	"slices"
	"testing"

	"github.com/kvtx/kvtx/txn"
)

// Both decision stores keep what was recorded and not forgotten, across a reopen for the
// Badger one, and Forget drops a batch of decisions in one call.
func TestDecisionStoresKeepRecordsUntilForgotten(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	open := map[string]func(t *testing.T) (txn.DecisionStore, func() txn.DecisionStore){
		"badger": func(t *testing.T) (txn.DecisionStore, func() txn.DecisionStore) {
			s, err := openDecisionStore(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			reopen := func() txn.DecisionStore {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				s2, err := openDecisionStore(dir, nil)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s2.Close() })
				return s2
			}
			return s, reopen
		},
		"mem": func(t *testing.T) (txn.DecisionStore, func() txn.DecisionStore) {
			s := txn.NewMemDecisionStore()
			return s, func() txn.DecisionStore { return s }
		},
	}
	for name, openStore := range open {
		t.Run(name, func(t *testing.T) {
			s, reopen := openStore(t)
			for id := uint64(1); id <= 5; id++ {
				d := txn.Decision{TxnID: id, CommitTS: 100 + id, Participants: []string{"node1", "node2"}}
				if err := s.Record(ctx, d); err != nil {
					t.Fatalf("record %d: %v", id, err)
				}
			}
			if err := s.Forget(1, 3, 5, 42); err != nil { // 42 was never recorded
				t.Fatalf("forget: %v", err)
			}
			if err := s.SaveMark(ctx, 7_000_000); err != nil {
				t.Fatal(err)
			}
			s = reopen()
			got, err := s.Load()
			if err != nil {
				t.Fatal(err)
			}
			slices.SortFunc(got, func(a, b txn.Decision) int { return int(a.TxnID) - int(b.TxnID) })
			if len(got) != 2 || got[0].TxnID != 2 || got[1].TxnID != 4 {
				t.Fatalf("loaded %+v, want decisions 2 and 4", got)
			}
			if got[1].CommitTS != 104 || !slices.Equal(got[1].Participants, []string{"node1", "node2"}) {
				t.Fatalf("decision 4 loaded as %+v", got[1])
			}
			if mark, err := s.LoadMark(); err != nil || mark != 7_000_000 {
				t.Fatalf("mark %d, %v; want 7000000", mark, err)
			}
		})
	}
}
