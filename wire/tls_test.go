package wire_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kvtx/kvtx/txn/certs"
	"github.com/kvtx/kvtx/wire"
)

// tlsCluster is a certificate directory with a CA, master, node1, node2 and client.
type tlsCluster struct {
	t   *testing.T
	dir string
}

func newTLSCluster(t *testing.T) *tlsCluster {
	t.Helper()
	dir := t.TempDir()
	if err := certs.CreateCA(dir, certs.Options{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct{ name, role string }{{"master", certs.RoleMaster}, {"node1", certs.RoleNode}, {"node2", certs.RoleNode}} {
		if err := certs.CreateProcess(dir, p.name, p.role, nil, certs.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := certs.CreateClient(dir, certs.DefaultClient, certs.Options{}); err != nil {
		t.Fatal(err)
	}
	return &tlsCluster{t: t, dir: dir}
}

func (c *tlsCluster) loader(name string) *certs.Loader {
	c.t.Helper()
	l, err := certs.NewLoader(certs.FilesFor(c.dir, name), certs.LoaderOptions{Logger: quiet(), CheckEvery: -1})
	if err != nil {
		c.t.Fatal(err)
	}
	return l
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// identify is what a kvtx process passes as ServerConfig.Identify.
func identify(cs tls.ConnectionState) (string, string, error) {
	id, err := certs.PeerIdentity(cs)
	return id.Name, id.Role, err
}

// peerEcho answers a Status request with the peer's name and role as the server saw them.
func peerEcho(ctx context.Context, req *wire.Request) (wire.Message, error) {
	return &wire.StatusReply{Processes: []wire.ProcessStatus{{Name: req.Peer.Name, Role: req.Peer.Role}}}, nil
}

// serve starts a wire server on 127.0.0.1:0 with cfg and stops it at the end of the test.
func serve(t *testing.T, cfg wire.ServerConfig) string {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := wire.NewServer(wire.HandlerFunc(peerEcho), cfg)
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, wire.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return l.Addr().String()
}

// nodeServer serves as node1 does: TLS with its certificate, identities from certificates.
func (c *tlsCluster) nodeServer(cfg wire.ServerConfig) string {
	c.t.Helper()
	cfg.Name = "node1"
	cfg.TLS = c.loader("node1").ServerConfig()
	cfg.Identify = identify
	return serve(c.t, cfg)
}

// peerOf returns who the server says the connection's peer is.
func peerOf(t *testing.T, conn *wire.Conn) (name, role string) {
	t.Helper()
	var rep wire.StatusReply
	if err := conn.Call(context.Background(), &wire.StatusRequest{}, &rep); err != nil {
		t.Fatal(err)
	}
	return rep.Processes[0].Name, rep.Processes[0].Role
}

func dialCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Over TLS the server hands its handler the certificate's identity: the hello may leave it
// out or repeat it, and a hello claiming another name or role is refused.
func TestTLSPeerIsTheCertificatesIdentity(t *testing.T) {
	c := newTLSCluster(t)
	addr := c.nodeServer(wire.ServerConfig{})
	master := c.loader("master")
	for _, hello := range []struct{ role, name string }{{"", ""}, {"master", "master"}} {
		conn, err := wire.Dial(dialCtx(t), addr, wire.DialOptions{Role: hello.role, Name: hello.name, TLS: master.ClientConfig("node1")})
		if err != nil {
			t.Fatalf("hello %+v: %v", hello, err)
		}
		if name, role := peerOf(t, conn); name != "master" || role != "master" {
			t.Errorf("hello %+v: the server saw %s (%s), want master (master)", hello, name, role)
		}
		if conn.RemoteName() != "node1" {
			t.Errorf("remote name %q", conn.RemoteName())
		}
		conn.Close()
	}

	node2 := c.loader("node2")
	for _, hello := range []struct{ role, name, says string }{
		{"node", "node1", "hello claims node1 but the certificate is node2's"},
		{"master", "", "hello claims role master but the certificate of node2 has role node"},
		{"master", "master", "hello claims master but the certificate is node2's"},
	} {
		_, err := wire.Dial(dialCtx(t), addr, wire.DialOptions{Role: hello.role, Name: hello.name, TLS: node2.ClientConfig("node1")})
		var we *wire.Error
		if !errors.As(err, &we) || we.Code != wire.CodePermissionDenied || !strings.Contains(we.Message, hello.says) {
			t.Errorf("node2 claiming %s (%s): %v, want permission_denied saying %q", hello.name, hello.role, err, hello.says)
		}
	}
	// node2 as itself is let in.
	conn, err := wire.Dial(dialCtx(t), addr, wire.DialOptions{Role: "node", Name: "node2", TLS: node2.ClientConfig("node1")})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if name, role := peerOf(t, conn); name != "node2" || role != "node" {
		t.Errorf("the server saw %s (%s), want node2 (node)", name, role)
	}
}

// Every kind of peer that cannot authenticate is refused with an error certs.Explain reads in
// one line, on the dialer's side: no certificate, another CA's, an expired one, the wrong
// server, and plaintext against TLS either way round.
func TestTLSRefusalsAreExplained(t *testing.T) {
	c := newTLSCluster(t)
	addr := c.nodeServer(wire.ServerConfig{})
	other := newTLSCluster(t)
	// Signed by the cluster's CA, but valid for an hour two days ago.
	if err := certs.CreateClient(c.dir, "old", certs.Options{Now: time.Now().Add(-48 * time.Hour), Lifetime: time.Hour}); err != nil {
		t.Fatal(err)
	}
	old := certs.FilesFor(c.dir, "old")
	expiredPair, err := tls.LoadX509KeyPair(old.Cert, old.Key)
	if err != nil {
		t.Fatal(err)
	}
	client := c.loader("client")
	noCert := client.ClientConfig("node1")
	noCert.GetClientCertificate = nil
	withExpired := client.ClientConfig("node1")
	withExpired.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &expiredPair, nil }
	stranger := other.loader("client")
	strangerPair, err := tls.LoadX509KeyPair(stranger.Files().Cert, stranger.Files().Key)
	if err != nil {
		t.Fatal(err)
	}
	withStranger := client.ClientConfig("node1")
	withStranger.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &strangerPair, nil }

	plain := serve(t, wire.ServerConfig{Name: "node1"})
	for _, k := range []struct {
		what    string
		addr    string
		opts    wire.DialOptions
		problem certs.Problem
	}{
		{"no certificate", addr, wire.DialOptions{TLS: noCert}, certs.ProblemNoCertificate},
		{"a certificate of another CA", addr, wire.DialOptions{TLS: withStranger}, certs.ProblemUnknownCA},
		{"another CA's certificates altogether", addr, wire.DialOptions{TLS: stranger.ClientConfig("node1")}, certs.ProblemUnknownCA},
		{"an expired certificate", addr, wire.DialOptions{TLS: withExpired}, certs.ProblemExpired},
		{"node1 reached as node2", addr, wire.DialOptions{TLS: client.ClientConfig("node2")}, certs.ProblemWrongName},
		{"TLS to a plaintext server", plain, wire.DialOptions{TLS: client.ClientConfig("node1")}, certs.ProblemNotTLS},
	} {
		conn, err := wire.Dial(dialCtx(t), k.addr, k.opts)
		if err == nil {
			conn.Close()
			t.Errorf("%s: let in", k.what)
			continue
		}
		var ce *certs.Error
		if !errors.As(certs.Explain(err), &ce) || ce.Problem != k.problem || strings.Contains(ce.Error(), "\n") {
			t.Errorf("%s: %v, explained %v, want problem %v", k.what, err, certs.Explain(err), k.problem)
			continue
		}
		t.Logf("%s: %s", k.what, ce)
	}

	// A kvtx client without TLS gets a wire error saying why, not a reset.
	_, err = wire.Dial(dialCtx(t), addr, wire.DialOptions{Role: "client", Name: "client"})
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeBadRequest || !strings.Contains(we.Message, "speaks only TLS") {
		t.Errorf("plaintext to TLS: %v, want bad_request saying it speaks only TLS", err)
	}
}

// Connections that never finish their handshake (silent sockets, failed handshakes) take no
// MaxConns slot: with every slot but one held by them, a real peer still gets in. Past
// MaxPending unauthenticated connections, more are closed at once.
func TestUnauthenticatedConnectionsTakeNoSlot(t *testing.T) {
	c := newTLSCluster(t)
	addr := c.nodeServer(wire.ServerConfig{MaxConns: 2, MaxPending: 8, HelloTimeout: time.Minute})
	var silent []net.Conn
	defer func() {
		for _, nc := range silent {
			nc.Close()
		}
	}()
	for range 6 {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, nc)
	}
	other := newTLSCluster(t).loader("client").ClientConfig("node1")
	for range 10 {
		if conn, err := wire.Dial(dialCtx(t), addr, wire.DialOptions{TLS: other}); err == nil {
			conn.Close()
			t.Fatal("a certificate of another CA was let in")
		}
	}
	master := c.loader("master")
	var conns []*wire.Conn
	for i := range 2 {
		// The refused handshakes above are still pending while the server drains them, so on a
		// loaded machine a first try may find MaxPending full: the master retries, as a real
		// one does. Silent sockets, though, would hold their slots for the whole minute.
		conn, err := wire.Dial(dialCtx(t), addr, wire.DialOptions{TLS: master.ClientConfig("node1")})
		for try := 0; err != nil && try < 20; try++ {
			time.Sleep(50 * time.Millisecond)
			conn, err = wire.Dial(dialCtx(t), addr, wire.DialOptions{TLS: master.ClientConfig("node1")})
		}
		if err != nil {
			t.Fatalf("the master's connection %d, with 6 silent connections and 10 refused ones: %v", i+1, err)
		}
		conns = append(conns, conn)
	}
	defer func() {
		for _, conn := range conns {
			conn.Close()
		}
	}()
	// The two slots are taken: the third authenticated connection is refused, with a reason.
	_, err := wire.Dial(dialCtx(t), addr, wire.DialOptions{TLS: master.ClientConfig("node1")})
	if wire.CodeOf(err) != wire.CodeUnavailable || !strings.Contains(err.Error(), "too many connections (limit 2)") {
		t.Errorf("third connection: %v, want unavailable: too many connections", err)
	}

	// On a server of its own (nothing else connecting or lingering meanwhile), 8 silent sockets
	// fill MaxPending; the ninth is closed unread.
	addr = c.nodeServer(wire.ServerConfig{MaxConns: 2, MaxPending: 8, HelloTimeout: time.Minute})
	for range 8 {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, nc)
	}
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(30 * time.Second)) // a guard against a hang, not an assertion
	if n, err := nc.Read(make([]byte, 1)); err == nil || errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		t.Errorf("a connection past MaxPending: read %d bytes, %v; want it closed", n, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
