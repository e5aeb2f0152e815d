package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvtx/kvtx/bench"
	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/client"
)

// memoryTestEnv enables TestNodeMemoryStaysUnderItsBudgetPlus72MiB, which is not part of make
// test: it writes about 3 GiB through a cluster, for about a minute and a half.
const memoryTestEnv = "KVTX_MEMORY_TEST"

// memoryHeadroom is what a node may hold beyond its storage budget in that test: 72 MiB, so
// that at the default budget the bound is the 200 MiB that issue #11 asks for.
const memoryHeadroom = 72 << 20

// Under puts of values up to 900 KiB and cross-shard transactions of values up to 64 KiB, from
// 16 and 64 clients, a node's anonymous memory (RssAnon) stays under its storage budget plus
// memoryHeadroom, at the default budget: Badger's memtables, table builders and caches and the
// requests in flight do not grow with the value size or the data written. (Transactions of
// 900 KiB values can take a node past it once the store holds a few GiB, 245-349 MiB, through
// Badger's compaction of level 0 into itself, and so, now and then, can the 900 KiB puts here:
// 206 MiB in one of two runs on 2026-12-03; txn/README.md, Memory.)
func TestNodeMemoryStaysUnderItsBudgetPlus72MiB(t *testing.T) {
	if os.Getenv(memoryTestEnv) == "" {
		t.Skipf("set %s=1 to run (minutes)", memoryTestEnv)
	}
	bound := txn.DefaultConfig().Storage.MemoryBytes + memoryHeadroom
	c := newCluster(t, 2)
	cl := c.client()
	nodes := []string{"node1", "node2"}
	var peak [2]atomic.Int64
	stop := make(chan struct{})
	var sampling sync.WaitGroup
	sampling.Add(1)
	go func() { // every 100ms, each node's RssAnon
		defer sampling.Done()
		for {
			for i, n := range nodes {
				if _, anon, err := bench.ResidentMemory(c.PID(n)); err == nil && anon > peak[i].Load() {
					peak[i].Store(anon)
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	for _, phase := range []struct {
		txn              bool
		valueSize, ops   int
		clients, keySets int
	}{
		{false, 2000, 40000, 16, 100},
		{false, 64 << 10, 8000, 16, 100},
		{false, 64 << 10, 8000, 64, 100},
		{true, 64 << 10, 4000, 64, 100},
		{false, 900 << 10, 1500, 64, 100},
	} {
		name := fmt.Sprintf("put %d B, %d clients", phase.valueSize, phase.clients)
		if phase.txn {
			name = fmt.Sprintf("2-key txn %d B, %d clients", phase.valueSize, phase.clients)
		}
		for i := range peak {
			peak[i].Store(0)
		}
		writeLoad(t, cl, name, phase.txn, phase.valueSize, phase.ops, phase.clients, phase.keySets)
		for i, n := range nodes {
			got := peak[i].Load()
			t.Logf("%s: %s peak RssAnon %d MiB", name, n, got>>20)
			if got >= bound {
				t.Errorf("%s: %s reached %d MiB of anonymous memory, over %d MiB", name, n, got>>20, bound>>20)
			}
		}
	}
	close(stop)
	sampling.Wait()
}

// writeLoad makes ops successful writes of valueSize-byte values over keys keys from clients
// goroutines: puts, or transactions of two keys on both shards. Conflicts are retried.
func writeLoad(t *testing.T, cl *client.Client, name string, isTxn bool, valueSize, ops, clients, keys int) {
	t.Helper()
	var done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	value := bytes.Repeat([]byte{'v'}, valueSize)
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; done.Load() < int64(ops); i += clients {
				k := []byte(fmt.Sprintf("mem/%d", i%keys))
				var err error
				if isTxn {
					_, err = cl.Txn(context.Background(), nil, client.Put(k, value), client.Put([]byte(fmt.Sprintf("mem/%d/b", i%keys)), value))
				} else {
					_, err = cl.Put(context.Background(), k, value)
				}
				var ce *client.Error
				switch {
				case err == nil:
					done.Add(1)
				case errors.As(err, &ce) && ce.Retryable():
				default:
					errs <- fmt.Errorf("%s: %w", name, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
