package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"testing"
	"time"
)

func TestMutualTLSGivesEachSideThePeerIdentity(t *testing.T) {
	dir := newCluster(t)
	master, node1, node2, client := newLoader(t, dir, "master"), newLoader(t, dir, "node1"), newLoader(t, dir, "node2"), newLoader(t, dir, DefaultClient)
	for _, c := range []struct {
		what       string
		srv, cli   *Loader
		dial       string
		sees, seen Identity
	}{
		{"node dials master", master, node1, "master", Identity{"node1", RoleNode}, Identity{"master", RoleMaster}},
		{"master dials node", node2, master, "node2", Identity{"master", RoleMaster}, Identity{"node2", RoleNode}},
		{"node dials node", node1, node2, "node1", Identity{"node2", RoleNode}, Identity{"node1", RoleNode}},
		{"client dials master", master, client, "master", Identity{DefaultClient, RoleClient}, Identity{"master", RoleMaster}},
	} {
		srv, cli := handshake(t, c.srv.ServerConfig(), c.cli.ClientConfig(c.dial))
		if srv.err != nil || cli.err != nil {
			t.Fatalf("%s: server %v, client %v", c.what, srv.err, cli.err)
		}
		if id, err := PeerIdentity(srv.state); err != nil || id != c.sees {
			t.Errorf("%s: the server sees %v (%v), want %v", c.what, id, err, c.sees)
		}
		if id, err := PeerIdentity(cli.state); err != nil || id != c.seen {
			t.Errorf("%s: the client sees %v (%v), want %v", c.what, id, err, c.seen)
		}
		if srv.state.Version != tls.VersionTLS13 || cli.state.DidResume || len(srv.state.VerifiedChains) == 0 {
			t.Errorf("%s: version %x, resumed %v, server verified %d chains", c.what, srv.state.Version, cli.state.DidResume, len(srv.state.VerifiedChains))
		}
	}
}

func TestClientWithoutCertificateIsRefused(t *testing.T) {
	dir := newCluster(t)
	master := newLoader(t, dir, "master")
	srv, cli := handshake(t, master.ServerConfig(), &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true})
	wantProblem(t, "server", Explain, srv.err, ProblemNoCertificate, false, "the client sent no certificate")
	wantProblem(t, "client", Explain, cli.err, ProblemNoCertificate, true, "requires a client certificate")
}

func TestCertificateOfAnotherCAIsRefused(t *testing.T) {
	dir, other := newCluster(t), newCluster(t)
	master, node1 := newLoader(t, dir, "master"), newLoader(t, dir, "node1")
	strangerNode, strangerMaster := newLoader(t, other, "node1"), newLoader(t, other, "master")
	ours, theirs := master.state.Load().cas[0].Subject.CommonName, strangerNode.state.Load().cas[0].Subject.CommonName
	if ours == theirs {
		t.Fatalf("two CAs share the subject %q", ours)
	}

	// A client whose certificate another CA signed (and which does not check the server). It
	// sends its certificate even though the server asks for ones of its CA, as a Loader's do.
	stranger := strangerNode.state.Load()
	srv, cli := handshake(t, master.ServerConfig(), &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &stranger.cert, nil }})
	wantProblem(t, "server", master.Explain, srv.err, ProblemUnknownCA, false, "node1 (node)", `signed by "`+theirs+`"`, `"`+ours+`"`)
	wantProblem(t, "server, without the loader", Explain, srv.err, ProblemUnknownCA, false, `signed by "`+theirs+`"`)
	wantProblem(t, "client", Explain, cli.err, ProblemUnknownCA, true, "does not trust the CA")
	// The stranger's own dialer refuses the master first: neither trusts the other's CA.
	_, cli = handshake(t, master.ServerConfig(), strangerNode.ClientConfig("master"))
	wantProblem(t, "stranger dialer", strangerNode.Explain, cli.err, ProblemUnknownCA, false, `signed by "`+ours+`"`, `"`+theirs+`"`)

	// A server whose certificate another CA signed.
	srv, cli = handshake(t, strangerMaster.ServerConfig(), node1.ClientConfig("master"))
	wantProblem(t, "dialer", Explain, cli.err, ProblemUnknownCA, false, "the server's certificate master (master)", `signed by "`+theirs+`"`, `"`+ours+`"`)
	wantProblem(t, "stranger server", Explain, srv.err, ProblemRefused, true, "refused")
}

func TestExpiredCertificateIsRefusedWithItsDate(t *testing.T) {
	dir := newCluster(t)
	past := Options{Now: time.Now().Add(-48 * time.Hour), Lifetime: 24 * time.Hour}
	if err := CreateProcess(dir, "node3", RoleNode, nil, past); err != nil {
		t.Fatal(err)
	}
	files := FilesFor(dir, "node3")
	pair, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		t.Fatal(err)
	}
	expiry := date(pair.Leaf.NotAfter)

	// A process whose own certificate expired does not start.
	_, err = NewLoader(files, LoaderOptions{})
	wantProblem(t, "loader", Explain, err, ProblemExpired, false, "node3 (node) expired on "+expiry, files.Cert)

	// An expired client certificate.
	master, node1 := newLoader(t, dir, "master"), newLoader(t, dir, "node1")
	srv, cli := handshake(t, master.ServerConfig(), &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }})
	wantProblem(t, "server", master.Explain, srv.err, ProblemExpired, false, "node3 (node) expired on "+expiry)
	wantProblem(t, "client", Explain, cli.err, ProblemExpired, true, "has expired")

	// An expired server certificate.
	srv, cli = handshake(t, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAnyClientCert}, node1.ClientConfig("node3"))
	wantProblem(t, "dialer", Explain, cli.err, ProblemExpired, false, "the server's certificate node3 (node) expired on "+expiry)
	if srv.err == nil {
		t.Error("the server saw no refusal")
	}
}

func TestDialerRefusesAServerOfAnotherName(t *testing.T) {
	dir := newCluster(t)
	node1, node2, client := newLoader(t, dir, "node1"), newLoader(t, dir, "node2"), newLoader(t, dir, DefaultClient)

	// node1 means to reach the master, but node2 answers at that address.
	srv, cli := handshake(t, node2.ServerConfig(), node1.ClientConfig("master"))
	wantProblem(t, "dialer", Explain, cli.err, ProblemWrongName, false, `dialed "master"`, "node2 (node)")
	wantProblem(t, "server", node2.Explain, srv.err, ProblemRefused, true, "refused this process's certificate node2 (node)")

	// A client's certificate cannot serve, whatever name is dialed.
	srv, cli = handshake(t, client.ServerConfig(), node1.ClientConfig(DefaultClient))
	wantProblem(t, "dialer of a client", Explain, cli.err, ProblemWrongUsage, false, "client (client)", "lacks server or client authentication")
	if srv.err == nil {
		t.Error("the client serving saw no refusal")
	}
}

func TestClientRoleIsRefusedWhereANodeRoleIsRequired(t *testing.T) {
	dir := newCluster(t)
	node1, master, client := newLoader(t, dir, "node1"), newLoader(t, dir, "master"), newLoader(t, dir, DefaultClient)

	// At the handshake, when the listener names the roles it serves.
	srv, cli := handshake(t, node1.ServerConfig(RoleMaster, RoleNode), client.ClientConfig("node1"))
	wantProblem(t, "server", Explain, srv.err, ProblemWrongRole, false, `"client" has role client, but this needs role master or node`)
	wantProblem(t, "client", client.Explain, cli.err, ProblemRefused, true, "refused")
	srv, cli = handshake(t, node1.ServerConfig(RoleMaster, RoleNode), master.ClientConfig("node1"))
	if srv.err != nil || cli.err != nil {
		t.Fatalf("the master is refused: %v, %v", srv.err, cli.err)
	}

	// After it, when the listener lets every role in and checks each request.
	srv, cli = handshake(t, node1.ServerConfig(), client.ClientConfig("node1"))
	if srv.err != nil || cli.err != nil {
		t.Fatalf("server %v, client %v", srv.err, cli.err)
	}
	id, err := PeerIdentity(srv.state)
	if err != nil {
		t.Fatal(err)
	}
	wantProblem(t, "request", Explain, RequireRole(id, RoleNode, RoleMaster), ProblemWrongRole, false, `"client" has role client, but this needs role node or master`)
	if err := RequireRole(id, RoleNode, RoleClient); err != nil {
		t.Errorf("a client is refused where clients are let in: %v", err)
	}
}

func TestAPeerThatDoesNotSpeakTLSIsNamed(t *testing.T) {
	dir := newCluster(t)
	master, node1 := newLoader(t, dir, "master"), newLoader(t, dir, "node1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer raw.Close()
		done <- tls.Server(raw, master.ServerConfig()).HandshakeContext(context.Background())
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	wantProblem(t, "server", Explain, <-done, ProblemNotTLS, false, "does not speak TLS")
	raw.Close()

	// And a TLS dialer that reaches a plaintext server.
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			return
		}
		defer raw.Close()
		raw.Write([]byte("kvtx plaintext hello, not a TLS record\n"))
		<-done
	}()
	raw, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	err = tls.Client(raw, node1.ClientConfig("master")).Handshake()
	done <- nil
	wantProblem(t, "dialer", Explain, err, ProblemNotTLS, false, "does not speak TLS")
}

func TestExplainLeavesOtherErrorsAlone(t *testing.T) {
	if Explain(nil) != nil {
		t.Error("Explain(nil) is not nil")
	}
	if Refusal(nil) != nil || Refusal(context.DeadlineExceeded) != nil {
		t.Error("Refusal of no certificate problem is not nil")
	}
	if err := Explain(context.DeadlineExceeded); err != context.DeadlineExceeded {
		t.Errorf("a timeout became %v", err)
	}
	e := &Error{Problem: ProblemWrongName, msg: "certs: x"}
	if Explain(e) != e {
		t.Error("an *Error is not returned as it is")
	}
	inner := x509.UnknownAuthorityError{}
	if !errors.Is(Explain(inner), inner) {
		t.Error("the explained error does not wrap the original")
	}
	var ce *Error
	if Refusal(e) != e || !errors.As(Refusal(inner), &ce) || ce.Problem != ProblemUnknownCA {
		t.Errorf("Refusal of certificate problems: %v, %v", Refusal(e), Refusal(inner))
	}
}

// signedWithoutIdentity makes a certificate and key that dir's CA signs but that carry no
// role, as another tool using the same CA might.
func signedWithoutIdentity(t *testing.T, dir string) tls.Certificate {
	t.Helper()
	ca, err := loadSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "node1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, priv.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}
}

func TestCertificateWithoutKvtxIdentityIsRefused(t *testing.T) {
	dir := newCluster(t)
	master, node1 := newLoader(t, dir, "master"), newLoader(t, dir, "node1")
	bare := signedWithoutIdentity(t, dir)
	srv, _ := handshake(t, master.ServerConfig(), &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &bare, nil }})
	wantProblem(t, "server", Explain, srv.err, ProblemNoIdentity, false, `"CN=node1"`, "exactly one OrganizationalUnit")
	_, cli := handshake(t, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{bare}, ClientAuth: tls.RequireAnyClientCert}, node1.ClientConfig("node1"))
	wantProblem(t, "dialer", Explain, cli.err, ProblemNoIdentity, false, `"CN=node1"`)
}

func TestACertificateThatExpiresWhileItsProcessRunsIsNamed(t *testing.T) {
	dir := t.TempDir()
	if err := CreateCA(dir, Options{Now: time.Now().Add(-72 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"master", "node1"} {
		if err := CreateProcess(dir, name, expectedRole(name), nil, Options{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := CreateProcess(dir, "node3", RoleNode, nil, Options{Now: time.Now().Add(-48 * time.Hour), Lifetime: 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	// node3's files as a process loaded them while they were valid, a day and a half ago.
	s, err := load(FilesFor(dir, "node3"), time.Now().Add(-36*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	node3 := &Loader{files: s.files, log: newLoader(t, dir, "node1").log, every: -1}
	node3.state.Store(s)
	expiry := date(s.leaf.NotAfter)
	master, node1 := newLoader(t, dir, "master"), newLoader(t, dir, "node1")

	// As a dialer it does not send it, and says why.
	_, cli := handshake(t, master.ServerConfig(), node3.ClientConfig("master"))
	wantProblem(t, "dialer", Explain, cli.err, ProblemExpired, false, "this process's certificate node3 (node)", "expired on "+expiry)
	// As a server it is refused by the dialer, and its own Explain says why.
	srv, cli := handshake(t, node3.ServerConfig(), node1.ClientConfig("node3"))
	wantProblem(t, "dialer of node3", Explain, cli.err, ProblemExpired, false, "the server's certificate node3 (node) expired on "+expiry)
	wantProblem(t, "server", node3.Explain, srv.err, ProblemExpired, true, "refused this process's certificate node3 (node)", "expired on "+expiry)
}
