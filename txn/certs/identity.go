package certs

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"regexp"
	"strings"

	"github.com/kvtx/kvtx/txn"
)

// The roles a certificate can carry.
const (
	// RoleMaster is the master's role; only the certificate named "master" carries it.
	RoleMaster = "master"
	// RoleNode is a shard node's role.
	RoleNode = "node"
	// RoleClient is a client's role (kvctl, an application); a client certificate cannot serve.
	RoleClient = "client"
)

// DefaultClient is the name of the client certificate that Init and EnsureDev make, in
// client.crt and client.key.
const DefaultClient = "client"

// caName is the base name of the CA's files (ca.crt, ca.key); no process or client may take it.
const caName = "ca"

// Identity is who a certificate says its holder is: a name (master, node1, a client's name)
// and a role (RoleMaster, RoleNode or RoleClient).
type Identity struct {
	Name string
	Role string
}

// String returns `name (role)`.
func (id Identity) String() string { return fmt.Sprintf("%s (%s)", id.Name, id.Role) }

// namePattern is what a process or client name may be: it is also a file name in the
// certificate directory.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// checkName refuses a name that cannot be a certificate's name and file name.
func checkName(name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("certs: bad name %q: want 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	if name == caName {
		return fmt.Errorf("certs: bad name %q: it is the CA's file name", name)
	}
	return nil
}

// checkIdentity refuses an identity that no certificate of this package can carry: a bad
// name, an unknown role, or "master" with another role than master (and the reverse).
func checkIdentity(id Identity) error {
	if err := checkName(id.Name); err != nil {
		return err
	}
	switch id.Role {
	case RoleMaster, RoleNode, RoleClient:
	default:
		return fmt.Errorf("certs: %q has unknown role %q (want %s, %s or %s)", id.Name, id.Role, RoleMaster, RoleNode, RoleClient)
	}
	if (id.Name == txn.MasterName) != (id.Role == RoleMaster) {
		return fmt.Errorf("certs: %s: only the certificate named %q has role %s", id, txn.MasterName, RoleMaster)
	}
	return nil
}

// IdentityOf reads the identity a certificate carries: its Subject CommonName is the name and
// its one Subject OrganizationalUnit the role. It checks the form only (a known role, a valid
// name, "master" if and only if role master), not who signed the certificate.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, &Error{Problem: ProblemNoIdentity, msg: "certs: no certificate"}
	}
	ous := cert.Subject.OrganizationalUnit
	if len(ous) != 1 {
		return Identity{}, &Error{Problem: ProblemNoIdentity,
			msg: fmt.Sprintf("certs: certificate %q carries no kvtx identity: it needs exactly one OrganizationalUnit (the role), it has %d", cert.Subject.String(), len(ous))}
	}
	id := Identity{Name: cert.Subject.CommonName, Role: ous[0]}
	if err := checkIdentity(id); err != nil {
		return Identity{}, &Error{Problem: ProblemNoIdentity, Err: err,
			msg: fmt.Sprintf("certs: certificate %q carries no valid kvtx identity: %s", cert.Subject.String(), strings.TrimPrefix(err.Error(), "certs: "))}
	}
	return id, nil
}

// PeerIdentity returns the identity of the peer of a completed handshake. It verifies
// nothing itself: the identity is the peer's only on a connection made with a Loader's
// ServerConfig or ClientConfig, whose handshake verified the chain and the identity.
func PeerIdentity(cs tls.ConnectionState) (Identity, error) {
	if !cs.HandshakeComplete {
		return Identity{}, &Error{Problem: ProblemNoCertificate, msg: "certs: the handshake is not complete"}
	}
	if len(cs.PeerCertificates) == 0 {
		return Identity{}, &Error{Problem: ProblemNoCertificate, msg: "certs: the peer sent no certificate"}
	}
	return IdentityOf(cs.PeerCertificates[0])
}

// RequireRole returns nil if id has one of roles, else an *Error (ProblemWrongRole) that
// names the identity and the roles needed.
func RequireRole(id Identity, roles ...string) error {
	for _, r := range roles {
		if id.Role == r {
			return nil
		}
	}
	return &Error{Problem: ProblemWrongRole,
		msg: fmt.Sprintf("certs: %q has role %s, but this needs role %s", id.Name, id.Role, orList(roles))}
}

// expectedRole is the role of the process named name: master for "master", else node.
func expectedRole(name string) string {
	if name == txn.MasterName {
		return RoleMaster
	}
	return RoleNode
}

func orList(ss []string) string {
	switch len(ss) {
	case 0:
		return "(none)"
	case 1:
		return ss[0]
	}
	return strings.Join(ss[:len(ss)-1], ", ") + " or " + ss[len(ss)-1]
}
