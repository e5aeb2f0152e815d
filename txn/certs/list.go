package certs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// RoleCA is the role List gives a CA certificate.
const RoleCA = "ca"

// Entry is one certificate of a directory, as List reads it.
type Entry struct {
	// File is the certificate's file.
	File string `json:"file"`
	// Name and Role are its identity (RoleCA and the subject for a CA; empty when it has none).
	Name string `json:"name"`
	Role string `json:"role"`
	// Hosts are its DNS and IP names.
	Hosts []string `json:"hosts,omitempty"`
	// Serial is its serial number, in hex.
	Serial string `json:"serial"`
	// Issuer is the CommonName of the CA that signed it.
	Issuer string `json:"issuer"`
	// NotBefore and NotAfter bound its validity.
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// Problem is why the certificate would not load ("" when it would): expired, not signed
	// by ca.crt, no key file, a key that does not match, no kvtx identity.
	Problem string `json:"problem,omitempty"`
}

// List reads every certificate file (*.crt) of dir, ca.crt first, then by name, and checks
// each as a process loading it would, with its key and dir's ca.crt, at now.
func List(dir string, now time.Time) ([]Entry, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".crt") {
			names = append(names, filepath.Join(dir, e.Name()))
		}
	}
	sort.Slice(names, func(i, j int) bool {
		ci, cj := filepath.Base(names[i]) == CACert, filepath.Base(names[j]) == CACert
		if ci != cj {
			return ci
		}
		return names[i] < names[j]
	})
	cas, caErr := readCAs(filepath.Join(dir, CACert))
	var out []Entry
	for _, path := range names {
		if filepath.Base(path) == CACert {
			if caErr != nil {
				out = append(out, Entry{File: path, Role: RoleCA, Problem: strings.TrimPrefix(caErr.Error(), "certs: ")})
			}
			for _, c := range cas {
				e := entryOf(path, c)
				e.Role, e.Name = RoleCA, subjectName(c)
				if now.After(c.NotAfter) {
					e.Problem = "expired"
				}
				out = append(out, e)
			}
			continue
		}
		out = append(out, listLeaf(dir, path, now))
	}
	return out, nil
}

func listLeaf(dir, path string, now time.Time) Entry {
	data, err := os.ReadFile(path)
	if err != nil {
		return Entry{File: path, Problem: err.Error()}
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return Entry{File: path, Problem: "not a PEM certificate"}
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return Entry{File: path, Problem: err.Error()}
	}
	e := entryOf(path, c)
	name := strings.TrimSuffix(filepath.Base(path), ".crt")
	files := FilesFor(dir, name)
	if _, err := load(files, now); err != nil {
		e.Problem = problemOf(err, files)
	} else if e.Name != name {
		e.Problem = fmt.Sprintf("named %s but in %s", e.Name, filepath.Base(path))
	}
	return e
}

// problemOf says in a few words why files would not load.
func problemOf(err error, files Files) string {
	var ce *Error
	if !exists(files.Key) {
		return "no key file " + filepath.Base(files.Key)
	}
	if errors.As(err, &ce) {
		switch ce.Problem {
		case ProblemExpired:
			return "expired"
		case ProblemNotYetValid:
			return "not yet valid"
		case ProblemUnknownCA:
			return "not signed by " + CACert
		case ProblemNoIdentity:
			return "no kvtx identity"
		case ProblemWrongUsage:
			return "wrong key usage"
		}
	}
	if _, perr := tls.LoadX509KeyPair(files.Cert, files.Key); perr != nil {
		return filepath.Base(files.Key) + " does not match"
	}
	return strings.TrimPrefix(err.Error(), "certs: ")
}

func entryOf(path string, c *x509.Certificate) Entry {
	e := Entry{File: path, Serial: serial(c), Issuer: issuerName(c), NotBefore: c.NotBefore, NotAfter: c.NotAfter}
	if id, err := IdentityOf(c); err == nil {
		e.Name, e.Role = id.Name, id.Role
	}
	e.Hosts = append(e.Hosts, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		e.Hosts = append(e.Hosts, ip.String())
	}
	return e
}
