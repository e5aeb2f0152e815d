package bench

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/kvtx/kvtx/txn"
)

func TestZipfianFrequenciesMatchTheDistribution(t *testing.T) {
	const n, draws, theta = 1000, 1_000_000, 0.99
	z := newZipfian(n, theta)
	r := rand.New(rand.NewPCG(1, 2))
	counts := make([]int, n)
	for i := 0; i < draws; i++ {
		k := z.next(r)
		if k < 0 || k >= n {
			t.Fatalf("rank %d out of [0, %d)", k, n)
		}
		counts[k]++
	}
	// Ranks 0 and 1 are drawn exactly with probabilities 1/zetan and 2^-theta/zetan; the rest
	// follow Gray's approximation, which we check loosely (the head decreases, the tail is thin).
	for rank, want := range []float64{1 / z.zetan, math.Pow(0.5, theta) / z.zetan} {
		got := float64(counts[rank]) / draws
		if math.Abs(got-want)/want > 0.02 {
			t.Errorf("rank %d drawn with frequency %.4f, want %.4f within 2%%", rank, got, want)
		}
	}
	for rank := 1; rank < 10; rank++ {
		if counts[rank] > counts[rank-1] {
			t.Errorf("rank %d drawn %d times, more than rank %d (%d times)", rank, counts[rank], rank-1, counts[rank-1])
		}
	}
	var head, tail int
	for i := 0; i < 10; i++ {
		head += counts[i]
	}
	for i := n / 2; i < n; i++ {
		tail += counts[i]
	}
	// Theory: the first 10 ranks hold 38.2% of the weight at n=1000, the colder half 9.6%.
	if h := float64(head) / draws; h < 0.35 || h > 0.42 {
		t.Errorf("the 10 hottest ranks got %.3f of the draws, want about 0.382", h)
	}
	if tl := float64(tail) / draws; tl < 0.08 || tl > 0.11 {
		t.Errorf("the colder half got %.3f of the draws, want about 0.096", tl)
	}
}

func TestScrambledZipfianSpreadsTheHotKeys(t *testing.T) {
	const n = 10_000
	s := scrambled{newZipfian(n, 0.99)}
	r := rand.New(rand.NewPCG(3, 4))
	counts := map[int]int{}
	for i := 0; i < 200_000; i++ {
		k := s.next(r)
		if k < 0 || k >= n {
			t.Fatalf("index %d out of [0, %d)", k, n)
		}
		counts[k]++
	}
	hottest, most := -1, 0
	for k, c := range counts {
		if c > most {
			hottest, most = k, c
		}
	}
	if hottest == 0 {
		t.Errorf("the hottest key is index 0: the ranks were not scrambled")
	}
	if f := float64(most) / 200_000; f < 0.08 {
		t.Errorf("the hottest key got %.3f of the draws, want about 1/zeta(n) = %.3f", f, 1/s.z.zetan)
	}
}

func TestUniformChooserIsFlat(t *testing.T) {
	const n, draws = 10, 100_000
	u := uniform{n}
	r := rand.New(rand.NewPCG(5, 6))
	counts := make([]int, n)
	for i := 0; i < draws; i++ {
		counts[u.next(r)]++
	}
	for k, c := range counts {
		if math.Abs(float64(c)-draws/n) > 0.05*draws/n {
			t.Errorf("index %d drawn %d times, want %d within 5%%", k, c, draws/n)
		}
	}
}

func TestKeysArePrefixedZeroPaddedIndexes(t *testing.T) {
	ks, err := newKeySpace("key/", 100, defaultShards(), Uniform, 0.99)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(ks.key(42)); got != "key/0000000042" {
		t.Errorf("key 42 = %q, want key/0000000042", got)
	}
	if got := string(ks.appendKey([]byte("x"), 7)); got != "xkey/0000000007" {
		t.Errorf("appendKey = %q", got)
	}
}

func TestKeySpaceAgreesWithTheClusterShardMap(t *testing.T) {
	m := txn.NewShardMap([]string{"a", "b", "c"})
	ks, err := newKeySpace("acct/", 3000, m, Zipfian, 0.99)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for s, idx := range ks.byShard {
		total += len(idx)
		for _, i := range idx {
			if got := m.Shard(ks.key(int(i))); got != s || int(ks.shardOf[i]) != s {
				t.Fatalf("key %d listed on shard %d, owned by shard %d", i, s, got)
			}
		}
	}
	if total != 3000 {
		t.Errorf("shards list %d keys, want 3000", total)
	}
	if _, err := newKeySpace("k/", 2, m, Uniform, 0.99); err == nil {
		t.Errorf("2 keys over 3 shards: want an error about an empty shard")
	}
}

func TestPickTxnPlacesTheRequestedShareOnOtherShards(t *testing.T) {
	m3 := txn.NewShardMap([]string{"a", "b", "c"})
	cases := []struct {
		name      string
		m         *txn.ShardMap
		k         int
		cross     float64
		wantOther int // keys after the first that are on another shard than the first
	}{
		{"default: 2 keys on 2 shards", defaultShards(), 2, 1, 1},
		{"single shard", defaultShards(), 2, 0, 0},
		{"4 keys, two thirds across", defaultShards(), 4, 0.67, 2},
		{"5 keys over 3 shards", m3, 5, 1, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, dist := range []Distribution{Uniform, Zipfian} {
				ks, err := newKeySpace("key/", 1000, tc.m, dist, 0.99)
				if err != nil {
					t.Fatal(err)
				}
				r := rand.New(rand.NewPCG(7, 8))
				var idx []int
				for i := 0; i < 2000; i++ {
					idx = ks.pickTxn(r, tc.k, tc.cross, idx)
					if len(idx) != tc.k {
						t.Fatalf("%d keys, want %d", len(idx), tc.k)
					}
					seen := map[int]bool{}
					other, shards := 0, map[int32]bool{}
					for j, x := range idx {
						if seen[x] {
							t.Fatalf("key %d twice in %v", x, idx)
						}
						seen[x] = true
						shards[ks.shardOf[x]] = true
						if j > 0 && ks.shardOf[x] != ks.shardOf[idx[0]] {
							other++
						}
					}
					if other != tc.wantOther {
						t.Fatalf("%s: %d keys on other shards in %v, want %d", dist, other, idx, tc.wantOther)
					}
					if tc.k == 5 && len(shards) != 3 {
						t.Fatalf("%v spans %d shards, want all 3", idx, len(shards))
					}
				}
			}
		})
	}
}

func TestPickTxnFindsDistinctKeysUnderExtremeSkew(t *testing.T) {
	ks, err := newKeySpace("key/", 8, defaultShards(), Zipfian, 0.999)
	if err != nil {
		t.Fatal(err)
	}
	small := min(len(ks.byShard[0]), len(ks.byShard[1]))
	r := rand.New(rand.NewPCG(9, 10))
	var idx []int
	for i := 0; i < 500; i++ {
		idx = ks.pickTxn(r, small, 0, idx)
		seen := map[int]bool{}
		for _, x := range idx {
			if seen[x] {
				t.Fatalf("key %d twice in %v", x, idx)
			}
			seen[x] = true
		}
	}
}
