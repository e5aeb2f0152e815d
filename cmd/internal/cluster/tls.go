package cluster

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"syscall"

	"github.com/kvtx/kvtx/txn/certs"
	"github.com/kvtx/kvtx/wire"
)

// makeCerts makes the cluster's CA and every process's and the client's certificate in the
// config's tls.dir (with kvctl cert init when Config.CertsByKvctl), and loads the client's.
func (c *Cluster) makeCerts() error {
	if c.cfg.CertsByKvctl {
		cmd := exec.Command(c.cfg.Binaries.Path("kvctl"), "cert", "init", "--config", c.configPath)
		cmd.Env = withoutKvtxEnv()
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("cluster: kvctl cert init: %w\n%s", err, out)
		}
	} else if err := certs.Init(c.real.TLS.Dir, c.real, certs.Options{}); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	l, err := certs.NewLoader(certs.FilesFor(c.real.TLS.Dir, certs.DefaultClient), certs.LoaderOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	c.client = l
	return nil
}

// Insecure reports whether the cluster runs without TLS (Config.Insecure).
func (c *Cluster) Insecure() bool { return c.cfg.Insecure }

// CertsDir is the directory of the cluster's certificates (ca.crt, ca.key, NAME.crt and
// NAME.key per process, client.crt and client.key), "" with Config.Insecure.
func (c *Cluster) CertsDir() string {
	if c.client == nil {
		return ""
	}
	return c.real.TLS.Dir
}

// ClientTLS is the TLS of a client's connection to the process named to (a certs.Loader's
// ClientConfig of the client certificate), nil with Config.Insecure.
func (c *Cluster) ClientTLS(to string) *tls.Config {
	if c.client == nil {
		return nil
	}
	return c.client.ClientConfig(to)
}

// TLSRefusal returns the certificate problem err is, in the one line of certs, or nil if it
// is none (client.Options.ExplainTLS).
func (c *Cluster) TLSRefusal(err error) error {
	if c.client == nil {
		return nil
	}
	return c.client.Refusal(err)
}

// DialOptions are the options of a client's wire connection to the process named to: over
// TLS with the client certificate, whose name the servers take, or without, as "cluster".
func (c *Cluster) DialOptions(to string) wire.DialOptions {
	if c.client == nil {
		return wire.DialOptions{Role: "client", Name: "cluster"}
	}
	return wire.DialOptions{Role: "client", TLS: c.ClientTLS(to)}
}

// KvctlArgs are the flags that give kvctl the cluster's client certificate (or --insecure).
func (c *Cluster) KvctlArgs() []string {
	if c.client == nil {
		return []string{"--insecure"}
	}
	return []string{"--certs-dir", c.real.TLS.Dir}
}

// Hangup sends SIGHUP to the process's latest run: it reloads its certificates.
func (c *Cluster) Hangup(name string) { c.signal(name, syscall.SIGHUP, "") }
