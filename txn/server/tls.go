package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/certs"
	"github.com/kvtx/kvtx/wire"
)

// CertFiles returns the files that the process (or client) named name loads under tc: those
// of certs.FilesFor(tc.Dir, name), each replaced by tc's override when it has one; ownFiles
// says whether tc.Cert and tc.Key apply (to a process: yes; to kvctl: no).
func CertFiles(tc txn.TLSConfig, name string, ownFiles bool) certs.Files {
	dir := tc.Dir
	if dir == "" {
		dir = txn.DefaultCertsDir
	}
	f := certs.FilesFor(dir, name)
	if tc.CA != "" {
		f.CA = tc.CA
	}
	if ownFiles && tc.Cert != "" {
		f.Cert = tc.Cert
	}
	if ownFiles && tc.Key != "" {
		f.Key = tc.Key
	}
	return f
}

// LoadCerts loads a certificate, its key and the CA certificates from files and checks that
// the certificate is want's (an empty want.Name or want.Role: any). A missing file gets one
// line that names it, the directory and hint (what to do instead: "start with --insecure");
// a bad one, the line certs explains it with. The Loader logs to log.
func LoadCerts(files certs.Files, want certs.Identity, hint string, log *slog.Logger) (*certs.Loader, error) {
	missing := func(what, path string) error {
		if want.Name == "" {
			return fmt.Errorf("server: no %s at %s: run `kvctl cert init` or %s", what, path, hint)
		}
		return fmt.Errorf("server: no %s for %s in %s (%s is missing): run `kvctl cert init` or %s", what, want.Name, filepath.Dir(path), filepath.Base(path), hint)
	}
	for _, f := range []struct{ what, path string }{{"certificate", files.Cert}, {"key", files.Key}, {"CA certificate", files.CA}} {
		if _, err := os.Stat(f.path); errors.Is(err, os.ErrNotExist) {
			return nil, missing(f.what, f.path)
		}
	}
	l, err := certs.NewLoader(files, certs.LoaderOptions{Logger: log})
	if err != nil {
		return nil, err
	}
	if id := l.Identity(); want.Name != "" && id.Name != want.Name || want.Role != "" && id.Role != want.Role {
		this := want.String()
		if want.Role == "" {
			this = want.Name
		}
		return nil, fmt.Errorf("server: %s holds the certificate of %s, but this is %s", files.Cert, id, this)
	}
	return l, nil
}

// identify is the protocol server's Identify: a peer's name and role are those of the
// certificate its handshake verified.
func identify(cs tls.ConnectionState) (name, role string, err error) {
	id, err := certs.PeerIdentity(cs)
	return id.Name, id.Role, err
}

// processCerts loads the certificate of the process name of cfg, unless insecure: then it
// logs loudly that every peer is trusted and returns nil.
func processCerts(cfg txn.Config, name string, insecure bool, log *slog.Logger) (*certs.Loader, error) {
	if insecure {
		log.Warn("INSECURE: serving and dialling without TLS (--insecure): anyone who reaches this process's port is trusted with the role it claims")
		return nil, nil
	}
	role := certs.RoleNode
	if name == txn.MasterName {
		role = certs.RoleMaster
	}
	l, err := LoadCerts(CertFiles(cfg.TLS, name, true), certs.Identity{Name: name, Role: role}, "start with --insecure", log)
	if err != nil {
		return nil, err
	}
	c := l.Certificate()
	log.Info("mutual TLS", "identity", l.Identity().String(), "cert", l.Files().Cert, "ca", l.Files().CA,
		"serial", fmt.Sprintf("%x", c.SerialNumber), "not_after", c.NotAfter.UTC().Format("2006-01-02"))
	return l, nil
}

// transportTLS is l as a transport's TLS, nil (plaintext) when l is.
func transportTLS(l *certs.Loader) txn.TransportTLS {
	if l == nil {
		return nil
	}
	return l
}

// serverTLS sets the protocol server's TLS from l (nothing when l is nil).
func serverTLS(cfg *wire.ServerConfig, l *certs.Loader) {
	if l != nil {
		cfg.TLS = l.ServerConfig()
		cfg.Identify = identify
	}
}

// ReloadCerts reads the process's certificate files again (on SIGHUP): later handshakes use
// them if they are valid and of the same identity; otherwise the current ones stay and the
// error says why. Established connections are not touched. Without TLS it does nothing.
func (p *process) ReloadCerts() error {
	if p.certs == nil {
		return nil
	}
	return p.certs.Reload()
}
