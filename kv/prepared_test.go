package kv

import (
	"bytes"
	"context"
	"fmt"
	"testing"
)

// valuesInMemory is the size of the values s's prepared transactions hold in memory, counted
// from their writes (not from heldValueBytes), and how many keep none (spilled).
func valuesInMemory(s *Store) (bytes int64, spilled int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.mu.prepared {
		if p.spilled {
			spilled++
		}
		for _, op := range p.ops {
			bytes += int64(len(op.Value))
		}
	}
	return bytes, spilled
}

// Prepared transactions of large values past maxHeldValueBytes keep only their keys, also
// once recovered, and their commits still write every value they prepared; aborts of them
// write none.
func TestPreparedTransactionsKeepAtMostTheirBudgetOfValuesInMemory(t *testing.T) {
	const n, size = 24, 1 << 20 // 24 MiB of values prepared, three times the budget
	value := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i)}, size) }
	for _, mode := range append([]string{"running"}, reopenModes...) {
		t.Run(mode, func(t *testing.T) {
			opts := testOpts(t, t.TempDir())
			s := openTest(t, opts)
			ctx := context.Background()
			for i := range n {
				id := uint64(100 + i)
				mustPrepare(t, s, id, id, nil, Op{Kind: OpPut, Key: fmt.Appendf(nil, "k%02d", i), Value: value(i)}, put(fmt.Sprintf("small%02d", i), "v"))
			}
			if mode != "running" {
				s = reopen(t, s, opts, mode)
			}
			held, spilled := valuesInMemory(s)
			if held > maxHeldValueBytes || spilled == 0 {
				t.Fatalf("%d prepared transactions of %d bytes each hold %d bytes of values in memory (%d spilled), want at most %d",
					n, size, held, spilled, maxHeldValueBytes)
			}
			if st := s.Stats(); st.Prepared != n {
				t.Fatalf("%d prepared, want %d", st.Prepared, n)
			}
			for i := range n {
				id := uint64(100 + i)
				if i%4 == 3 {
					if err := s.Abort(ctx, id); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if err := s.Commit(ctx, id, 1000+id); err != nil {
					t.Fatalf("commit %d: %v", id, err)
				}
			}
			for i := range n {
				id := uint64(100 + i)
				v := mustGet(t, s, 2000, fmt.Sprintf("k%02d", i))
				small := mustGet(t, s, 2000, fmt.Sprintf("small%02d", i))
				if i%4 == 3 {
					wantMissing(t, v)
					wantMissing(t, small)
					continue
				}
				if !v.Found || v.Version != 1000+id || !bytes.Equal(v.Value, value(i)) {
					t.Fatalf("k%02d after its commit at %d: found %v, version %d, %d bytes, want its prepared value", i, 1000+id, v.Found, v.Version, len(v.Value))
				}
				wantValue(t, small, "v", 1000+id)
			}
			s.mu.Lock()
			left := s.mu.heldValueBytes
			s.mu.Unlock()
			if left != 0 {
				t.Fatalf("heldValueBytes = %d with nothing prepared", left)
			}
		})
	}
}
