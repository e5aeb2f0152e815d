package certs

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/kvtx/kvtx/txn"
)

// member is one certificate a cluster needs.
type member struct {
	id    Identity
	hosts []string
}

// members lists the certificates of cfg: the master's, each node's (with the hosts of its
// listen and metrics addresses), and DefaultClient's.
func members(cfg txn.Config) ([]member, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	out := []member{{Identity{txn.MasterName, RoleMaster}, processHosts(cfg.Master)}}
	for _, n := range cfg.Nodes {
		if n.Name == DefaultClient {
			return nil, fmt.Errorf("certs: node %q would share its files with the default client: rename the node", n.Name)
		}
		out = append(out, member{Identity{n.Name, RoleNode}, processHosts(n)})
	}
	out = append(out, member{id: Identity{DefaultClient, RoleClient}})
	for _, m := range out {
		if err := checkIdentity(m.id); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// processHosts returns the names of p's certificate: those of its listen address, then those
// of its metrics address, which a scraper checking hosts (Prometheus over tls.metrics) dials.
// Repeats are dropped when the certificate is made.
func processHosts(p txn.Process) []string {
	hosts := hostsFor(p.Listen)
	if p.Metrics != "" {
		hosts = append(hosts, hostsFor(p.Metrics)...)
	}
	return hosts
}

// hostsFor returns the names of a process listening on listen: its host; with
// DefaultHosts if that is a loopback address, or instead of it (and the machine's host
// name) if it is a wildcard.
func hostsFor(listen string) []string {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return DefaultHosts
	}
	ip := net.ParseIP(host)
	switch {
	case host == "" || ip != nil && ip.IsUnspecified():
		hosts := append([]string(nil), DefaultHosts...)
		if hn, err := os.Hostname(); err == nil && checkDNSName(hn) == nil {
			hosts = append(hosts, hn)
		}
		return hosts
	case host == "localhost" || ip != nil && ip.IsLoopback():
		return append([]string{host}, DefaultHosts...)
	}
	return []string{host}
}

// Init makes every certificate of the cluster cfg in dir: a new CA, one certificate per
// process (the master's and each node's, with the hosts of its listen and metrics addresses
// among its names) and DefaultClient's. If any of these files exists, nothing is written, unless
// opts.Overwrite: then all are made anew, and certificates signed by the old CA are no
// longer trusted by processes that load the new ca.crt.
func Init(dir string, cfg txn.Config, opts Options) error {
	ms, err := members(cfg)
	if err != nil {
		return err
	}
	if opts, err = opts.withDefaults(); err != nil {
		return err
	}
	return withDir(dir, func() error {
		paths := []string{filepath.Join(dir, CACert), filepath.Join(dir, CAKey)}
		for _, m := range ms {
			f := FilesFor(dir, m.id.Name)
			paths = append(paths, f.Cert, f.Key)
		}
		if err := checkAbsent(opts.Overwrite, paths...); err != nil {
			return err
		}
		ca, err := createCA(dir, opts)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if _, err := createLeaf(dir, ca, m.id, m.hosts, opts); err != nil {
				return err
			}
		}
		return nil
	})
}

// EnsureDev makes whatever certificates of the cluster cfg are missing in dir, with the
// default options, and leaves every existing file alone: the CA when there is none (and no
// certificate either), then each process's and DefaultClient's. It reports whether it
// wrote anything. It is meant for a development cluster's first start; concurrent calls
// (three processes starting at once) make one CA and one certificate per name. It refuses
// half a pair (a certificate without its key, or the reverse), certificates without a
// ca.crt, and a missing certificate when ca.key is absent.
func EnsureDev(dir string, cfg txn.Config) (created bool, err error) {
	ms, err := members(cfg)
	if err != nil {
		return false, err
	}
	err = withDir(dir, func() error {
		var missing []member
		var present []string
		for _, m := range ms {
			f := FilesFor(dir, m.id.Name)
			crt, key := exists(f.Cert), exists(f.Key)
			switch {
			case crt && key:
				present = append(present, f.Cert)
			case crt != key:
				return fmt.Errorf("certs: %s and %s: one exists without the other: remove it, or put back the missing one", f.Cert, f.Key)
			default:
				missing = append(missing, m)
			}
		}
		crt, key := exists(filepath.Join(dir, CACert)), exists(filepath.Join(dir, CAKey))
		var ca *signer
		switch {
		case !crt && key:
			return fmt.Errorf("certs: %s exists without %s: put the CA's certificate back, or remove its key", filepath.Join(dir, CAKey), CACert)
		case !crt && len(present) > 0:
			return fmt.Errorf("certs: %s has certificates (%s) but no %s: put the CA's certificate back", dir, present[0], CACert)
		case !crt:
			if ca, err = createCA(dir, Options{}); err != nil {
				return err
			}
			created = true
		}
		if len(missing) == 0 {
			return nil
		}
		if ca == nil {
			if ca, err = loadSigner(dir); err != nil {
				return err
			}
		}
		for _, m := range missing {
			if _, err := createLeaf(dir, ca, m.id, m.hosts, Options{}); err != nil {
				return err
			}
			created = true
		}
		return nil
	})
	return created, err
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return !errors.Is(err, os.ErrNotExist)
}
