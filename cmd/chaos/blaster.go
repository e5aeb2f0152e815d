package chaos

import (
	"bytes"
	"context"
	"crypto/tls"
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

// attack sends one kind of bad input on a fresh connection to d. It never sends a request
// that a server would accept and act on: only the hello may be valid.
type attack func(d dest, rng *rand.Rand) error

// dest is where an attack goes: a port, and the TLS of a valid client certificate for the
// protocol ports of a cluster that runs TLS (nil: plain TCP), so that the bad frames get past
// the handshake to the frame decoder.
type dest struct {
	addr string
	tls  *tls.Config
}

// dial opens a connection to d, TLS if d has it.
func (d dest) dial() (net.Conn, error) {
	nd := &net.Dialer{Timeout: time.Second}
	if d.tls == nil {
		return nd.Dial("tcp", d.addr)
	}
	return tls.DialWithDialer(nd, "tcp", d.addr, d.tls)
}

// hello is a valid hello frame for d: over TLS it leaves the name to the certificate.
func (d dest) hello(name string) []byte {
	if d.tls != nil {
		name = ""
	}
	var b bytes.Buffer
	body, _ := wire.Marshal(&wire.Hello{Version: wire.ProtocolVersion, Role: "client", Name: name})
	wire.WriteFrame(&b, wire.MsgHello, 1, body)
	return b.Bytes()
}

var attacks = map[string]attack{
	"garbage": func(d dest, rng *rand.Rand) error {
		buf := make([]byte, 1+rng.IntN(4096))
		for i := range buf {
			buf[i] = byte(rng.UintN(256))
		}
		return sendRaw(d, buf, false)
	},
	"truncated": func(d dest, rng *rand.Rand) error {
		h := d.hello("blaster")
		return sendRaw(d, h[:1+rng.IntN(len(h)-1)], false)
	},
	"huge-length": func(d dest, rng *rand.Rand) error {
		h := header(0xFFFFFFFF, wire.MsgHello, 1)
		return sendRaw(d, h, false)
	},
	"oversized": func(d dest, rng *rand.Rand) error {
		h := header(wire.DefaultMaxFrame+1+uint32(rng.IntN(1000)), wire.MsgHello, 1)
		return sendRaw(d, append(h, make([]byte, 256<<10)...), false)
	},
	"wrong-type": func(d dest, rng *rand.Rand) error {
		body, _ := wire.Marshal(&wire.GetRequest{Keys: [][]byte{[]byte("x")}})
		types := []wire.MsgType{0, wire.MsgTxnReply, wire.MsgAck, wire.MsgHelloReply, wire.MsgError, 200, 255}
		var b bytes.Buffer
		wire.WriteFrame(&b, types[rng.IntN(len(types))], 2, body)
		return sendRaw(d, b.Bytes(), true)
	},
	"wrong-body": func(d dest, rng *rand.Rand) error {
		// A read's body under a write's type: decodes to an empty transaction, refused.
		body, _ := wire.Marshal(&wire.GetRequest{Keys: [][]byte{[]byte("x")}})
		var b bytes.Buffer
		wire.WriteFrame(&b, wire.MsgTxn, 2, body)
		return sendRaw(d, b.Bytes(), true)
	},
	"bad-msgpack": func(d dest, rng *rand.Rand) error {
		body := make([]byte, 1+rng.IntN(200))
		for i := range body {
			body[i] = byte(rng.UintN(256))
		}
		body[0] = 0xdf // a map32 header with a huge declared count
		var b bytes.Buffer
		types := []wire.MsgType{wire.MsgGet, wire.MsgTxn, wire.MsgStatus, wire.MsgHello}
		wire.WriteFrame(&b, types[rng.IntN(len(types))], 2, body)
		return sendRaw(d, b.Bytes(), rng.IntN(2) == 0)
	},
	"no-hello": func(d dest, rng *rand.Rand) error {
		body, _ := wire.Marshal(&wire.GetRequest{Keys: [][]byte{[]byte("x")}})
		var b bytes.Buffer
		wire.WriteFrame(&b, wire.MsgGet, 1, body)
		return sendRaw(d, b.Bytes(), false)
	},
	"bad-hello": func(d dest, rng *rand.Rand) error {
		body, _ := wire.Marshal(&wire.Hello{Version: 99 + uint32(rng.IntN(100)), Role: "node", Name: strings.Repeat("n", rng.IntN(5000)), ClusterID: rng.Uint64()})
		var b bytes.Buffer
		wire.WriteFrame(&b, wire.MsgHello, 1, body)
		return sendRaw(d, b.Bytes(), false)
	},
	"slow-writer": func(d dest, rng *rand.Rand) error {
		nc, err := d.dial()
		if err != nil {
			return err
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(3 * time.Second))
		for _, c := range d.hello("slow") {
			if _, err := nc.Write([]byte{c}); err != nil {
				return nil // the server gave up on us: fine
			}
			time.Sleep(100 * time.Millisecond)
		}
		io.Copy(io.Discard, nc)
		return nil
	},
	"many-conns": func(d dest, rng *rand.Rand) error {
		// Plain TCP connections that never start a handshake: they may hold only the slots of
		// unauthenticated connections (wire.ServerConfig.MaxPending), never a client's.
		var cs []net.Conn
		for i := 0; i < 64; i++ {
			nc, err := net.DialTimeout("tcp", d.addr, time.Second)
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
	"oversized-key": func(d dest, rng *rand.Rand) error {
		// A well-formed request over a limit, to the master only (refused, nothing written).
		body, _ := wire.Marshal(&wire.GetRequest{Keys: [][]byte{bytes.Repeat([]byte("k"), 5000+rng.IntN(100000))}})
		var b bytes.Buffer
		wire.WriteFrame(&b, wire.MsgGet, 2, body)
		return sendRaw(d, b.Bytes(), true)
	},
	"no-tls": func(d dest, rng *rand.Rand) error {
		// A valid hello in plaintext to a port that speaks TLS: refused with an error frame.
		plain := dest{addr: d.addr}
		return sendRaw(plain, plain.hello("plaintext"), false)
	},
	"http-garbage": func(d dest, rng *rand.Rand) error {
		reqs := []string{
			"GET /metrics HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-A: "+strings.Repeat("a", 1000)+"\r\n", 2000) + "\r\n",
			"POST /metrics HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\nabc",
			"\x00\x01\x02 not http at all\r\n\r\n",
			"GET /" + strings.Repeat("%zz", 10000) + " HTTP/1.1\r\n\r\n",
		}
		return sendRaw(d, []byte(reqs[rng.IntN(len(reqs))]), false)
	},
}

func attackNames() []string {
	return []string{"garbage", "truncated", "huge-length", "oversized", "wrong-type", "wrong-body", "bad-msgpack", "no-hello", "bad-hello", "slow-writer", "many-conns", "oversized-key", "no-tls", "http-garbage"}
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
func sendRaw(d dest, data []byte, hello bool) error {
	nc, err := d.dial()
	if err != nil {
		return err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(2 * time.Second))
	if hello {
		if _, err := nc.Write(d.hello("blaster")); err != nil {
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

// dest resolves a blast target ("master", "node1/metrics"): a protocol port gets the
// cluster's client certificate, a metrics port (HTTP) none.
func (b *Blaster) dest(target string) dest {
	if name, ok := strings.CutSuffix(target, "/metrics"); ok {
		return dest{addr: b.c.MetricsAddr(name)}
	}
	return dest{addr: b.c.Addr(target), tls: b.c.ClientTLS(target)}
}

// Blast runs attack (or every attack, for "all") against target until ctx ends, with two
// connections at a time. Protocol attacks go to protocol ports and HTTP ones to metrics ports.
func (b *Blaster) Blast(ctx context.Context, target, name string, seed uint64) {
	metrics := strings.HasSuffix(target, "/metrics")
	names := []string{name}
	if name == "all" {
		names = attackNames()
	}
	d := b.dest(target)
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
				if metrics && n == "no-tls" || n == "no-tls" && d.tls == nil {
					n = "garbage"
				}
				if n == "oversized-key" && !strings.HasPrefix(target, "master") {
					n = "oversized"
				}
				if err := attacks[n](d, rng); err != nil {
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
