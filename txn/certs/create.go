package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Default validities.
const (
	// DefaultCALifetime is a CA's validity (10 years).
	DefaultCALifetime = 10 * 365 * 24 * time.Hour
	// DefaultLifetime is a process or client certificate's validity (1 year).
	DefaultLifetime = 365 * 24 * time.Hour
	// backdate starts every validity an hour before its creation, for clocks a little behind.
	backdate = time.Hour
)

// DefaultHosts are the names of a process certificate made without hosts.
var DefaultHosts = []string{"localhost", "127.0.0.1", "::1"}

// Options are how certificates are made. The zero value is the defaults.
type Options struct {
	// Lifetime is a process or client certificate's validity (default DefaultLifetime). It
	// may not outlast the CA.
	Lifetime time.Duration
	// CALifetime is a new CA's validity (default DefaultCALifetime).
	CALifetime time.Duration
	// Overwrite replaces existing files; without it a create refuses to touch any.
	Overwrite bool
	// Now is when validity begins (less an hour, for clocks a little behind); zero is the
	// clock. A time in the past makes certificates that are already expired, for tests.
	Now time.Time
}

func (o Options) withDefaults() (Options, error) {
	if o.Lifetime < 0 || o.CALifetime < 0 {
		return o, errors.New("certs: a lifetime must be positive")
	}
	if o.Lifetime == 0 {
		o.Lifetime = DefaultLifetime
	}
	if o.CALifetime == 0 {
		o.CALifetime = DefaultCALifetime
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	return o, nil
}

// CreateCA makes a new CA in dir (created, mode 0700, if missing): ca.crt and ca.key (mode
// 0600), an ECDSA P-256 key, valid for opts.CALifetime. Its subject names its creation date
// and a random tag, so that two CAs are told apart in errors. Existing files are refused
// unless opts.Overwrite; a new CA is not trusted by processes that load the old one.
func CreateCA(dir string, opts Options) error {
	return withDir(dir, func() error {
		_, err := createCA(dir, opts)
		return err
	})
}

// CreateProcess makes the certificate of the process named name with role RoleNode or
// RoleMaster (only "master" has role master), signed by dir's CA: NAME.crt and NAME.key,
// usable to serve and to dial (server and client authentication), with hosts as its DNS
// and IP names (DefaultHosts when empty). A host is a DNS name, optionally "*." first, or
// an IP address; not host:port.
func CreateProcess(dir, name, role string, hosts []string, opts Options) error {
	if role != RoleNode && role != RoleMaster {
		return fmt.Errorf("certs: a process's role is %s or %s, not %q", RoleNode, RoleMaster, role)
	}
	return withDir(dir, func() error {
		ca, err := loadSigner(dir)
		if err != nil {
			return err
		}
		_, err = createLeaf(dir, ca, Identity{Name: name, Role: role}, hosts, opts)
		return err
	})
}

// CreateClient makes the certificate of a client named name (role RoleClient, client
// authentication only: it cannot serve), signed by dir's CA: NAME.crt and NAME.key.
// DefaultClient's files are client.crt and client.key.
func CreateClient(dir, name string, opts Options) error {
	return withDir(dir, func() error {
		ca, err := loadSigner(dir)
		if err != nil {
			return err
		}
		_, err = createLeaf(dir, ca, Identity{Name: name, Role: RoleClient}, nil, opts)
		return err
	})
}

// signer is a CA that can sign: its certificate and key.
type signer struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func createCA(dir string, opts Options) (*signer, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	crt, key := filepath.Join(dir, CACert), filepath.Join(dir, CAKey)
	if err := checkAbsent(opts.Overwrite, crt, key); err != nil {
		return nil, err
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	sn, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject: pkix.Name{
			CommonName:   fmt.Sprintf("kvtx CA %s %06x", opts.Now.UTC().Format("2006-01-02"), new(big.Int).Rsh(sn, 100).Uint64()&0xffffff),
			Organization: []string{"kvtx"},
		},
		NotBefore:             opts.Now.Add(-backdate),
		NotAfter:              opts.Now.Add(opts.CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		return nil, fmt.Errorf("certs: create CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	if err := writePair(crt, key, der, priv, opts.Overwrite); err != nil {
		return nil, err
	}
	return &signer{cert: cert, key: priv}, nil
}

// createLeaf makes and writes the certificate of id, signed by ca.
func createLeaf(dir string, ca *signer, id Identity, hosts []string, opts Options) (*x509.Certificate, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := checkIdentity(id); err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject: pkix.Name{
			CommonName:         id.Name,
			OrganizationalUnit: []string{id.Role},
			Organization:       []string{"kvtx"},
		},
		NotBefore:             opts.Now.Add(-backdate),
		NotAfter:              opts.Now.Add(opts.Lifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	if id.Role != RoleClient {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		if len(hosts) == 0 {
			hosts = DefaultHosts
		}
		if tmpl.DNSNames, tmpl.IPAddresses, err = parseHosts(hosts); err != nil {
			return nil, err
		}
	}
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		return nil, fmt.Errorf("certs: %s's certificate would be valid until %s, after its CA %q expires (%s): ask for a shorter lifetime, or make a new CA",
			id.Name, date(tmpl.NotAfter), subjectName(ca.cert), date(ca.cert.NotAfter))
	}
	files := FilesFor(dir, id.Name)
	if err := checkAbsent(opts.Overwrite, files.Cert, files.Key); err != nil {
		return nil, err
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return nil, err
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, priv.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("certs: create %s: %w", id, err)
	}
	if err := writePair(files.Cert, files.Key, der, priv, opts.Overwrite); err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// writePair writes a key (first) and its certificate. If the certificate cannot be linked in
// after a new key was, the key is removed again: no create leaves half a pair it made.
func writePair(crtPath, keyPath string, der []byte, key *ecdsa.PrivateKey, overwrite bool) error {
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if err := writeFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), keyMode, overwrite); err != nil {
		return err
	}
	if err := writeFile(crtPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), certMode, overwrite); err != nil {
		if !overwrite {
			os.Remove(keyPath)
		}
		return err
	}
	return nil
}

// loadSigner reads dir's CA: the certificate of ca.crt whose public key is ca.key's.
func loadSigner(dir string) (*signer, error) {
	keyPath := filepath.Join(dir, CAKey)
	data, err := os.ReadFile(keyPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist: signing needs the CA's key (make a CA first, or copy its key here)", ErrNoCAKey, keyPath)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoCAKey, err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("%w: %s holds no PEM key", ErrNoCAKey, keyPath)
	}
	var key crypto.Signer
	switch b.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrNoCAKey, keyPath, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%w: %s: a %T cannot sign", ErrNoCAKey, keyPath, k)
		}
		key = s
	case "EC PRIVATE KEY":
		if key, err = x509.ParseECPrivateKey(b.Bytes); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrNoCAKey, keyPath, err)
		}
	default:
		return nil, fmt.Errorf("%w: %s holds a %q block, not a private key", ErrNoCAKey, keyPath, b.Type)
	}
	cas, err := readCAs(filepath.Join(dir, CACert))
	if err != nil {
		return nil, err
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	for _, c := range cas {
		if pub, ok := c.PublicKey.(equaler); ok && pub.Equal(key.Public()) {
			return &signer{cert: c, key: key}, nil
		}
	}
	return nil, fmt.Errorf("%w: %s is not the key of any certificate in %s", ErrNoCAKey, keyPath, filepath.Join(dir, CACert))
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// parseHosts splits hosts into DNS names and IP addresses, refusing what is neither.
func parseHosts(hosts []string) ([]string, []net.IP, error) {
	var dns []string
	var ips []net.IP
	seen := map[string]bool{}
	for _, h := range hosts {
		if seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
			continue
		}
		if err := checkDNSName(h); err != nil {
			return nil, nil, err
		}
		dns = append(dns, h)
	}
	return dns, ips, nil
}

func checkDNSName(h string) error {
	if _, port, err := net.SplitHostPort(h); err == nil {
		return fmt.Errorf("certs: bad host %q: give the host without its port (%s)", h, port)
	}
	name := strings.TrimPrefix(h, "*.")
	if name == "" || len(name) > 253 {
		return fmt.Errorf("certs: bad host %q: want a DNS name or an IP address", h)
	}
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("certs: bad host %q: want a DNS name or an IP address", h)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("certs: bad host %q: want a DNS name or an IP address", h)
			}
		}
	}
	return nil
}
