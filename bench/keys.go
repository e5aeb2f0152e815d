package bench

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"

	"github.com/kvtx/kvtx/txn"
)

// chooser picks an index in [0, n) for a key space of n keys.
type chooser interface {
	next(r *rand.Rand) int
}

// uniform picks every index with the same probability.
type uniform struct{ n int }

func (u uniform) next(r *rand.Rand) int { return r.IntN(u.n) }

// zipfian picks rank i in [0, n) with probability proportional to 1/(i+1)^theta, by the
// method of Gray et al., "Quickly generating billion-record synthetic databases" (SIGMOD 1994),
// as YCSB's ZipfianGenerator does: O(n) set-up (zeta), O(1) per pick. It is immutable and safe
// for concurrent use with one *rand.Rand per goroutine.
type zipfian struct {
	n            int
	theta, alpha float64
	zetan, eta   float64
	half         float64 // 1 + 0.5^theta: the cumulative weight of ranks 0 and 1, over zetan
}

// zeta returns the sum over i in [1, n] of 1/i^theta.
func zeta(n int, theta float64) float64 {
	var s float64
	for i := 1; i <= n; i++ {
		s += 1 / math.Pow(float64(i), theta)
	}
	return s
}

// newZipfian returns the generator of ranks in [0, n), n >= 2, 0 < theta < 1.
func newZipfian(n int, theta float64) *zipfian {
	zetan := zeta(n, theta)
	zeta2 := 1 + math.Pow(0.5, theta)
	return &zipfian{
		n:     n,
		theta: theta,
		alpha: 1 / (1 - theta),
		zetan: zetan,
		eta:   (1 - math.Pow(2/float64(n), 1-theta)) / (1 - zeta2/zetan),
		half:  zeta2,
	}
}

func (z *zipfian) next(r *rand.Rand) int {
	u := r.Float64()
	uz := u * z.zetan
	if uz < 1 {
		return 0
	}
	if uz < z.half {
		return 1
	}
	i := int(float64(z.n) * math.Pow(z.eta*u-z.eta+1, z.alpha))
	return min(max(i, 0), z.n-1)
}

// scrambled maps the ranks of a zipfian onto indexes with a hash (FNV-1a of the rank), as YCSB's
// ScrambledZipfianGenerator does, so that the hottest keys are not neighbours: they land on
// every shard. Distinct ranks may share an index, which merges their weights.
type scrambled struct{ z *zipfian }

func (s scrambled) next(r *rand.Rand) int {
	rank := uint64(s.z.next(r))
	h := uint64(14695981039346656037)
	for i := 0; i < 8; i++ {
		h ^= rank & 0xff
		h *= 1099511628211
		rank >>= 8
	}
	return int(h % uint64(s.z.n))
}

// keySpace is the keys of one workload, prefix + a zero-padded index, with each key's shard and
// the indexes of every shard, so that a transaction can pick keys on chosen shards. It is
// immutable and shared by all clients.
type keySpace struct {
	prefix  string
	n       int
	shardOf []int32
	byShard [][]int32
	all     chooser   // over [0, n)
	inShard []chooser // over [0, len(byShard[s]))
}

// keyDigits is the width of a key's index: keys sort in index order.
const keyDigits = 10

// newKeySpace builds the key space of n keys under prefix, sharded by m.
func newKeySpace(prefix string, n int, m *txn.ShardMap, dist Distribution, theta float64) (*keySpace, error) {
	ks := &keySpace{prefix: prefix, n: n, shardOf: make([]int32, n), byShard: make([][]int32, m.Len())}
	buf := make([]byte, 0, len(prefix)+keyDigits)
	for i := 0; i < n; i++ {
		s := m.Shard(ks.appendKey(buf[:0], i))
		ks.shardOf[i] = int32(s)
		ks.byShard[s] = append(ks.byShard[s], int32(i))
	}
	for s, idx := range ks.byShard {
		if len(idx) < 2 {
			return nil, fmt.Errorf("bench: %d keys leave shard %s with %d keys: use more keys", n, m.Names()[s], len(idx))
		}
	}
	ks.all = newChooser(n, dist, theta)
	ks.inShard = make([]chooser, len(ks.byShard))
	for s, idx := range ks.byShard {
		ks.inShard[s] = newChooser(len(idx), dist, theta)
	}
	return ks, nil
}

func newChooser(n int, dist Distribution, theta float64) chooser {
	if dist == Zipfian {
		return scrambled{newZipfian(n, theta)}
	}
	return uniform{n}
}

// appendKey appends key i to b.
func (ks *keySpace) appendKey(b []byte, i int) []byte {
	b = append(b, ks.prefix...)
	var d [20]byte
	digits := strconv.AppendUint(d[:0], uint64(i), 10)
	for j := len(digits); j < keyDigits; j++ {
		b = append(b, '0')
	}
	return append(b, digits...)
}

// key returns key i in a new slice.
func (ks *keySpace) key(i int) []byte {
	return ks.appendKey(make([]byte, 0, len(ks.prefix)+keyDigits), i)
}

// pick returns one key index.
func (ks *keySpace) pick(r *rand.Rand) int { return ks.all.next(r) }

// otherKeys is how many of k keys after the first go to other shards at fraction cross.
func otherKeys(k int, cross float64, shards int) int {
	if shards < 2 {
		return 0
	}
	return int(math.Round(cross * float64(k-1)))
}

// pickTxn appends k distinct key indexes to out: the first from the whole space, then
// round(cross*(k-1)) of the others on the other shards in turn, the rest on the first key's
// shard. Requires k <= the size of every shard.
func (ks *keySpace) pickTxn(r *rand.Rand, k int, cross float64, out []int) []int {
	out = out[:0]
	first := ks.pick(r)
	out = append(out, first)
	s0 := int(ks.shardOf[first])
	S := len(ks.byShard)
	nOther := otherKeys(k, cross, S)
	for j := 1; j < k; j++ {
		s := s0
		if j <= nOther {
			s = (s0 + 1 + (j-1)%(S-1)) % S
		}
		out = append(out, ks.pickDistinct(r, s, out))
	}
	return out
}

// pickDistinct picks a key of shard s that is not in taken.
func (ks *keySpace) pickDistinct(r *rand.Rand, s int, taken []int) int {
	idx := ks.byShard[s]
	for try := 0; try < 64; try++ {
		i := int(idx[ks.inShard[s].next(r)])
		if !containsInt(taken, i) {
			return i
		}
	}
	// A very skewed distribution keeps returning taken keys: take the next free one.
	start := r.IntN(len(idx))
	for j := range idx {
		i := int(idx[(start+j)%len(idx)])
		if !containsInt(taken, i) {
			return i
		}
	}
	panic("bench: shard has fewer keys than a transaction needs") // Validate prevents this
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
