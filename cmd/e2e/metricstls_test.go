package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvtx/kvtx/cmd/internal/cluster"
	"github.com/kvtx/kvtx/txn/certs"
)

// TestPrometheusScrapesMetricsOverTLSWithAClientCertificate runs a cluster with tls.metrics
// and a real Prometheus that scrapes it over HTTPS with a client certificate of the cluster's
// CA (tls_config: ca_file, cert_file, key_file, the server's host checked against its
// certificate): every process is up and exports the expiry of its certificate and of the CA.
// A scrape without a client certificate, or over plain HTTP, gets no metrics. Node1 renewed
// for 10 days and sent SIGHUP serves the new certificate on its metrics endpoint, its expiry
// gauge follows, and KvtxCertificateExpiresSoon fires for it.
func TestPrometheusScrapesMetricsOverTLSWithAClientCertificate(t *testing.T) {
	c := prepare(t, cluster.Config{Nodes: 2, MetricsTLS: true})
	c.startAll()
	dir := c.CertsDir()
	if err := certs.CreateClient(dir, "prometheus", certs.Options{}); err != nil {
		t.Fatal(err)
	}
	ca, crt, key := filepath.Join(dir, certs.CACert), filepath.Join(dir, "prometheus.crt"), filepath.Join(dir, "prometheus.key")
	var targets []string
	for _, name := range c.Names() {
		targets = append(targets, c.MetricsAddr(name))
	}
	query := startPrometheusJob(t, targets, fmt.Sprintf("    scheme: https\n    tls_config: {ca_file: %q, cert_file: %q, key_file: %q}\n", ca, crt, key))
	node1 := notAfter(t, filepath.Join(dir, "node1.crt"))
	checks := []struct{ q, want string }{
		{`count(up{job="kvtx"} == 1)`, "3"},
		{`count(kvtx_tls_certificate_expiry_timestamp_seconds{role=~"master|node"})`, "3"},
		{`count(kvtx_tls_certificate_expiry_timestamp_seconds{role="ca"})`, "3"},
		{`kvtx_tls_certificate_expiry_timestamp_seconds{name="node1"}`, fmt.Sprint(node1.Unix())},
		{`count(kvtx_connections)`, "3"},
	}
	for _, ch := range checks {
		waitFor(t, 60*time.Second, "prometheus "+ch.q+" = "+ch.want, func() (bool, string) {
			got, err := query(ch.q)
			return err == nil && len(got) > 0 && got[0] == ch.want, fmt.Sprintf("%q (%v)", got, err)
		})
	}

	url := "https://" + c.MetricsAddr("node1") + "/metrics"
	if _, err := metricsGet(t, ca, "", "", url); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("scrape without a client certificate: %v, want it refused (certificate required)", err)
	}
	resp, err := http.Get("http://" + c.MetricsAddr("node1") + "/metrics")
	if err != nil {
		t.Fatalf("plain HTTP: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || strings.Contains(string(body), "kvtx_") {
		t.Errorf("plain HTTP scrape: %d %q, want 400 and no metrics", resp.StatusCode, body)
	}
	served, err := metricsGet(t, ca, crt, key, url)
	if err != nil || served.SerialNumber.Cmp(readCert(t, filepath.Join(dir, "node1.crt")).SerialNumber) != 0 {
		t.Fatalf("scrape with the client certificate: %v", err)
	}

	if err := certs.CreateProcess(dir, "node1", certs.RoleNode, nil, certs.Options{Lifetime: 10 * 24 * time.Hour, Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	renewed := readCert(t, filepath.Join(dir, "node1.crt")).SerialNumber
	c.Hangup("node1")
	waitFor(t, 30*time.Second, "node1's metrics endpoint serving its renewed certificate", func() (bool, string) {
		got, err := metricsGet(t, ca, crt, key, url)
		return err == nil && got.SerialNumber.Cmp(renewed) == 0, fmt.Sprintf("%v", err)
	})
	expiry := fmt.Sprint(notAfter(t, filepath.Join(dir, "node1.crt")).Unix())
	waitFor(t, 60*time.Second, "Prometheus seeing node1's renewed certificate expire at "+expiry, func() (bool, string) {
		got, err := query(`kvtx_tls_certificate_expiry_timestamp_seconds{name="node1"}`)
		return err == nil && len(got) == 1 && got[0] == expiry, fmt.Sprintf("%q (%v)", got, err)
	})
	waitFor(t, 60*time.Second, "KvtxCertificateExpiresSoon firing for node1 only", func() (bool, string) {
		got, err := query(`count by (name) (ALERTS{alertname="KvtxCertificateExpiresSoon", alertstate="firing"})`)
		return err == nil && len(got) == 1 && got[0] == "1", fmt.Sprintf("%q (%v)", got, err)
	})
	if got, err := query(`ALERTS{alertname="KvtxCertificateExpiresSoon", name="node1"}`); err != nil || len(got) != 1 {
		t.Errorf("KvtxCertificateExpiresSoon is not node1's: %q (%v)", got, err)
	}
}

// metricsGet scrapes url over HTTPS as Prometheus's tls_config does (the server's host
// checked against its certificate, which ca_file's CA must sign), presenting certFile if
// given, on a new connection, and returns the certificate the server presented.
func metricsGet(t *testing.T, caFile, certFile, keyFile, url string) (*x509.Certificate, error) {
	t.Helper()
	pool := x509.NewCertPool()
	if data, err := os.ReadFile(caFile); err != nil || !pool.AppendCertsFromPEM(data) {
		t.Fatalf("CA file %s: %v", caFile, err)
	}
	cfg := &tls.Config{RootCAs: pool}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
	resp, err := cl.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "kvtx_tls_certificate_expiry_timestamp_seconds") {
		return nil, fmt.Errorf("status %d: %.200s", resp.StatusCode, body)
	}
	return resp.TLS.PeerCertificates[0], nil
}

// readCert reads the certificate in path.
func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s holds no PEM block", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func notAfter(t *testing.T, path string) time.Time { return readCert(t, path).NotAfter }
