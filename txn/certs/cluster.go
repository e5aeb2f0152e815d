package certs

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"

	"github.com/kvtx/kvtx/txn"
)

// member is one certificate a cluster needs.
type member struct {
	id    Identity
	hosts []string
}

// members lists the certificates of cfg: the master's, each node's (with the hosts it is
// dialled and listens at), and DefaultClient's.
func members(cfg txn.Config) ([]member, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	out := []member{{Identity{txn.MasterName, RoleMaster}, hostsFor(cfg.Master)}}
	for _, n := range cfg.Nodes {
		if n.Name == DefaultClient {
			return nil, fmt.Errorf("certs: node %q would share its files with the default client: rename the node", n.Name)
		}
		out = append(out, member{Identity{n.Name, RoleNode}, hostsFor(n)})
	}
	out = append(out, member{id: Identity{DefaultClient, RoleClient}})
	for _, m := range out {
		if err := checkIdentity(m.id); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// hostsFor returns the names of process p's certificate: the host of its advertise address,
// then that of its listen address unless it is a wildcard (which no one dials), then that of
// its metrics address (a scraper over tls.metrics that checks hosts dials it), and
// DefaultHosts as well when either is a loopback address or the listen address is a
// wildcard (which binds the loopback interface too). Dialers check the certificate's
// identity, not these names (see the package doc); they are for tools that check hosts.
func hostsFor(p txn.Process) []string {
	var hosts []string
	loopback := false
	addHost := func(addr string) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return
		}
		if txn.IsWildcardHost(host) {
			loopback = true
			return
		}
		if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
			loopback = true
		}
		if !slices.Contains(hosts, host) {
			hosts = append(hosts, host)
		}
	}
	addHost(p.Advertise)
	addHost(p.Listen)
	if p.Metrics != "" {
		addHost(p.Metrics)
	}
	if loopback || len(hosts) == 0 {
		for _, h := range DefaultHosts {
			if !slices.Contains(hosts, h) {
				hosts = append(hosts, h)
			}
		}
	}
	return hosts
}

// Init makes every certificate of the cluster cfg in dir: a new CA, one certificate per
// process (the master's and each node's, with the hosts of its advertise and listen
// addresses among its names, as hostsFor says) and DefaultClient's. If any of these files exists, nothing is written, unless
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
