package certs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultCheckEvery is how often, at most, a Loader looks at its files' modification times
// (on a handshake) to reload them when they changed.
const DefaultCheckEvery = 5 * time.Second

// expiryWarning is how long before its expiry a loaded certificate is logged as expiring.
const expiryWarning = 30 * 24 * time.Hour

// LoaderOptions configure a Loader. The zero value is the defaults.
type LoaderOptions struct {
	// Logger receives reloads and failed reloads (default slog.Default()).
	Logger *slog.Logger
	// CheckEvery is how often, at most, a handshake looks whether the files changed and
	// reloads them if so (default DefaultCheckEvery); negative: never, only Reload.
	CheckEvery time.Duration
}

// Loader holds a process's certificate, key and CA pool, loaded from Files, and serves them
// to TLS handshakes through callbacks, so that Reload swaps them without a restart and
// without touching established connections. It is safe for concurrent use.
type Loader struct {
	files Files
	log   *slog.Logger
	every time.Duration
	state atomic.Pointer[state]
	// lastCheck is when a handshake last looked at the files (Unix nanoseconds).
	lastCheck atomic.Int64

	mu   sync.Mutex // serializes reloads; guards seen
	seen [3]os.FileInfo
}

// state is one loaded, verified set of files; it never changes once built.
type state struct {
	files Files
	cert  tls.Certificate
	leaf  *x509.Certificate
	cas   []*x509.Certificate
	pool  *x509.CertPool
	id    Identity
}

// NewLoader loads and checks files: the key must match the certificate, the certificate must
// carry a kvtx identity, be valid now and be signed by a CA in the CA file (which may hold
// several, during a CA rotation). A process whose own certificate is expired does not start.
func NewLoader(files Files, opts LoaderOptions) (*Loader, error) {
	l := &Loader{files: files, log: opts.Logger, every: opts.CheckEvery}
	if l.log == nil {
		l.log = slog.Default()
	}
	if l.every == 0 {
		l.every = DefaultCheckEvery
	}
	l.seen = statFiles(files)
	s, err := load(files, time.Now())
	if err != nil {
		return nil, err
	}
	l.state.Store(s)
	l.lastCheck.Store(time.Now().UnixNano())
	l.warnExpiry(s)
	return l, nil
}

// Identity returns the identity of this process's certificate. Reload never changes it.
func (l *Loader) Identity() Identity { return l.state.Load().id }

// Certificate returns this process's current certificate.
func (l *Loader) Certificate() *x509.Certificate { return l.state.Load().leaf }

// Loaded returns this process's current certificate and the CA certificates it trusts, both
// of one load: a Reload between two calls never mixes them. The caller must not modify them.
func (l *Loader) Loaded() (cert *x509.Certificate, cas []*x509.Certificate) {
	s := l.state.Load()
	return s.leaf, append([]*x509.Certificate(nil), s.cas...)
}

// Files returns the files the Loader reads.
func (l *Loader) Files() Files { return l.files }

// Reload reads the files again and, if they pass every check of NewLoader and carry the same
// identity, serves them to every later handshake. Otherwise it keeps the certificates it
// has, logs why and returns the error. A process calls it on SIGHUP; handshakes also call it
// when they see a file changed (at most every CheckEvery).
func (l *Loader) Reload() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reloadLocked()
}

// reloadLocked is Reload; l.mu must be held.
func (l *Loader) reloadLocked() error {
	l.seen = statFiles(l.files)
	cur := l.state.Load()
	next, err := load(l.files, time.Now())
	if err == nil && next.id != cur.id {
		err = &Error{Problem: ProblemWrongName,
			msg: fmt.Sprintf("certs: the new %s is %s, but this process is %s", l.files.Cert, next.id, cur.id)}
	}
	if err != nil {
		l.log.Error("certs: reload failed, keeping the current certificates", "err", err,
			"serial", serial(cur.leaf), "not_after", date(cur.leaf.NotAfter))
		return err
	}
	l.state.Store(next)
	l.log.Info("certs: reloaded", "identity", next.id.String(), "serial", serial(next.leaf),
		"not_after", date(next.leaf.NotAfter), "cas", len(next.cas))
	l.warnExpiry(next)
	return nil
}

// maybeReload reloads the files if CheckEvery has passed since the last look and one of them
// changed since the last (re)load or failed attempt. It never waits for a reload under way.
func (l *Loader) maybeReload() {
	if l.every < 0 {
		return
	}
	now := time.Now().UnixNano()
	if now-l.lastCheck.Load() < int64(l.every) || !l.mu.TryLock() {
		return
	}
	defer l.mu.Unlock()
	l.lastCheck.Store(now)
	if changed(statFiles(l.files), l.seen) {
		_ = l.reloadLocked() // logged; the current certificates stay
	}
}

func (l *Loader) warnExpiry(s *state) {
	if left := time.Until(s.leaf.NotAfter); left < expiryWarning {
		l.log.Warn("certs: this process's certificate expires soon", "identity", s.id.String(),
			"file", s.files.Cert, "not_after", date(s.leaf.NotAfter), "left", left.Round(time.Minute).String())
	}
}

// ServerConfig returns the configuration of a listener: TLS 1.3 only, a client certificate
// required and verified against the current CA pool (by crypto/tls), and a kvtx identity
// required of it. With roles, a peer of another role is refused during the handshake;
// without, any role is let in and the caller checks with RequireRole. Session tickets are
// off, so every connection is verified in full against the certificates loaded at its
// handshake.
func (l *Loader) ServerConfig(roles ...string) *tls.Config {
	roles = append([]string(nil), roles...)
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		ClientAuth:             tls.RequireAndVerifyClientCert,
		SessionTicketsDisabled: true,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			l.maybeReload()
			return l.state.Load().serverConfig(roles), nil
		},
	}
}

func (s *state) serverConfig(roles []string) *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{s.cert},
		ClientAuth:             tls.RequireAndVerifyClientCert,
		ClientCAs:              s.pool,
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return &Error{Problem: ProblemNoCertificate, msg: "certs: the client sent no certificate"}
			}
			id, err := IdentityOf(cs.PeerCertificates[0])
			if err != nil || len(roles) == 0 {
				return err
			}
			return RequireRole(id, roles...)
		},
	}
}

// ClientConfig returns the configuration of a dial to the process named serverName
// ("master", "node2"): TLS 1.3 only, this process's certificate presented, and the server's
// certificate verified against the current CA pool, for server use, and required to carry
// exactly that name and its role (master for "master", node for any other name). The host
// dialed is not matched against the certificate's DNS and IP names: the identity is, so any
// address that reaches the process works (see the package doc). ServerName is set to
// serverName (sent as SNI).
func (l *Loader) ClientConfig(serverName string) *tls.Config {
	want := Identity{Name: serverName, Role: expectedRole(serverName)}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		// The chain and the identity are verified by VerifyConnection below, against the CA
		// pool loaded at this handshake; crypto/tls still checks that the server holds the
		// certificate's key.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			l.maybeReload()
			return l.state.Load().verifyServer(cs.PeerCertificates, want, time.Now())
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			s := l.state.Load()
			if time.Now().After(s.leaf.NotAfter) {
				return nil, &Error{Problem: ProblemExpired,
					msg: fmt.Sprintf("certs: this process's certificate %s (%s) expired on %s", s.id, s.files.Cert, date(s.leaf.NotAfter))}
			}
			return &s.cert, nil
		},
	}
}

// verifyServer checks a server's certificates (leaf first) as ClientConfig promises.
func (s *state) verifyServer(certs []*x509.Certificate, want Identity, now time.Time) error {
	if len(certs) == 0 {
		return &Error{Problem: ProblemNoCertificate, msg: "certs: the server sent no certificate"}
	}
	leaf := certs[0]
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{Roots: s.pool, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if _, err := leaf.Verify(opts); err != nil {
		return certError(err, "the server's", leaf, s.cas, now)
	}
	id, err := IdentityOf(leaf)
	if err != nil {
		return err
	}
	if id.Name != want.Name {
		return &Error{Problem: ProblemWrongName,
			msg: fmt.Sprintf("certs: dialed %q, but the server's certificate is %s", want.Name, id)}
	}
	if id.Role != want.Role {
		return &Error{Problem: ProblemWrongRole,
			msg: fmt.Sprintf("certs: dialed %q expecting role %s, but the server's certificate is %s", want.Name, want.Role, id)}
	}
	return nil
}

// load reads and checks files as NewLoader says.
func load(files Files, now time.Time) (*state, error) {
	cas, err := readCAs(files.CA)
	if err != nil {
		return nil, err
	}
	pair, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		if strings.Contains(err.Error(), "does not match") {
			return nil, fmt.Errorf("certs: %s does not hold the key of %s: %w", files.Key, files.Cert, err)
		}
		return nil, fmt.Errorf("certs: load %s and %s: %w", files.Cert, files.Key, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("certs: parse %s: %w", files.Cert, err)
		}
	}
	id, err := IdentityOf(leaf)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, files.Cert)
	}
	s := &state{files: files, cert: pair, leaf: leaf, cas: cas, pool: x509.NewCertPool(), id: id}
	for _, c := range cas {
		s.pool.AddCert(c)
	}
	usages := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if id.Role != RoleClient {
		usages = append(usages, x509.ExtKeyUsageServerAuth)
	}
	for _, u := range usages {
		opts := x509.VerifyOptions{Roots: s.pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{u}}
		if _, err := leaf.Verify(opts); err != nil {
			ce := certError(err, "this process's", leaf, cas, now)
			ce.msg += fmt.Sprintf(" (%s, CA file %s)", files.Cert, files.CA)
			return nil, ce
		}
	}
	return s, nil
}

// readCAs reads every certificate of a CA file; each must be a CA.
func readCAs(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: read CA: %w", err)
	}
	var cas []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certs: parse %s: %w", path, err)
		}
		if !c.IsCA {
			return nil, fmt.Errorf("certs: %s holds %q, which is not a CA certificate", path, subjectName(c))
		}
		cas = append(cas, c)
	}
	if len(cas) == 0 {
		return nil, fmt.Errorf("certs: %s holds no PEM certificate", path)
	}
	return cas, nil
}

// statFiles returns the CA, certificate and key files' information (nil for one that cannot
// be read).
func statFiles(f Files) [3]os.FileInfo {
	var out [3]os.FileInfo
	for i, p := range []string{f.CA, f.Cert, f.Key} {
		if fi, err := os.Stat(p); err == nil {
			out[i] = fi
		}
	}
	return out
}

// changed reports whether any file differs: replaced (another inode), resized or touched.
func changed(now, before [3]os.FileInfo) bool {
	for i := range now {
		a, b := now[i], before[i]
		switch {
		case a == nil && b == nil:
		case a == nil || b == nil:
			return true
		case !os.SameFile(a, b) || !a.ModTime().Equal(b.ModTime()) || a.Size() != b.Size():
			return true
		}
	}
	return false
}

func serial(c *x509.Certificate) string { return fmt.Sprintf("%x", c.SerialNumber) }
