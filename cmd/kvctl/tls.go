package main

import (
	"crypto/tls"
	"io"
	"log/slog"

	"github.com/urfave/cli/v2"

	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/certs"
	"github.com/kvtx/kvtx/txn/client"
	"github.com/kvtx/kvtx/txn/server"
)

// tlsFlags choose the certificates of kvtx's connections; they are common flags.
func tlsFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "certs-dir", Value: defaultCertsDir, Usage: "certificate `DIR`: ca.crt, client.crt and client.key (default: the --config file's tls.dir, else data/certs)", EnvVars: []string{"KVTX_CERTS_DIR"}},
		&cli.StringFlag{Name: "cacert", Usage: "CA certificates `FILE` (default: ca.crt of the certificate directory)", EnvVars: []string{"KVTX_CACERT"}},
		&cli.StringFlag{Name: "cert", Usage: "client certificate `FILE` (default: client.crt of the certificate directory)", EnvVars: []string{"KVTX_CERT"}},
		&cli.StringFlag{Name: "key", Usage: "client key `FILE` (default: client.key of the certificate directory)", EnvVars: []string{"KVTX_KEY"}},
		&cli.BoolFlag{Name: "insecure", Usage: "connect without TLS, to a cluster started with --insecure", EnvVars: []string{"KVTX_INSECURE"}},
	}
}

// setOpt returns a common flag's value and whether a command line (or its environment
// variable) set it.
func setOpt(c *cli.Context, name string) (string, bool) {
	for _, ctx := range c.Lineage() {
		if isSetHere(ctx, name) {
			return opt(c, name), true
		}
	}
	return "", false
}

// security is how kvctl connects: nil with --insecure, else mutual TLS with a certificate.
type security struct {
	certs *certs.Loader
}

// loadSecurity reads the flags that choose kvctl's certificates: --insecure, or --cacert,
// --cert and --key, each defaulting to its file in --certs-dir, which defaults to the tls.dir
// of --config's file, and that to data/certs. A missing or invalid file is one line saying
// which and what to do.
func loadSecurity(c *cli.Context) (*security, error) {
	if v, _ := setOpt(c, "insecure"); v == "true" {
		return &security{}, nil
	}
	tc := txn.TLSConfig{Dir: defaultCertsDir}
	if path, ok := setOpt(c, "config"); ok && path != "" {
		cfg, err := server.LoadConfig(path)
		if err != nil {
			return nil, err
		}
		tc = txn.TLSConfig{Dir: cfg.TLS.Dir, CA: cfg.TLS.CA}
	}
	if dir, ok := setOpt(c, "certs-dir"); ok {
		tc = txn.TLSConfig{Dir: dir}
	}
	files := server.CertFiles(tc, certs.DefaultClient, false)
	want := certs.Identity{Name: certs.DefaultClient}
	if v, ok := setOpt(c, "cacert"); ok {
		files.CA = v
	}
	if v, ok := setOpt(c, "cert"); ok {
		files.Cert = v
		want.Name = ""
	}
	if v, ok := setOpt(c, "key"); ok {
		files.Key = v
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	l, err := server.LoadCerts(files, want, "pass --insecure for a cluster started with --insecure", quiet)
	if err != nil {
		return nil, err
	}
	return &security{certs: l}, nil
}

// clientOptions are the TLS options of a client of the master.
func (s *security) clientOptions(o client.Options) client.Options {
	if s.certs != nil {
		o.TLS = s.certs.ClientConfig(txn.MasterName)
		o.ExplainTLS = s.certs.Refusal
	}
	return o
}

// dialTLS is the TLS of a connection to the process named to (nil with --insecure).
func (s *security) dialTLS(to string) *tls.Config {
	if s.certs == nil {
		return nil
	}
	return s.certs.ClientConfig(to)
}

// explain turns a failed handshake's error into one line.
func (s *security) explain(err error) error {
	if s.certs == nil {
		return err
	}
	return s.certs.Explain(err)
}
