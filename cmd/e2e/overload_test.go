package e2e

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvtx/kvtx/cmd/internal/cluster"
	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/client"
)

// overloadReaders is more readers of one key than a node serves at once on one connection
// (wire.ServerConfig.MaxInFlight, 256): the master forwards them all over its one connection
// to the key's node.
const overloadReaders = 400

// TestHotKeyReadersDoNotHoldUpTheCommitThatFreesTheKey runs 400 concurrent readers of one key
// while cross-shard transactions write it again and again, under each commit protocol. Every
// read that meets a prepared transaction's lock waits for its commit; the commit must reach
// the node although the waiting reads fill every request slot their connection has, so no read
// gives up after lock_wait ("key locked by transaction T") or the request timeout, and every
// transaction ends committed or aborted with a reason, never unknown.
func TestHotKeyReadersDoNotHoldUpTheCommitThatFreesTheKey(t *testing.T) {
	for _, protocol := range []string{txn.ProtocolClassic, txn.ProtocolParallel} {
		t.Run(protocol, func(t *testing.T) {
			// in_doubt above lock_wait: a node asking about a transaction it holds prepared must
			// not be what frees the readers. lock_wait and the request timeout are generous, so
			// that a read fails only when the commit cannot reach the node at all (the bug this
			// test catches: then every read waits out lock_wait), never because a loaded
			// machine's fsync or scheduler took a second or two (CI once saw reads give up
			// after the 2 s request timeout of the short timeouts with the fix in place).
			timeouts := cluster.ShortTimeouts()
			timeouts.LockWait, timeouts.Request, timeouts.InDoubt = 6*time.Second, 8*time.Second, 9*time.Second
			c := prepare(t, cluster.Config{Nodes: 2, CommitProtocol: protocol, FaultProxies: true, Timeouts: timeouts})
			c.startAll()
			keys := c.keysOnEveryShard("hot")
			hot := []byte(keys[0])
			writer := c.client()
			if _, err := writer.Put(stepCtx(t), hot, []byte("v0")); err != nil {
				t.Fatal(err)
			}
			// The other participant votes slowly (well within the prepare timeout), so that each
			// transaction holds the hot key prepared long enough for every reader to queue on it.
			other := c.Config().ShardMap().Names()[1]
			c.Proxy(cluster.MasterToNode(other)).SetMode(cluster.Delay, 250*time.Millisecond)

			readers := make([]*client.Client, 8) // the master serves each client connection alike
			for i := range readers {
				readers[i] = c.client()
			}
			var stop atomic.Bool
			var reads atomic.Int64
			var mu sync.Mutex
			readErrs := map[string]int{} // reason: count
			firstErr := map[string]string{}
			var wg sync.WaitGroup
			for i := range overloadReaders {
				wg.Add(1)
				go func() {
					defer wg.Done()
					cl := readers[i%len(readers)]
					for !stop.Load() {
						_, err := cl.Get(context.Background(), hot)
						if err == nil {
							reads.Add(1)
							continue
						}
						reason := err.Error()
						var ce *client.Error
						if errors.As(err, &ce) {
							reason = ce.Reason()
						}
						mu.Lock()
						readErrs[reason]++
						if firstErr[reason] == "" {
							firstErr[reason] = err.Error()
						}
						mu.Unlock()
					}
				}()
			}

			// Two writers, so that a transaction also meets its predecessor's locks.
			const writers, perWriter = 2, 8
			var committed atomic.Int64
			aborted := map[string]int{}
			var txnFailures []string
			var wwg sync.WaitGroup
			for w := range writers {
				wwg.Add(1)
				go func() {
					defer wwg.Done()
					for i := range perWriter {
						v := []byte(fmt.Sprintf("w%d-%d", w, i))
						_, err := writer.Txn(context.Background(), nil, client.Put(hot, v), client.Put([]byte(keys[1]), v))
						var ce *client.Error
						mu.Lock()
						switch {
						case err == nil:
							committed.Add(1)
						case errors.Is(err, client.ErrAborted) && errors.As(err, &ce) && ce.Reason() != "":
							aborted[ce.Reason()]++
						default:
							txnFailures = append(txnFailures, err.Error())
						}
						mu.Unlock()
					}
				}()
			}
			wwg.Wait()
			stop.Store(true)
			wg.Wait()
			c.HealNetwork()

			t.Logf("%d reads, %d commits, aborts by reason %v", reads.Load(), committed.Load(), aborted)
			if len(readErrs) > 0 {
				var b strings.Builder
				reasons := make([]string, 0, len(readErrs))
				for r := range readErrs {
					reasons = append(reasons, r)
				}
				sort.Strings(reasons)
				for _, r := range reasons {
					fmt.Fprintf(&b, "\n  %d × %s, e.g. %s", readErrs[r], r, firstErr[r])
				}
				t.Errorf("reads of the hot key failed while transactions wrote it:%s", b.String())
			}
			if len(txnFailures) > 0 {
				t.Errorf("%d transactions ended neither committed nor aborted with a reason, e.g. %s", len(txnFailures), txnFailures[0])
			}
			if committed.Load() == 0 {
				t.Errorf("no transaction committed: the readers never met a lock to wait for")
			}
			c.waitQuiet(writer, 10*time.Second)
		})
	}
}
