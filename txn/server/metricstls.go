package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/certs"
)

// metricsOverTLS reports whether the metrics endpoint serves TLS: when cfg.TLS.Metrics is set
// and the process has its certificates (cl). Under --insecure (cl nil) it is plain HTTP,
// logged at WARN.
func metricsOverTLS(cfg txn.Config, cl *certs.Loader, log *slog.Logger) bool {
	if cfg.TLS.Metrics && cl == nil {
		log.Warn("INSECURE: tls.metrics is set, but the metrics endpoint serves plain HTTP (--insecure)")
	}
	return cfg.TLS.Metrics && cl != nil
}

// metricsLingerTimeout bounds how long a closed metrics connection keeps reading what the peer
// still sends, so that the peer reads the TLS alert of a refused handshake (or the 400 a
// plain-HTTP request gets) before the close, not a reset that discards it.
const metricsLingerTimeout = 500 * time.Millisecond

// metricsTLSListener makes every connection of l TLS with cfg, a Loader's ServerConfig: TLS
// 1.3, the process's current certificate, and a client certificate signed by a CA of the
// current CA file, carrying a kvtx identity of any role, required. cfg reads the Loader at
// every handshake, so a reload (SIGHUP, or a file seen changed) applies to the next scrape.
// net/http does the handshake (bounded by the server's read timeouts) and answers a plain-HTTP
// request with a 400 that says it reached an HTTPS server.
func metricsTLSListener(l net.Listener, cfg *tls.Config) net.Listener {
	return &tlsListener{Listener: l, cfg: cfg}
}

type tlsListener struct {
	net.Listener
	cfg *tls.Config
}

// Accept implements net.Listener.
func (l *tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return tls.Server(&lingerConn{Conn: c}, l.cfg), nil
}

// lingerConn closes its write side at Close and reads for metricsLingerTimeout more (in the
// background) before it closes the socket.
type lingerConn struct {
	net.Conn
	once sync.Once
}

// Close implements net.Conn; it returns at once.
func (c *lingerConn) Close() error {
	var err error
	c.once.Do(func() {
		tcp, ok := c.Conn.(*net.TCPConn)
		if !ok {
			err = c.Conn.Close()
			return
		}
		if tcp.CloseWrite() != nil || tcp.SetReadDeadline(time.Now().Add(metricsLingerTimeout)) != nil {
			err = tcp.Close()
			return
		}
		go func() {
			io.Copy(io.Discard, tcp)
			tcp.Close()
		}()
	})
	return err
}

// certExpiryDesc is the certificate-expiry gauge. Its serial label tells two CAs of one name
// apart during a rotation.
var certExpiryDesc = prometheus.NewDesc("kvtx_tls_certificate_expiry_timestamp_seconds",
	"When a certificate this process has loaded expires (its NotAfter, in Unix seconds): its own (role master or node) and each CA certificate it trusts (role ca). It follows reloads.",
	[]string{"name", "role", "file", "serial"}, nil)

// certExpiryCollector reports the expiry of the certificates a Loader holds at scrape time, so
// a reload shows at the next scrape.
type certExpiryCollector struct {
	certs *certs.Loader
}

var _ prometheus.Collector = (*certExpiryCollector)(nil)

// Describe implements prometheus.Collector.
func (c *certExpiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- certExpiryDesc }

// Collect implements prometheus.Collector.
func (c *certExpiryCollector) Collect(ch chan<- prometheus.Metric) {
	leaf, cas := c.certs.Loaded()
	id, files := c.certs.Identity(), c.certs.Files()
	gauge := func(cert *x509.Certificate, name, role, file string) {
		ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue, float64(cert.NotAfter.Unix()),
			name, role, file, fmt.Sprintf("%x", cert.SerialNumber))
	}
	gauge(leaf, id.Name, id.Role, files.Cert)
	seen := map[string]bool{} // a CA file may hold one certificate twice: one series, or the scrape fails
	for _, ca := range cas {
		name := ca.Subject.CommonName
		if name == "" {
			name = ca.Subject.String()
		}
		if key := name + "\x00" + string(ca.SerialNumber.Bytes()); !seen[key] {
			seen[key] = true
			gauge(ca, name, "ca", files.CA)
		}
	}
}
