package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Explain turns a handshake's tls or x509 error into an *Error whose one line says which
// problem it is: no certificate, expired (with the date), signed by an unknown CA (naming it),
// wrong name (expected and got), wrong role, not TLS, or refused by the peer. An error that
// holds an *Error already, or is not about TLS (a timeout, a reset), is returned unchanged;
// nil stays nil. Loader.Explain says more (the CA this process trusts, its own
// certificate's dates).
func Explain(err error) error { return explain(err, nil, time.Now()) }

// Explain is the package's Explain with what the Loader knows: the CAs this process trusts
// (named when a peer's CA is unknown) and its own certificate (its expiry, when a peer
// refuses it).
func (l *Loader) Explain(err error) error { return explain(err, l.state.Load(), time.Now()) }

// Refusal returns err explained (Explain) if it is a certificate or TLS problem, an *Error,
// and nil otherwise: what client.Options.ExplainTLS takes.
func Refusal(err error) error { return refusal(Explain(err)) }

// Refusal is the package's Refusal with what the Loader knows, as its Explain.
func (l *Loader) Refusal(err error) error { return refusal(l.Explain(err)) }

func refusal(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return nil
}

// Peer alerts, as crypto/tls prints them ("remote error: tls: bad certificate").
const (
	alertCertificateRequired = "tls: certificate required"
	alertUnknownCA           = "tls: unknown certificate authority"
	alertExpired             = "tls: expired certificate"
	alertBadCertificate      = "tls: bad certificate"
	alertVersion             = "tls: protocol version not supported"
	alertHandshakeFailure    = "tls: handshake failure"
)

func explain(err error, s *state, now time.Time) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	var trusted []*x509.Certificate
	if s != nil {
		trusted = s.cas
	}
	var inv x509.CertificateInvalidError
	var ua x509.UnknownAuthorityError
	var cve *tls.CertificateVerificationError
	var rh tls.RecordHeaderError
	var op *net.OpError
	switch {
	case errors.As(err, &inv), errors.As(err, &ua):
		var leaf *x509.Certificate
		if errors.As(err, &cve) && len(cve.UnverifiedCertificates) > 0 {
			leaf = cve.UnverifiedCertificates[0]
		}
		return certError(err, "the peer's", leaf, trusted, now)
	case errors.As(err, &rh):
		return &Error{Problem: ProblemNotTLS, Err: err,
			msg: "certs: the peer does not speak TLS (is it running without certificates, or is it not a kvtx process?)"}
	case errors.As(err, &op) && op.Op == "remote error" && op.Err != nil:
		if r := remoteAlert(op.Err.Error(), s, now); r != nil {
			r.Err = err
			return r
		}
	case strings.Contains(err.Error(), "tls: client didn't provide a certificate"):
		return &Error{Problem: ProblemNoCertificate, Err: err,
			msg: "certs: the client sent no certificate: every connection must present one signed by the cluster's CA"}
	case strings.Contains(err.Error(), "tls: client offered only unsupported versions"),
		strings.Contains(err.Error(), "tls: server selected unsupported protocol version"):
		return &Error{Problem: ProblemVersion, Err: err, msg: "certs: the peer does not speak TLS 1.3, which every kvtx link requires"}
	}
	return err
}

// remoteAlert explains an alert the peer sent about this process's certificate.
func remoteAlert(alert string, s *state, now time.Time) *Error {
	own := "this process's certificate"
	if s != nil {
		own = fmt.Sprintf("this process's certificate %s (%s)", s.id, s.files.Cert)
	}
	switch alert {
	case alertCertificateRequired:
		return &Error{Problem: ProblemNoCertificate, Remote: true,
			msg: "certs: the peer requires a client certificate, and this process sent none"}
	case alertUnknownCA:
		msg := fmt.Sprintf("certs: the peer does not trust the CA that signed %s", own)
		if s != nil {
			msg += fmt.Sprintf(" (%q): it trusts another CA", issuerName(s.leaf))
		}
		return &Error{Problem: ProblemUnknownCA, Remote: true, msg: msg}
	case alertExpired:
		msg := fmt.Sprintf("certs: the peer says %s has expired", own)
		switch {
		case s != nil && now.After(s.leaf.NotAfter):
			msg += fmt.Sprintf(": it expired on %s", date(s.leaf.NotAfter))
		case s != nil:
			msg += fmt.Sprintf(", but it is valid from %s to %s here: is the peer's clock wrong?", date(s.leaf.NotBefore), date(s.leaf.NotAfter))
		}
		return &Error{Problem: ProblemExpired, Remote: true, msg: msg}
	case alertBadCertificate:
		msg := fmt.Sprintf("certs: the peer refused %s; the peer's log says why (a name or role it does not accept, no kvtx identity)", own)
		if s != nil && now.After(s.leaf.NotAfter) {
			msg = fmt.Sprintf("certs: the peer refused %s, which expired on %s", own, date(s.leaf.NotAfter))
			return &Error{Problem: ProblemExpired, Remote: true, msg: msg}
		}
		return &Error{Problem: ProblemRefused, Remote: true, msg: msg}
	case alertVersion:
		return &Error{Problem: ProblemVersion, Remote: true, msg: "certs: the peer does not speak TLS 1.3, which every kvtx link requires"}
	case alertHandshakeFailure:
		return &Error{Problem: ProblemOther, Remote: true, msg: "certs: the peer refused the handshake (no TLS 1.3 parameters in common)"}
	}
	return nil
}
