package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kvtx/kvtx/cmd/internal/cluster"
	"github.com/kvtx/kvtx/txn/client"
)

// TestPrometheusScrapesEveryProcess runs a real Prometheus server that scrapes the master and
// both nodes, and reads the committed-transaction count back through its HTTP API. It loads
// kvtx's alert rules (their "for" durations cut to 0: promtool's rule tests cover those) and
// sees KvtxProcessDown fire for a node that is killed. Every query of the Grafana dashboard
// evaluates, and every metric it names is exported.
func TestPrometheusScrapesEveryProcess(t *testing.T) {
	c := newCluster(t, 2)
	cl := c.client()
	ctx := stepCtx(t)
	keys := c.keysOnEveryShard("prom")
	const singles, multis = 7, 5
	for i := 0; i < singles; i++ {
		if _, err := cl.Put(ctx, []byte(fmt.Sprintf("p%d", i)), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < multis; i++ {
		if _, err := cl.Txn(ctx, nil, client.Put([]byte(keys[0]), []byte("v")), client.Put([]byte(keys[1]), []byte("v"))); err != nil {
			t.Fatal(err)
		}
	}
	var targets []string
	for _, name := range c.Names() {
		targets = append(targets, c.MetricsAddr(name))
	}
	query := startPrometheus(t, targets)
	checks := []struct{ q, want string }{
		{`count(up{job="kvtx"} == 1)`, "3"},
		{`sum(kvtx_txn_total{outcome="committed"})`, fmt.Sprint(singles + multis)},
		{`sum(kvtx_txn_total{path="2pc",outcome="committed"})`, fmt.Sprint(multis)},
		{`count(kvtx_connections)`, "3"},
		{`count(kvtx_fsync_duration_seconds_count)`, "3"},
		{`sum(kvtx_prepared_txns)`, "0"},
	}
	for _, ch := range checks {
		waitFor(t, 60*time.Second, "prometheus "+ch.q+" = "+ch.want, func() (bool, string) {
			got, err := query(ch.q)
			return err == nil && len(got) > 0 && got[0] == ch.want, fmt.Sprintf("%q (%v)", got, err)
		})
	}
	checkDashboard(t, query)
	if got, err := query(`count(ALERTS{alertname="KvtxProcessDown"})`); err == nil && len(got) > 0 {
		t.Fatalf("KvtxProcessDown with every process up: %s", got)
	}
	c.Kill("node2")
	firing := fmt.Sprintf(`count(ALERTS{alertname="KvtxProcessDown", alertstate="firing", instance=%q})`, c.MetricsAddr("node2"))
	waitFor(t, 60*time.Second, "KvtxProcessDown firing for the killed node2", func() (bool, string) {
		got, err := query(firing)
		return err == nil && len(got) > 0 && got[0] == "1", fmt.Sprintf("%q (%v)", got, err)
	})
}

// checkDashboard evaluates every query of the Grafana dashboard (its variables set to match
// everything) and checks that each metric it names has a series, so that a panel never stays
// empty for a misspelt or removed metric.
func checkDashboard(t *testing.T, query func(string) ([]string, error)) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "txn", "server", "monitoring", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	vars := strings.NewReplacer("$job", "kvtx", "$instance", ".*", "$__rate_interval", "1m")
	names := regexp.MustCompile(`\b([a-z_]+)\{`)
	var metrics []string
	n := 0
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			n++
			q := vars.Replace(tg.Expr)
			if _, err := query(q); err != nil && !strings.Contains(err.Error(), "no result") {
				t.Errorf("dashboard panel %q: %s: %v", p.Title, q, err)
			}
			for _, m := range names.FindAllStringSubmatch(q, -1) {
				metrics = append(metrics, m[1])
			}
		}
	}
	slices.Sort(metrics)
	for _, m := range slices.Compact(metrics) {
		waitFor(t, 30*time.Second, "a series of "+m+", which the dashboard shows", func() (bool, string) {
			got, err := query(fmt.Sprintf(`count({__name__=%q})`, m))
			return err == nil && len(got) > 0, fmt.Sprintf("%q (%v)", got, err)
		})
	}
	if n < 20 {
		t.Fatalf("the dashboard has %d queries; its panels did not parse", n)
	}
}

// startPrometheus runs a real Prometheus server (scraping every 500 ms, job "kvtx") over
// targets, with kvtx's alert rules loaded and their "for" durations cut to 0, and returns a
// function that runs an instant query and returns the values of its result.
func startPrometheus(t *testing.T, targets []string) func(q string) ([]string, error) {
	t.Helper()
	return startPrometheusJob(t, targets, "")
}

// startPrometheusJob is startPrometheus with job added to the job's scrape config: YAML
// lines indented by four spaces ("    scheme: https\n").
func startPrometheusJob(t *testing.T, targets []string, job string) func(q string) ([]string, error) {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("the prometheus binary is required (Debian package prometheus; .ci/run installs it)")
	}
	ports, err := cluster.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	promPort := ports[0]
	dir := t.TempDir()
	rules, err := os.ReadFile(filepath.Join("..", "..", "txn", "server", "monitoring", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	rules = regexp.MustCompile(`for: \S+`).ReplaceAll(rules, []byte("for: 0s"))
	if err := os.WriteFile(filepath.Join(dir, "alerts.yml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("global: {scrape_interval: 500ms, evaluation_interval: 1s}\nrule_files: [alerts.yml]\nscrape_configs:\n  - job_name: kvtx\n%s    static_configs:\n      - targets: ['%s']\n", job, strings.Join(targets, "', '"))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	prom := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", promPort))
	prom.Stdout, prom.Stderr = logf, logf
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		prom.Process.Kill()
		prom.Wait()
		if t.Failed() {
			data, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", data)
		}
	})
	return func(q string) ([]string, error) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/v1/query?query=%s", promPort, url.QueryEscape(q)))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var r struct {
			Status string `json:"status"`
			Error  string `json:"error"`
			Data   struct {
				Result []struct {
					Value []any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			return nil, fmt.Errorf("%v: %s", err, body)
		}
		if r.Status != "success" {
			return nil, fmt.Errorf("query failed: %s", r.Error)
		}
		if len(r.Data.Result) == 0 {
			return nil, fmt.Errorf("no result yet: %s", body)
		}
		var out []string
		for _, v := range r.Data.Result {
			out = append(out, fmt.Sprint(v.Value[1]))
		}
		return out, nil
	}
}
