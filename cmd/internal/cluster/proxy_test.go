package cluster

import (
	"io"
	"net"
	"testing"
	"time"
)

// echoServer accepts connections and echoes what it reads.
func echoServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return l.Addr().String()
}

func roundTrip(c net.Conn, msg string, within time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(within))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	return string(buf), err
}

// echoThroughProxy returns a proxy to an echo server and a connection through it, both closed
// when the test ends.
func echoThroughProxy(t *testing.T) (*Proxy, net.Conn) {
	t.Helper()
	p, err := NewProxy("test", echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return p, c
}

func TestProxyPassesStallsAndResets(t *testing.T) {
	p, c := echoThroughProxy(t)
	if got, err := roundTrip(c, "hello", 2*time.Second); err != nil || got != "hello" {
		t.Fatalf("pass: got %q, %v", got, err)
	}
	// Blackhole: nothing comes back, and the bytes arrive after the heal.
	p.SetMode(Blackhole, 0)
	if _, err := roundTrip(c, "stalled", 200*time.Millisecond); err == nil {
		t.Fatal("blackhole delivered a reply")
	}
	p.SetMode(Pass, 0)
	c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, len("stalled"))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "stalled" {
		t.Fatalf("after heal: got %q, %v", buf, err)
	}
	// Delay: delivered, late.
	p.SetMode(Delay, 100*time.Millisecond)
	start := time.Now()
	if got, err := roundTrip(c, "slow", 2*time.Second); err != nil || got != "slow" || time.Since(start) < 150*time.Millisecond {
		t.Fatalf("delay: got %q, %v after %v", got, err, time.Since(start))
	}
	// Reset: the open connection dies, new ones are refused.
	p.SetMode(Reset, 0)
	if _, err := roundTrip(c, "x", time.Second); err == nil {
		t.Fatal("reset left the connection open")
	}
	c2, err := net.Dial("tcp", p.Addr())
	if err == nil {
		_, err = roundTrip(c2, "x", time.Second)
		c2.Close()
	}
	if err == nil {
		t.Fatal("reset accepted a new connection")
	}
}

// TestProxyDelayIsLatencyNotThroughput sends two messages 20 ms apart through a link that
// delays each by 400 ms each way: the second comes back two delays after it was sent, not
// queued behind the first one's delay on each hop (three delays: so a burst of protocol
// messages on a slowed link took up to twice the delay per hop, and requests timed out).
func TestProxyDelayIsLatencyNotThroughput(t *testing.T) {
	p, c := echoThroughProxy(t)
	const delay = 400 * time.Millisecond
	p.SetMode(Delay, delay)
	sent := make(chan time.Time, 1)
	go func() {
		c.Write([]byte("a"))
		time.Sleep(20 * time.Millisecond)
		sent <- time.Now()
		c.Write([]byte("b"))
	}()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ab" {
		t.Fatalf("echoes %q, %v: want both, in order", buf, err)
	}
	took := time.Since(<-sent)
	if took < 2*delay {
		t.Fatalf("the second echo came back after %v, before one delay each way", took)
	}
	if took > 2*delay+delay/2 {
		t.Fatalf("the second echo came back after %v: it waited out the first one's delay on each hop", took)
	}
}
