package chaos

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/kvtx/kvtx/cmd/internal/cluster"
	"github.com/kvtx/kvtx/wire"
)

// blastTargets names every port of the cluster: "NAME" (protocol) and "NAME/metrics".
func blastTargets(names []string) []string {
	var out []string
	for _, n := range names {
		out = append(out, n, n+"/metrics")
	}
	return out
}

// attack sends one kind of bad input on a fresh connection to addr. It never sends a request
// that a server would accept and act on: only the hello may be valid.
type attack func(addr string, rng *rand.Rand) error

var attacks = map[string]attack{
	"garbage": func(addr string, rng *rand.Rand) error {
		buf := make([]byte, 1+rng.IntN(4096))
		for i := range buf {
			buf[i] = byte(rng.UintN(256))
		}
		return sendRaw(addr, buf, false)
	},
	"truncated": func(addr string, rng *rand.Rand) error {
		var b bytes.Buffer
		body, _ := wire.Marshal(&wire.Hello{Version: wire.ProtocolVersion, Role: "client", Name: "blaster"})
		wire.WriteFrame(&b, wire.MsgHello, 1, body)
		return sendRaw(addr, b.Bytes()[:1+rng.IntN(b.Len()-1)], false)
	},
	"huge-length": func(addr string, rng *rand.Rand) error {
		h := header(0xFFFFFFFF, wire.MsgHello, 1)
		return sendRaw(addr, h, false)
	},
	"oversized": func(addr string, rng *rand.Rand) error {
		h := header(wire.DefaultMaxFrame+1+uint32(rng.IntN(1000)), wire.MsgHello, 1)
		return sendRaw(addr, append(h, make([]byte, 256<<10)...), false)
	},
	"wrong-type": func(addr string, rng *rand.Rand) error {
		body, _ := wire.Marshal(&wire.GetRequest{Keys: [][]byte{[]byte("x")}})
		types := []wire.MsgType{0, wire.MsgTxnReply, wire.MsgAck, wire.MsgHelloReply, wire.MsgError, 200, 255}
		var b bytes.Buffer
		wire.WriteFrame(&b, types[rng.IntN(len(types))], 2, body)
		return sendRaw(addr, b.Bytes(), true)
	},
	"wrong-body": func(addr string, rng *rand.Rand) error {
		// A read's body under a write's type: decodes to an empty transaction, refused.
		body, _ := wire.Marshal(&wire.GetRequest{Keys: [][]byte{[]byte("x")}})
		var b bytes.Buffer
		wire.WriteFrame(&b, wire.MsgTxn, 2, body)
		return sendRaw(addr, b.Bytes(), true)
	},
	"bad-msgpack": func(addr string, rng *rand.Rand) error {
		body := make([]byte, 1+rng.IntN(200))
		for i := range body {
			body[i] = byte(rng.UintN(256))
		}
		body[0] = 0xdf // a map32 header with a huge declared count
		var b bytes.Buffer
		types := []wire.MsgType{wire.MsgGet, wire.MsgTxn, wire.MsgStatus, wire.MsgHello}
		wire.WriteFrame(&b, types[rng.IntN(len(types))], 2, body)
		return sendRaw(addr, b.Bytes(), rng.IntN(2) == 0)
	},
	"no-hello": func(addr string, rng *rand.Rand) error {
		body, _ := wire.Marshal(&wire.GetRequest{Keys: [][]byte{[]byte("x")}})
		var b bytes.Buffer
		wire.WriteFrame(&b, wire.MsgGet, 1, body)
		return sendRaw(addr, b.Bytes(), false)
	},
	"bad-hello": func(addr string, rng *rand.Rand) error {
		body, _ := wire.Marshal(&wire.Hello{Version: 99 + uint32(rng.IntN(100)), Role: "node", Name: strings.Repeat("n", rng.IntN(5000)), ClusterID: rng.Uint64()})
		var b bytes.Buffer
		wire.WriteFrame(&b, wire.MsgHello, 1, body)
		return sendRaw(addr, b.Bytes(), false)
	},
	"slow-writer": func(addr string, rng *rand.Rand) error {
		nc, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		defer nc.Close()
		var b bytes.Buffer
		body, _ := wire.Marshal(&wire.Hello{Version: wire.ProtocolVersion, Role: "client", Name: "slow"})
		wire.WriteFrame(&b, wire.MsgHello, 1, body)
		nc.SetDeadline(time.Now().Add(3 * time.Second))
		for _, c := range b.Bytes() {
			if _, err := nc.Write([]byte{c}); err != nil {
				return nil // the server gave up on us: fine
			}
			time.Sleep(100 * time.Millisecond)
		}
		io.Copy(io.Discard, nc)
		return nil
	},
	"many-conns": func(addr string, rng *rand.Rand) error {
		var cs []net.Conn
		for i := 0; i < 64; i++ {
			nc, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				break
			}
			cs = append(cs, nc)
		}
		time.Sleep(300 * time.Millisecond)
		for _, c := range cs {
			c.Close()
		}
		return nil
	},
	"oversized-key": func(addr string, rng *rand.Rand) error {
		// A well-formed request over a limit, to the master only (refused, nothing written).
		body, _ := wire.Marshal(&wire.GetRequest{Keys: [][]byte{bytes.Repeat([]byte("k"), 5000+rng.IntN(100000))}})
		var b bytes.Buffer
		wire.WriteFrame(&b, wire.MsgGet, 2, body)
		return sendRaw(addr, b.Bytes(), true)
	},
	"http-garbage": func(addr string, rng *rand.Rand) error {
		reqs := []string{
			"GET /metrics HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-A: "+strings.Repeat("a", 1000)+"\r\n", 2000) + "\r\n",
			"POST /metrics HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\nabc",
			"\x00\x01\x02 not http at all\r\n\r\n",
			"GET /" + strings.Repeat("%zz", 10000) + " HTTP/1.1\r\n\r\n",
		}
		return sendRaw(addr, []byte(reqs[rng.IntN(len(reqs))]), false)
	},
}

func attackNames() []string {
	return []string{"garbage", "truncated", "huge-length", "oversized", "wrong-type", "wrong-body", "bad-msgpack", "no-hello", "bad-hello", "slow-writer", "many-conns", "oversized-key", "http-garbage"}
}

func header(n uint32, t wire.MsgType, id uint64) []byte {
	h := make([]byte, wire.HeaderSize)
	binary.BigEndian.PutUint32(h[0:4], n)
	h[4] = byte(t)
	binary.BigEndian.PutUint64(h[5:13], id)
	return h
}

// sendRaw connects, optionally says a valid hello, writes data, and reads whatever comes back
// for a short while.
func sendRaw(addr string, data []byte, hello bool) error {
	nc, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(2 * time.Second))
	if hello {
		var b bytes.Buffer
		body, _ := wire.Marshal(&wire.Hello{Version: wire.ProtocolVersion, Role: "client", Name: "blaster"})
		wire.WriteFrame(&b, wire.MsgHello, 1, body)
		if _, err := nc.Write(b.Bytes()); err != nil {
			return nil
		}
		if _, err := wire.ReadFrame(nc, 0); err != nil {
			return nil
		}
	}
	if _, err := nc.Write(data); err != nil {
		return nil // closed on us: fine
	}
	nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.Copy(io.Discard, io.LimitReader(nc, 1<<20))
	return nil
}

// Blaster sends bad input to the cluster's ports. It counts what it sent.
type Blaster struct {
	c  *cluster.Cluster
	mu sync.Mutex
	// Sent counts attacks by name.
	Sent map[string]int
}

// NewBlaster returns a blaster for c.
func NewBlaster(c *cluster.Cluster) *Blaster { return &Blaster{c: c, Sent: map[string]int{}} }

// addr resolves a blast target ("master", "node1/metrics").
func (b *Blaster) addr(target string) string {
	if name, ok := strings.CutSuffix(target, "/metrics"); ok {
		return b.c.MetricsAddr(name)
	}
	return b.c.Addr(target)
}

// Blast runs attack (or every attack, for "all") against target until ctx ends, with two
// connections at a time. Protocol attacks go to protocol ports and HTTP ones to metrics ports.
func (b *Blaster) Blast(ctx context.Context, target, name string, seed uint64) {
	metrics := strings.HasSuffix(target, "/metrics")
	names := []string{name}
	if name == "all" {
		names = attackNames()
	}
	addr := b.addr(target)
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for i := 0; i < 100000 && ctx.Err() == nil; i++ {
				n := names[rng.IntN(len(names))]
				if metrics && n != "http-garbage" && n != "garbage" && n != "many-conns" && n != "slow-writer" {
					n = "http-garbage"
				}
				if !metrics && n == "http-garbage" {
					n = "garbage"
				}
				if n == "oversized-key" && !strings.HasPrefix(target, "master") {
					n = "oversized"
				}
				if err := attacks[n](addr, rng); err != nil {
					time.Sleep(50 * time.Millisecond) // the port is down: do not spin
				}
				b.mu.Lock()
				b.Sent[n]++
				b.mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
}

// Summary lists the attacks sent.
func (b *Blaster) Summary() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var parts []string
	for _, n := range attackNames() {
		if b.Sent[n] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", n, b.Sent[n]))
		}
	}
	return strings.Join(parts, " ")
}
