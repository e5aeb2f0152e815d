package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/client"
)

// OpTimeout bounds every workload operation: longer than prepare + commit_wait of the short
// timeouts, so that a slow commit is not mistaken for a lost one too often.
const OpTimeout = 5 * time.Second

// Workload is one kind of client traffic with its own checker.
type Workload interface {
	// Name is "bank", "append" or "register".
	Name() string
	// Setup writes the initial data; it runs before any fault.
	Setup(ctx context.Context, cl *client.Client) error
	// Step runs one operation of client id and records it. It returns the operation's error
	// (or that of the read before it), so that the caller can back off while the master is
	// unreachable.
	Step(ctx context.Context, cl *client.Client, rng *rand.Rand, id int, rec *Recorder) error
	// Check reads the final state through cl (the cluster is healed and quiet) and checks the
	// history; it adds to r's invariants.
	Check(ctx context.Context, cl *client.Client, ops []Op, r *Report) error
}

// keyspace finds keys on given shards.
type keyspace struct{ sm *txn.ShardMap }

// onShard returns the first key prefix+N (N = 0, 1, ...) that lives on shard s, skipping the
// ones in used.
func (ks keyspace) onShard(prefix string, s int, used map[string]bool) string {
	for i := 0; ; i++ {
		k := prefix + strconv.Itoa(i)
		if ks.sm.Shard([]byte(k)) == s && !used[k] {
			if used != nil {
				used[k] = true
			}
			return k
		}
	}
}

// marker names the marker key of operation id on shard s.
func (ks keyspace) marker(id int64, s int) string {
	return ks.onShard(fmt.Sprintf("mark/%d/", id), s, nil)
}

// markers names the marker keys of operation id: one on each shard of shards (duplicates
// once), in order of first appearance.
func (ks keyspace) markers(id int64, shards []int) []string {
	var out []string
	seen := map[int]bool{}
	for _, s := range shards {
		if !seen[s] {
			seen[s] = true
			out = append(out, ks.marker(id, s))
		}
	}
	return out
}

// markerPuts are the writes that set every marker of op.
func markerPuts(op *Op) []client.Op {
	var out []client.Op
	for _, m := range op.Markers {
		out = append(out, client.Put([]byte(m), []byte("1")))
	}
	return out
}

func (ks keyspace) shards(keys []string) []int {
	out := make([]int, len(keys))
	for i, k := range keys {
		out[i] = ks.sm.Shard([]byte(k))
	}
	return out
}

func bkeys(keys []string) [][]byte {
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = []byte(k)
	}
	return out
}

func opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, OpTimeout)
}

// retrySetup runs f until it succeeds, up to 20 times.
func retrySetup(ctx context.Context, what string, f func(ctx context.Context) error) error {
	var err error
	for i := 0; i < 20; i++ {
		cctx, cancel := opCtx(ctx)
		err = f(cctx)
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("chaos: %s setup: %w", what, err)
}

// ---------------------------------------------------------------------------------------------
// bank

// Bank moves money between accounts spread over every shard with conditional transactions
// (versions read by Snapshot, then Txn with IfVersion compares), reads all accounts in one
// snapshot, and scans them (every key under the accounts' prefix, in pages at one version).
// The total never changes and no balance goes negative, in every snapshot and every scan.
type Bank struct {
	ks       keyspace
	accounts []string
	initial  int
}

// NewBank spreads n accounts (at least one per shard) with initial balance each.
func NewBank(sm *txn.ShardMap, n, initial int) *Bank {
	ks := keyspace{sm}
	n = max(n, sm.Len())
	used := map[string]bool{}
	b := &Bank{ks: ks, initial: initial}
	for i := 0; i < n; i++ {
		b.accounts = append(b.accounts, ks.onShard(bankPrefix, i%sm.Len(), used))
	}
	return b
}

// Name returns "bank".
func (b *Bank) Name() string { return "bank" }

// Total is the sum the accounts must always hold.
func (b *Bank) Total() int { return b.initial * len(b.accounts) }

// Setup gives every account its initial balance in one transaction.
func (b *Bank) Setup(ctx context.Context, cl *client.Client) error {
	return retrySetup(ctx, "bank", func(ctx context.Context) error {
		var ops []client.Op
		for _, a := range b.accounts {
			ops = append(ops, client.Put([]byte(a), []byte(strconv.Itoa(b.initial))))
		}
		_, err := cl.Txn(ctx, nil, ops...)
		return err
	})
}

// bankPrefix starts the name of every account, and of no other key.
const bankPrefix = "bank/acct"

// Step transfers between two random accounts (3 in 4), reads every account in one snapshot
// (1 in 8) or scans them (1 in 8).
func (b *Bank) Step(ctx context.Context, cl *client.Client, rng *rand.Rand, id int, rec *Recorder) error {
	switch rng.IntN(8) {
	case 0:
		cctx, cancel := opCtx(ctx)
		defer cancel()
		return scan(cctx, cl, rec, &Op{Workload: "bank", Client: id}, bankPrefix, prefixEnd(bankPrefix))
	case 1:
		op := rec.Invoke(&Op{Workload: "bank", Client: id, Kind: "read", Keys: b.accounts, Shards: b.ks.shards(b.accounts)})
		cctx, cancel := opCtx(ctx)
		kvs, _, err := cl.Snapshot(cctx, bkeys(b.accounts)...)
		cancel()
		if err == nil {
			op.Out, op.Found = values(kvs)
		}
		rec.Complete(op, err)
		return err
	}
	i := rng.IntN(len(b.accounts))
	j := rng.IntN(len(b.accounts) - 1)
	if j >= i {
		j++
	}
	from, to := b.accounts[i], b.accounts[j]
	amt := 1 + rng.IntN(10)
	cctx, cancel := opCtx(ctx)
	defer cancel()
	kvs, _, err := cl.Snapshot(cctx, []byte(from), []byte(to))
	if err != nil {
		return err
	}
	fb, _ := strconv.Atoi(string(kvs[0].Value))
	tb, _ := strconv.Atoi(string(kvs[1].Value))
	if fb < amt {
		return nil // transfers only when the source has funds
	}
	keys := []string{from, to}
	op := &Op{Workload: "bank", Client: id, Kind: "transfer", Write: true, Keys: keys, Shards: b.ks.shards(keys),
		In: []string{strconv.Itoa(fb - amt), strconv.Itoa(tb + amt)}}
	rec.Invoke(op)
	op.Markers = b.ks.markers(op.ID, op.Shards)
	_, err = cl.Txn(cctx,
		[]client.Compare{client.IfVersion([]byte(from), kvs[0].Version), client.IfVersion([]byte(to), kvs[1].Version)},
		append([]client.Op{client.Put([]byte(from), []byte(op.In[0])), client.Put([]byte(to), []byte(op.In[1]))}, markerPuts(op)...)...)
	rec.Complete(op, err)
	return err
}

func values(kvs []client.KeyValue) ([]string, []bool) {
	out := make([]string, len(kvs))
	found := make([]bool, len(kvs))
	for i, kv := range kvs {
		out[i], found[i] = string(kv.Value), kv.Found
	}
	return out, found
}

// checkBalances returns what is wrong with one snapshot of every account.
func (b *Bank) checkBalances(vals []string, found []bool) (total bool, negative bool, detail string) {
	sum := 0
	for i, v := range vals {
		n, err := strconv.Atoi(v)
		if !found[i] || err != nil {
			return true, false, fmt.Sprintf("account %s unreadable: %q found=%v", b.accounts[i], v, found[i])
		}
		if n < 0 {
			negative = true
			detail = fmt.Sprintf("account %s is %d", b.accounts[i], n)
		}
		sum += n
	}
	if sum != b.Total() {
		return true, negative, fmt.Sprintf("total %d, want %d (%v)", sum, b.Total(), vals)
	}
	return false, negative, detail
}

// Invariants of the bank's scans.
const (
	invBankScanTotal    = "bank: every scan of the accounts sums to the total"
	invBankScanNegative = "bank: no scan sees a negative balance"
)

// checkHistory checks every snapshot read and every scan of the run.
func (b *Bank) checkHistory(ops []Op, r *Report) {
	r.invariant("bank: total never changes")
	r.invariant("bank: no negative balance")
	r.invariant(invBankScanTotal)
	r.invariant(invBankScanNegative)
	r.invariant(invScanKeys)
	for _, op := range ops {
		if op.Workload != "bank" || op.Status != OK {
			continue
		}
		switch op.Kind {
		case "read":
			if bad, neg, d := b.checkBalances(op.Out, op.Found); bad || neg {
				if bad {
					r.violate("bank: total never changes", fmt.Sprintf("read %d at %s: %s", op.ID, op.Return.Format(time.TimeOnly), d))
				}
				if neg {
					r.violate("bank: no negative balance", fmt.Sprintf("read %d: %s", op.ID, d))
				}
			}
		case "scan":
			b.checkScan(op, r)
		}
	}
}

// checkScan checks one scan of every account: it returns each account, and no other key, and
// the balances it read sum to the total, none negative.
func (b *Bank) checkScan(op Op, r *Report) {
	if d := checkScanKeys(op.Keys, bankPrefix, prefixEnd(bankPrefix)); d != "" {
		r.violate(invScanKeys, fmt.Sprintf("bank scan %d: %s", op.ID, d))
	}
	index := make(map[string]int, len(b.accounts))
	for i, a := range b.accounts {
		index[a] = i
	}
	vals := make([]string, len(b.accounts))
	found := make([]bool, len(b.accounts))
	for i, k := range op.Keys {
		j, ok := index[k]
		if !ok {
			r.violate(invBankScanTotal, fmt.Sprintf("scan %d read %s=%q, which is no account", op.ID, k, op.Out[i]))
			continue
		}
		vals[j], found[j] = op.Out[i], op.Found[i]
	}
	bad, neg, d := b.checkBalances(vals, found)
	if bad {
		r.violate(invBankScanTotal, fmt.Sprintf("scan %d at %s (%d keys): %s", op.ID, op.Return.Format(time.TimeOnly), len(op.Keys), d))
	}
	if neg {
		r.violate(invBankScanNegative, fmt.Sprintf("scan %d: %s", op.ID, d))
	}
}

// Check verifies every snapshot read and scan during the run, and a final snapshot read.
func (b *Bank) Check(ctx context.Context, cl *client.Client, ops []Op, r *Report) error {
	b.checkHistory(ops, r)
	cctx, cancel := opCtx(ctx)
	defer cancel()
	kvs, _, err := cl.Snapshot(cctx, bkeys(b.accounts)...)
	if err != nil {
		return fmt.Errorf("chaos: final bank read: %w", err)
	}
	vals, found := values(kvs)
	bad, neg, d := b.checkBalances(vals, found)
	if bad {
		r.violate("bank: total never changes", "final read: "+d)
	}
	if neg {
		r.violate("bank: no negative balance", "final read: "+d)
	}
	r.Notes = append(r.Notes, fmt.Sprintf("bank final balances: %s", strings.Join(vals, " ")))
	return nil
}
