package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/certs"
)

// testCerts makes a cluster's certificates in a new directory, a client certificate named
// "prometheus" among them, and loads node1's as its process would.
func testCerts(t *testing.T) (txn.Config, *certs.Loader) {
	t.Helper()
	cfg := txn.DefaultConfig()
	cfg.TLS.Dir = filepath.Join(t.TempDir(), "certs")
	if err := certs.Init(cfg.TLS.Dir, cfg, certs.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := certs.CreateClient(cfg.TLS.Dir, "prometheus", certs.Options{}); err != nil {
		t.Fatal(err)
	}
	l, err := processCerts(cfg, "node1", false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg, l
}

// expiries returns the certificate-expiry gauge's series of reg, by "role name serial".
func expiries(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "kvtx_tls_certificate_expiry_timestamp_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			out[labels["role"]+" "+labels["name"]+" "+labels["serial"]+" "+labels["file"]] = m.GetGauge().GetValue()
		}
	}
	return out
}

func series(role, name string, c *x509.Certificate, file string) string {
	return fmt.Sprintf("%s %s %x %s", role, name, c.SerialNumber, file)
}

// The expiry gauge shows when the process's own certificate and each CA it trusts expire, and
// a reload of new files shows at the next scrape, with the old certificate's series gone.
func TestCertificateExpiryGaugeShowsOwnAndCACertificatesAndFollowsReload(t *testing.T) {
	cfg, l := testCerts(t)
	reg := prometheus.NewRegistry()
	reg.MustRegister(&certExpiryCollector{certs: l})
	files := CertFiles(cfg.TLS, "node1", true)
	leaf, cas := l.Loaded()
	if len(cas) != 1 {
		t.Fatalf("%d CAs loaded", len(cas))
	}
	want := map[string]float64{
		series("node", "node1", leaf, files.Cert):                 float64(leaf.NotAfter.Unix()),
		series("ca", cas[0].Subject.CommonName, cas[0], files.CA): float64(cas[0].NotAfter.Unix()),
	}
	if got := expiries(t, reg); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("expiry gauge:\n got %v\nwant %v", got, want)
	}

	// A renewed certificate, valid for 10 days only, and a CA file that holds the CA twice.
	if err := certs.CreateProcess(cfg.TLS.Dir, "node1", certs.RoleNode, nil, certs.Options{Lifetime: 10 * 24 * time.Hour, Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(files.CA)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files.CA, append(ca, ca...), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := expiries(t, reg); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("expiry gauge changed before the reload:\n got %v\nwant %v", got, want)
	}
	if err := l.Reload(); err != nil {
		t.Fatal(err)
	}
	renewed, _ := l.Loaded()
	if renewed.SerialNumber.Cmp(leaf.SerialNumber) == 0 || time.Until(renewed.NotAfter) > 10*24*time.Hour {
		t.Fatalf("the reload kept serial %x, expiring %v", leaf.SerialNumber, renewed.NotAfter)
	}
	want = map[string]float64{
		series("node", "node1", renewed, files.Cert):              float64(renewed.NotAfter.Unix()),
		series("ca", cas[0].Subject.CommonName, cas[0], files.CA): float64(cas[0].NotAfter.Unix()),
	}
	if got := expiries(t, reg); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("expiry gauge after the reload:\n got %v\nwant %v", got, want)
	}
}

// scraper is an HTTPS client as Prometheus's tls_config makes one: it trusts caFile, checks
// the server's host against its certificate, presents certFile/keyFile if given, and opens a
// new connection (a new handshake) for every request.
func scraper(t *testing.T, caFile, certFile, keyFile string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("no CA in %s", caFile)
	}
	cfg := &tls.Config{RootCAs: pool}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
}

// scrape GETs url with c and returns the status and body.
func scrape(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// The metrics listener with tls.metrics serves a scraper holding a client certificate of the
// cluster's CA, and refuses, with a TLS alert that says a certificate is required, one without
// a certificate and one with a certificate of another CA; plain HTTP gets a 400. It serves renewed certificates after a reload.
func TestMetricsOverTLSRequireAClientCertificateOfTheClusterCA(t *testing.T) {
	cfg, l := testCerts(t)
	reg := prometheus.NewRegistry()
	reg.MustRegister(&certExpiryCollector{certs: l})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(slog.New(slog.NewTextHandler(io.Discard, nil)).Handler(), slog.LevelWarn)}
	go srv.Serve(metricsTLSListener(ln, l.ServerConfig()))
	t.Cleanup(func() { srv.Close() })
	url := "https://" + ln.Addr().String() + "/metrics"
	dir := cfg.TLS.Dir
	ca := filepath.Join(dir, certs.CACert)

	prom := scraper(t, ca, filepath.Join(dir, "prometheus.crt"), filepath.Join(dir, "prometheus.key"))
	code, body, err := scrape(prom, url)
	if err != nil || code != http.StatusOK || !strings.Contains(body, `kvtx_tls_certificate_expiry_timestamp_seconds{file=`) {
		t.Fatalf("scrape with the prometheus client certificate: %d, %v\n%s", code, err, body)
	}
	// A node's certificate may scrape too: any role of the cluster's CA.
	if code, _, err := scrape(scraper(t, ca, filepath.Join(dir, "node2.crt"), filepath.Join(dir, "node2.key")), url); err != nil || code != http.StatusOK {
		t.Fatalf("scrape with node2's certificate: %d, %v", code, err)
	}

	if _, _, err := scrape(scraper(t, ca, "", ""), url); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("scrape without a client certificate: %v, want a refusal saying a certificate is required", err)
	}
	other := t.TempDir()
	if err := certs.CreateCA(other, certs.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := certs.CreateClient(other, "prometheus", certs.Options{}); err != nil {
		t.Fatal(err)
	}
	// The server names the CAs it accepts, so a Go client (Prometheus) sends no certificate
	// that another signed: it is refused as one without.
	if _, _, err := scrape(scraper(t, ca, filepath.Join(other, "prometheus.crt"), filepath.Join(other, "prometheus.key")), url); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("scrape with a certificate of another CA: %v, want a refusal", err)
	}
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatalf("plain HTTP: %v", err)
	}
	plain, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(plain), "HTTPS") || strings.Contains(string(plain), "kvtx_") {
		t.Errorf("plain HTTP: %d %q, want 400 saying the server speaks HTTPS", resp.StatusCode, plain)
	}

	// A renewed certificate is served from the next handshake on, once reloaded.
	served := func() *x509.Certificate {
		var got *x509.Certificate
		c := scraper(t, ca, filepath.Join(dir, "prometheus.crt"), filepath.Join(dir, "prometheus.key"))
		c.Transport.(*http.Transport).TLSClientConfig.VerifyConnection = func(cs tls.ConnectionState) error {
			got = cs.PeerCertificates[0]
			return nil
		}
		if code, _, err := scrape(c, url); err != nil || code != http.StatusOK {
			t.Fatalf("scrape: %d, %v", code, err)
		}
		return got
	}
	before := served()
	if err := certs.CreateProcess(dir, "node1", certs.RoleNode, nil, certs.Options{Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	if err := l.Reload(); err != nil {
		t.Fatal(err)
	}
	if after := served(); after.SerialNumber.Cmp(before.SerialNumber) == 0 {
		t.Errorf("the metrics listener serves serial %x after a reload of new files", before.SerialNumber)
	}
}
