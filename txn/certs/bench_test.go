package certs

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
)

// BenchmarkHandshake measures a full mutual-TLS handshake over loopback TCP (dial, handshake
// on both sides, one byte back): a Loader's configs against crypto/tls's own verification
// with the same certificates, to show what the callbacks cost.
func BenchmarkHandshake(b *testing.B) {
	dir := newCluster(b)
	master, node1 := newLoader(b, dir, "master"), newLoader(b, dir, "node1")
	ms, ns := master.state.Load(), node1.state.Load()
	stdSrv := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{ms.cert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ms.pool, SessionTicketsDisabled: true}
	stdCli := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{ns.cert}, RootCAs: ns.pool, ServerName: "localhost"}
	b.Run("loader", func(b *testing.B) { benchHandshakes(b, master.ServerConfig(), node1.ClientConfig("master")) })
	b.Run("stdlib", func(b *testing.B) { benchHandshakes(b, stdSrv, stdCli) })
}

func benchHandshakes(b *testing.B, srv, cli *tls.Config) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer raw.Close()
				c := tls.Server(raw, srv)
				if c.Handshake() == nil {
					c.Write([]byte{1})
					io.Copy(io.Discard, c)
				}
			}()
		}
	}()
	for b.Loop() {
		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		c := tls.Client(raw, cli)
		var one [1]byte
		if _, err := io.ReadFull(c, one[:]); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
