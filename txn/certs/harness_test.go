package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// newCluster makes a CA, master, node1, node2 and the default client in a new directory.
func newCluster(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := CreateCA(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct{ name, role string }{{"master", RoleMaster}, {"node1", RoleNode}, {"node2", RoleNode}} {
		if err := CreateProcess(dir, p.name, p.role, nil, Options{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := CreateClient(dir, DefaultClient, Options{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// logBuffer is a logger's output, safe for concurrent writes.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newLoader loads name's files from dir; reloads happen only on Reload.
func newLoader(t testing.TB, dir, name string) *Loader {
	t.Helper()
	l, err := NewLoader(FilesFor(dir, name), LoaderOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), CheckEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// side is what one end of a handshake saw.
type side struct {
	state tls.ConnectionState
	err   error
}

// handshake connects a client with cli to a server with srv over loopback TCP. A client whose
// handshake succeeds reads a line the server writes after its own handshake succeeded, so a
// refusal by the server (which TLS 1.3 tells the client after the client's handshake
// returned) is seen as the error of that read. The server keeps the connection open until
// the client is done, so that its alert is read rather than lost to a reset.
func handshake(t testing.TB, srv, cli *tls.Config) (server, client side) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	clientDone := make(chan struct{})
	serverSide := make(chan side, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			serverSide <- side{err: err}
			return
		}
		defer raw.Close()
		raw.SetDeadline(time.Now().Add(30 * time.Second)) // a guard against a hang, not an assertion
		c := tls.Server(raw, srv)
		err = c.HandshakeContext(context.Background())
		if err == nil {
			_, err = c.Write([]byte("ok\n"))
		}
		serverSide <- side{c.ConnectionState(), err}
		<-clientDone
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw.SetDeadline(time.Now().Add(30 * time.Second))
	c := tls.Client(raw, cli)
	err = c.Handshake()
	if err == nil {
		line := make([]byte, 3)
		if _, err = io.ReadFull(c, line); err == nil && string(line) != "ok\n" {
			err = errors.New("unexpected reply " + string(line))
		}
	}
	client = side{c.ConnectionState(), err}
	close(clientDone)
	raw.Close()
	return <-serverSide, client
}

// wantProblem checks that err, explained by explain, is an *Error with problem p (and remote
// when the peer found it) whose message holds every one of parts.
func wantProblem(t *testing.T, what string, explain func(error) error, err error, p Problem, remote bool, parts ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want %v", what, p)
		return
	}
	var e *Error
	if !errors.As(explain(err), &e) {
		t.Errorf("%s: %v (%T) is not explained", what, err, err)
		return
	}
	t.Logf("%s: %s", what, e)
	if e.Problem != p || e.Remote != remote {
		t.Errorf("%s: problem %v remote %v, want %v remote %v: %s", what, e.Problem, e.Remote, p, remote, e)
	}
	if strings.Contains(e.Error(), "\n") || !strings.HasPrefix(e.Error(), "certs: ") {
		t.Errorf("%s: not one line with the package prefix: %q", what, e)
	}
	for _, part := range parts {
		if !strings.Contains(e.Error(), part) {
			t.Errorf("%s: %q does not say %q", what, e, part)
		}
	}
}
