package certs

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// ErrExists is wrapped by a create that would replace a file: nothing is overwritten unless
// Options.Overwrite.
var ErrExists = errors.New("certs: file exists")

// ErrNoCAKey is wrapped by a create that needs the CA's key (ca.key) to sign and cannot read
// it.
var ErrNoCAKey = errors.New("certs: no CA key")

// Problem says what is wrong with a certificate or a handshake.
type Problem int

// The problems an *Error names.
const (
	// ProblemOther is a certificate or TLS failure of no other kind.
	ProblemOther Problem = iota
	// ProblemNotTLS: the peer does not speak TLS (a process started without certificates).
	ProblemNotTLS
	// ProblemVersion: the peer does not speak TLS 1.3.
	ProblemVersion
	// ProblemNoCertificate: a certificate was required and none was sent.
	ProblemNoCertificate
	// ProblemExpired: a certificate's validity ended.
	ProblemExpired
	// ProblemNotYetValid: a certificate's validity has not begun (a clock is wrong).
	ProblemNotYetValid
	// ProblemUnknownCA: a certificate is not signed by a trusted CA.
	ProblemUnknownCA
	// ProblemWrongName: the peer's certificate names another process than the one dialed.
	ProblemWrongName
	// ProblemWrongRole: the peer's role may not do what it asked, or the dialed process has
	// another role than expected.
	ProblemWrongRole
	// ProblemNoIdentity: a certificate carries no valid kvtx name and role.
	ProblemNoIdentity
	// ProblemWrongUsage: a certificate may not be used for this side of a connection (a
	// client certificate that serves).
	ProblemWrongUsage
	// ProblemRefused: the peer refused this process's certificate; only its log says why.
	ProblemRefused
)

var problemNames = [...]string{"other", "not_tls", "tls_version", "no_certificate", "expired", "not_yet_valid",
	"unknown_ca", "wrong_name", "wrong_role", "no_identity", "wrong_usage", "refused"}

// String returns the problem's name in snake case ("unknown_ca"), for logs and metrics.
func (p Problem) String() string {
	if p < 0 || int(p) >= len(problemNames) {
		return fmt.Sprintf("problem(%d)", int(p))
	}
	return problemNames[p]
}

// Error is a certificate problem told in one line that says which problem it is, whose
// certificate, and what was expected. Explain turns tls and x509 errors into one.
type Error struct {
	// Problem is the kind of failure.
	Problem Problem
	// Remote is true when the peer found the problem, in this process's certificate or
	// handshake, and told it with a TLS alert.
	Remote bool
	// Err is the tls or x509 error explained, if any.
	Err error
	msg string
}

// Error returns the one-line explanation.
func (e *Error) Error() string { return e.msg }

// Unwrap returns the underlying tls or x509 error.
func (e *Error) Unwrap() error { return e.Err }

// dateFormat prints validity dates in UTC.
const dateFormat = time.RFC3339

func date(t time.Time) string { return t.UTC().Format(dateFormat) }

// describe names a certificate by its identity, or by its subject when it has none.
func describe(c *x509.Certificate) string {
	if c == nil {
		return "(unknown)"
	}
	if id, err := IdentityOf(c); err == nil {
		return id.String()
	}
	return fmt.Sprintf("%q", subjectName(c))
}

// subjectName is a certificate's CommonName, or its whole subject when it has none.
func subjectName(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	return c.Subject.String()
}

// certError explains an x509 verification failure of whose ("the server's") certificate
// leaf; trusted, when known, are the CAs this process trusts.
func certError(err error, whose string, leaf *x509.Certificate, trusted []*x509.Certificate, now time.Time) *Error {
	var inv x509.CertificateInvalidError
	var ua x509.UnknownAuthorityError
	switch {
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		c := inv.Cert
		if c == nil {
			c = leaf
		}
		if c == nil {
			return &Error{Problem: ProblemExpired, Err: err, msg: fmt.Sprintf("certs: %s certificate has expired or is not yet valid: %v", whose, err)}
		}
		subject := fmt.Sprintf("%s certificate %s", whose, describe(c))
		if c.IsCA {
			subject = fmt.Sprintf("the CA certificate %q that signed %s certificate", subjectName(c), whose)
		}
		if now.Before(c.NotBefore) {
			return &Error{Problem: ProblemNotYetValid, Err: err,
				msg: fmt.Sprintf("certs: %s is not valid until %s (it is %s here: is a clock wrong?)", subject, date(c.NotBefore), date(now))}
		}
		return &Error{Problem: ProblemExpired, Err: err, msg: fmt.Sprintf("certs: %s expired on %s", subject, date(c.NotAfter))}
	case errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage:
		c := inv.Cert
		if c == nil {
			c = leaf
		}
		return &Error{Problem: ProblemWrongUsage, Err: err,
			msg: fmt.Sprintf("certs: %s certificate %s is not for this side of a connection: its key usage lacks server or client authentication (a client certificate cannot serve)", whose, describe(c))}
	case errors.As(err, &ua):
		c := ua.Cert
		if c == nil {
			c = leaf
		}
		msg := fmt.Sprintf("certs: %s certificate %s is signed by %q, not by a CA this process trusts", whose, describe(c), issuerName(c))
		if len(trusted) > 0 {
			msg += fmt.Sprintf(" (%s)", quoteSubjects(trusted))
		}
		return &Error{Problem: ProblemUnknownCA, Err: err, msg: msg}
	}
	if leaf != nil {
		return &Error{Problem: ProblemOther, Err: err, msg: fmt.Sprintf("certs: %s certificate %s: %v", whose, describe(leaf), err)}
	}
	return &Error{Problem: ProblemOther, Err: err, msg: fmt.Sprintf("certs: %s certificate: %v", whose, err)}
}

func issuerName(c *x509.Certificate) string {
	if c == nil {
		return "(unknown)"
	}
	if c.Issuer.CommonName != "" {
		return c.Issuer.CommonName
	}
	return c.Issuer.String()
}

func quoteSubjects(cas []*x509.Certificate) string {
	s := ""
	for i, c := range cas {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%q", subjectName(c))
	}
	return s
}
