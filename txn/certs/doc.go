// Package certs makes and loads the certificates of kvtx's mutual TLS: every link (client to
// master, master to node, node to master, node to node) is TLS 1.3 with a certificate on both
// sides, signed by the cluster's CA, and a process's identity, its name and role, is read from
// the certificate its peer verified, never from the protocol's hello. It uses only crypto/tls
// and crypto/x509. `kvctl cert` is its command line (cmd/kvctl/README.md).
//
// # Files
//
// A certificate directory holds ca.crt (the CA certificates every process trusts; several
// during a CA rotation), ca.key (read only by the create functions, which sign with it; it
// can live elsewhere once the certificates are made), and NAME.crt and NAME.key for each
// process (master.crt, node1.crt, ...) and client (client.crt for DefaultClient). FilesFor
// names them. Keys are ECDSA P-256 in PKCS #8 PEM, mode 0600. Every file is written to a
// temporary file, synced, linked into place and its directory synced, so that it appears whole
// or not at all; an existing file is never replaced unless Options.Overwrite. Creates hold a
// lock on the directory, so concurrent ones make one CA and one certificate per name.
//
// # Identity
//
// A certificate's Subject CommonName is its name and its one Subject OrganizationalUnit its
// role: RoleMaster (the certificate named "master", and only it), RoleNode or RoleClient
// (IdentityOf). Node and master certificates are for server and client authentication (they
// dial each other) and carry DNS and IP names (default localhost, 127.0.0.1, ::1); client
// certificates are for client authentication only, so crypto/x509 refuses one that serves.
// Validity is 10 years for a CA and 1 year for the rest by default, from an hour before
// creation; a certificate may not outlast its CA.
//
// # Handshakes
//
// A Loader holds a process's key pair and CA pool and hands them to crypto/tls through
// callbacks, so that Reload (on SIGHUP, or on a handshake that sees a file's modification
// time change, at most every LoaderOptions.CheckEvery) swaps them for later handshakes
// without a restart; invalid new files (a key that does not match, another identity, an
// expired certificate, one the CA does not sign) are logged and the old ones kept.
//
// A listener uses ServerConfig: crypto/tls requires and verifies the client's certificate
// against the CA pool (RequireAndVerifyClientCert), then the certificate must carry an
// identity (and, if asked, one of the given roles). A dialer uses ClientConfig(name), where
// name is the process it means to reach ("master" when a node or a client dials the master,
// "node2" when the master dials node2): the server's certificate must chain to the CA pool,
// allow server use, and carry exactly that name and its role (master for "master", node
// otherwise). Both are TLS 1.3 only and use no session tickets, so every connection is
// verified in full at its handshake. After the handshake PeerIdentity(conn.ConnectionState())
// gives the peer's name and role, and RequireRole checks what it may do (node-level requests
// only from the master and nodes).
//
// The dialer checks the identity, not the host: it does not match the address it dialed
// against the certificate's DNS and IP names. Processes dial each other at the addresses of
// the cluster config (or names advertised across machines, behind NAT, in containers, through
// a proxy), and each link already knows which process it means to reach; a private CA signs
// only the cluster's certificates, so a certificate that chains to it and names "node2" is
// node2's wherever it answers. Checking hosts as well would make every address change, new
// DNS name or IP dial a certificate reissue (the errors etcd's users report most, etcd#7912),
// and stop nothing the name check does not. The DNS and IP names are still written, for tools
// that check hosts (openssl s_client, curl).
//
// # Errors
//
// Every refusal is an *Error whose Problem says which one and whose one line says what was
// expected: the certificate expired (with the date), is signed by an unknown CA (naming it and
// the CA expected), names another process (expected and got), has the wrong role, or no
// certificate was sent. Explain turns what crypto/tls returns into one; Loader.Explain also
// names this process's CA and its own certificate's expiry. In TLS 1.3 a client finishes its
// handshake before the server has checked the client's certificate: a refused dialer learns
// it, as a TLS alert that Explain reads, at its first read. A server that refuses a handshake
// should drain the connection briefly before closing it, or the peer may see a reset instead
// of the alert.
package certs
