package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/urfave/cli/v2"
)

// kvctl dials --endpoint (or $KVTX_ENDPOINT) when given, else the --config master's advertise
// address, else its listen address, else the built-in cluster's master.
func TestEndpointIsTheFlagElseTheConfigMastersAdvertiseAddress(t *testing.T) {
	dir := t.TempDir()
	write := func(name, master string) string {
		path := filepath.Join(dir, name)
		os.WriteFile(path, []byte("master: "+master+"\nnodes:\n  - {name: node1, listen: 127.0.0.1:7001, data_dir: n1}\n"), 0o644)
		return path
	}
	advertised := write("adv.yaml", "{listen: 0.0.0.0:7000, advertise: 10.0.0.1:7000, data_dir: m}")
	listening := write("listen.yaml", "{listen: 127.0.0.2:7000, data_dir: m}")
	endpointOf := func(args ...string) string {
		t.Helper()
		var got string
		app := &cli.App{Name: "kvctl", Flags: commonFlags(), Commands: []*cli.Command{{Name: "get", Flags: commonFlags(),
			Action: func(c *cli.Context) (err error) { got, err = endpoint(c); return err }}}}
		if err := app.Run(append([]string{"kvctl"}, args...)); err != nil {
			t.Fatalf("kvctl %v: %v", args, err)
		}
		return got
	}
	t.Setenv("KVTX_ENDPOINT", "")
	os.Unsetenv("KVTX_ENDPOINT")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"get"}, "127.0.0.1:9000"},
		{[]string{"--config", advertised, "get"}, "10.0.0.1:7000"},
		{[]string{"get", "--config", listening}, "127.0.0.2:7000"},
		{[]string{"--config", advertised, "get", "--endpoint", "10.9.9.9:1"}, "10.9.9.9:1"},
		{[]string{"--endpoint", "10.9.9.9:1", "get", "--config", advertised}, "10.9.9.9:1"},
	} {
		if got := endpointOf(c.args...); got != c.want {
			t.Errorf("kvctl %v dials %s, want %s", c.args, got, c.want)
		}
	}
	t.Setenv("KVTX_ENDPOINT", "10.8.8.8:2")
	if got := endpointOf("--config", advertised, "get"); got != "10.8.8.8:2" {
		t.Errorf("with $KVTX_ENDPOINT set, kvctl --config dials %s, want $KVTX_ENDPOINT", got)
	}
}
