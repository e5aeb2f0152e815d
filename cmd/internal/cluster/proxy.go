package cluster

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// ProxyMode is what a Proxy does with the bytes it carries.
type ProxyMode int

// Proxy modes.
const (
	// Pass forwards bytes both ways as they come.
	Pass ProxyMode = iota
	// Blackhole stops forwarding: open connections stall (their bytes wait in the proxy and the
	// kernel, and flow again when the mode changes back), new connections are accepted and stall.
	// It models a partition that heals before TCP gives up.
	Blackhole
	// Reset closes every open connection with a TCP reset and resets new ones at once.
	Reset
	// Delay forwards every chunk after the proxy's delay.
	Delay
)

// String names the mode.
func (m ProxyMode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Blackhole:
		return "blackhole"
	case Reset:
		return "reset"
	case Delay:
		return "delay"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// Proxy is an in-process TCP proxy on 127.0.0.1 that forwards to one target address and can
// cut, stall or slow the link on demand. It is safe for concurrent use; its cost is two
// goroutines, one 32 KiB buffer and a line of up to 64 chunks per direction per connection.
type Proxy struct {
	// Name describes the link, e.g. "master->node1".
	Name   string
	target string
	l      net.Listener
	wg     sync.WaitGroup

	mu struct {
		sync.Mutex
		mode    ProxyMode
		delay   time.Duration
		changed chan struct{} // closed and replaced on every mode change
		conns   map[net.Conn]struct{}
		closed  bool
	}
}

// NewProxy listens on a free port of 127.0.0.1 and forwards every connection to target.
func NewProxy(name, target string) (*Proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("cluster: proxy %s: %w", name, err)
	}
	p := &Proxy{Name: name, target: target, l: l}
	p.mu.changed = make(chan struct{})
	p.mu.conns = map[net.Conn]struct{}{}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address clients of the proxy dial.
func (p *Proxy) Addr() string { return p.l.Addr().String() }

// Mode returns the current mode.
func (p *Proxy) Mode() ProxyMode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.mode
}

// SetMode switches the proxy to m; delay is used by Delay only. Reset closes every open
// connection at once.
func (p *Proxy) SetMode(m ProxyMode, delay time.Duration) {
	p.mu.Lock()
	p.mu.mode, p.mu.delay = m, delay
	close(p.mu.changed)
	p.mu.changed = make(chan struct{})
	var victims []net.Conn
	if m == Reset {
		for c := range p.mu.conns {
			victims = append(victims, c)
		}
	}
	p.mu.Unlock()
	for _, c := range victims {
		resetConn(c)
	}
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.mu.closed = true
	close(p.mu.changed)
	p.mu.changed = make(chan struct{})
	for c := range p.mu.conns {
		c.Close()
	}
	p.mu.Unlock()
	err := p.l.Close()
	p.wg.Wait()
	return err
}

func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.closed {
		return false
	}
	for _, c := range cs {
		p.mu.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	for _, c := range cs {
		delete(p.mu.conns, c)
	}
	p.mu.Unlock()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if p.Mode() == Reset {
			resetConn(in)
			continue
		}
		p.wg.Add(1)
		go p.serve(in)
	}
}

func (p *Proxy) serve(in net.Conn) {
	defer p.wg.Done()
	if !p.track(in) {
		in.Close()
		return
	}
	// A stalled link also stalls the connect, as a partition would.
	if !p.waitForward() {
		p.untrack(in)
		resetConn(in)
		return
	}
	out, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		p.untrack(in)
		resetConn(in) // the target is down: the client sees a refused/reset connection
		return
	}
	if !p.track(out) {
		p.untrack(in)
		in.Close()
		out.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pump(out, in) }()
	go func() { defer wg.Done(); p.pump(in, out) }()
	wg.Wait()
	p.untrack(in, out)
}

// waitForward blocks while the proxy is blackholed and reports whether bytes may flow (false:
// reset or closed).
func (p *Proxy) waitForward() bool {
	for {
		p.mu.Lock()
		mode, closed, ch := p.mu.mode, p.mu.closed, p.mu.changed
		p.mu.Unlock()
		switch {
		case closed || mode == Reset:
			return false
		case mode != Blackhole:
			return true
		}
		<-ch
	}
}

// chunk is bytes read from one side, due on the other at due (zero: at once).
type chunk struct {
	data []byte
	due  time.Time
}

// delayLine bounds the chunks read and not yet written per direction: with the 32 KiB reads,
// at most 2 MiB held per direction.
const delayLine = 64

// pump copies src to dst, honouring the mode for every chunk, and closes both when either
// side ends. Reading and writing run apart, joined by a bounded line of chunks, so that Delay
// adds its delay to every chunk's trip (as a long link would) without capping the link's
// throughput: chunks read together travel together, and a burst of messages does not queue
// one delay behind another.
func (p *Proxy) pump(dst, src net.Conn) {
	line := make(chan chunk, delayLine)
	written := make(chan struct{})
	var readErr error // set before line closes
	go func() {
		defer close(written)
		defer func() {
			src.Close() // wakes the reader if this side ended first
			dst.Close()
		}()
		for c := range line {
			if !p.waitForward() {
				resetConn(src)
				resetConn(dst)
				return
			}
			if wait := time.Until(c.due); wait > 0 {
				time.Sleep(wait)
			}
			if _, err := dst.Write(c.data); err != nil {
				return
			}
		}
		if readErr != nil && !errors.Is(readErr, io.EOF) {
			resetConn(dst)
		}
	}()
	defer func() { <-written }()
	defer close(line)
	buf := make([]byte, 32<<10)
	for {
		if !p.waitForward() {
			resetConn(src)
			resetConn(dst)
			return
		}
		n, err := src.Read(buf)
		if n > 0 {
			c := chunk{data: append([]byte(nil), buf[:n]...)}
			p.mu.Lock()
			if mode, d := p.mu.mode, p.mu.delay; mode == Delay && d > 0 {
				c.due = time.Now().Add(d)
			}
			p.mu.Unlock()
			select {
			case line <- c:
			case <-written:
				return
			}
		}
		if err != nil {
			readErr = err
			return
		}
	}
}
