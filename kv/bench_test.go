package kv

import (
	"context"
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"
)

// benchStore opens a store whose sync rounds are counted.
func benchStore(b *testing.B) (*Store, *atomic.Int64) {
	b.Helper()
	var rounds atomic.Int64
	opts := testOpts(b, b.TempDir())
	opts.OnSync = func(time.Duration) { rounds.Add(1) }
	return openTest(b, opts), &rounds
}

func reportApply(b *testing.B, rounds *atomic.Int64, start time.Time) {
	elapsed := time.Since(start)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "txn/s")
	b.ReportMetric(float64(rounds.Load())/float64(b.N), "syncs/txn")
}

// BenchmarkApplySerial measures one writer doing one-phase puts of a
// 100-byte value: one fsync round per transaction.
func BenchmarkApplySerial(b *testing.B) {
	s, rounds := benchStore(b)
	val := make([]byte, 100)
	key := make([]byte, 12)
	ctx := context.Background()
	b.ReportAllocs()
	rounds.Store(0)
	start := time.Now()
	i := uint64(0)
	for b.Loop() {
		i++
		binary.BigEndian.PutUint64(key[4:], i%10000)
		if _, err := s.Apply(ctx, i, 0, nil, []Op{{Kind: OpPut, Key: key, Value: val}}); err != nil {
			b.Fatal(err)
		}
	}
	reportApply(b, rounds, start)
}

// BenchmarkApplyParallel measures 64 concurrent writers doing one-phase
// puts of 100-byte values on distinct keys, sharing group-sync rounds.
func BenchmarkApplyParallel(b *testing.B) {
	s, rounds := benchStore(b)
	ctx := context.Background()
	var ids atomic.Uint64
	b.ReportAllocs()
	b.SetParallelism(32) // 32 × GOMAXPROCS goroutines
	rounds.Store(0)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		val := make([]byte, 100)
		key := make([]byte, 16)
		binary.BigEndian.PutUint64(key, ids.Add(1)<<32)
		for pb.Next() {
			id := ids.Add(1)
			binary.BigEndian.PutUint64(key[8:], id%10000)
			if _, err := s.Apply(ctx, id, 0, nil, []Op{{Kind: OpPut, Key: key, Value: val}}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportApply(b, rounds, start)
}

// BenchmarkGet measures point reads of existing keys at a fixed timestamp.
func BenchmarkGet(b *testing.B) {
	s, _ := benchStore(b)
	ctx := context.Background()
	val := make([]byte, 100)
	var ops []Op
	for i := range 1000 {
		ops = append(ops, Op{Kind: OpPut, Key: binary.BigEndian.AppendUint64(nil, uint64(i)), Value: val})
	}
	cts := mustApply(b, s, 1, nil, ops...)
	keys := [][]byte{nil}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		keys[0] = ops[i%1000].Key
		i++
		if _, err := s.Get(ctx, keys, cts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPrepareCommitParallel measures 64 concurrent participants each
// running Prepare then Commit (two sync rounds, shared with the others) on
// its own keys: the per-shard cost of a two-phase transaction.
func BenchmarkPrepareCommitParallel(b *testing.B) {
	s, rounds := benchStore(b)
	ctx := context.Background()
	var ids atomic.Uint64
	b.ReportAllocs()
	b.SetParallelism(32)
	rounds.Store(0)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		val := make([]byte, 100)
		key := make([]byte, 16)
		binary.BigEndian.PutUint64(key, ids.Add(1)<<32)
		for pb.Next() {
			id := ids.Add(1)
			binary.BigEndian.PutUint64(key[8:], id%10000)
			rec := PrepareRecord{TxnID: id, StartTS: id, Ops: []Op{{Kind: OpPut, Key: key, Value: val}}}
			min, err := s.Prepare(ctx, rec, nil)
			if err != nil {
				b.Error(err)
				return
			}
			if err := s.Commit(ctx, id, min); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportApply(b, rounds, start)
}
