package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/certs"
	"github.com/kvtx/kvtx/txn/server"
)

func init() {
	extraCommands = append(extraCommands, certCommand())
}

// defaultCertsDir is where `make run` keeps its certificates.
const defaultCertsDir = "data/certs"

// certsDirFlag is the certificate directory of every cert command.
func certsDirFlag() cli.Flag {
	return &cli.StringFlag{Name: "certs-dir", Value: defaultCertsDir, Usage: "certificate `DIR`", EnvVars: []string{"KVTX_CERTS_DIR"}}
}

func certCreateFlags(lifetime string) []cli.Flag {
	return []cli.Flag{
		certsDirFlag(),
		&cli.StringFlag{Name: "lifetime", Value: lifetime, Usage: "validity, as a `DURATION` (8760h) or in days (365d)"},
		&cli.BoolFlag{Name: "overwrite", Usage: "replace existing files (by default a create refuses to touch any)"},
	}
}

func certCommand() *cli.Command {
	return &cli.Command{
		Name: "cert", Usage: "make and list the certificates of the cluster's mutual TLS",
		Description: "Every link is TLS 1.3 with a certificate on both sides, signed by the cluster's CA. A certificate's\n" +
			"name (CommonName) and role (OrganizationalUnit: master, node or client) are the process's identity.\n" +
			"DIR holds ca.crt, ca.key (needed only to make certificates) and NAME.crt, NAME.key per process and client;\n" +
			"keys are written mode 0600, every file whole or not at all, and never replaced unless --overwrite.",
		Subcommands: []*cli.Command{
			{
				Name: "create-ca", Usage: "make the cluster's CA: ca.crt and ca.key",
				Description: "A new CA is not trusted by processes that load the old ca.crt: every certificate must be made again.\n" +
					"To rotate, append the new ca.crt to the old one on every process first (both are then trusted).",
				Flags:  certCreateFlags("3650d"),
				Action: runCreateCA,
			},
			{
				Name: "create-node", Usage: "make a node's certificate (NAME master: the master's), for server and client use",
				ArgsUsage:   "NAME [HOST...]",
				Description: "HOSTs (DNS names, *.domain, IP addresses) are the certificate's names; default localhost 127.0.0.1 ::1.",
				Flags:       certCreateFlags("365d"),
				Action:      runCreateNode,
			},
			{
				Name: "create-client", Usage: "make a client's certificate, for client use only", ArgsUsage: "NAME",
				Description: "kvctl and applications present client.crt (the name \"client\") unless told otherwise.",
				Flags:       certCreateFlags("365d"),
				Action:      runCreateClient,
			},
			{
				Name: "init", Usage: "make a CA and every certificate of the cluster config: master, each node (the hosts of its advertise and listen addresses among its names), client",
				Flags: append(certCreateFlags("365d"), configFlag(),
					&cli.StringFlag{Name: "ca-lifetime", Value: "3650d", Usage: "the CA's validity, as a `DURATION` or in days"}),
				Action: runCertInit,
			},
			{
				Name: "list", Usage: "show each certificate of DIR: name, role, hosts, expiry, and what would stop it loading",
				Flags:  []cli.Flag{certsDirFlag(), &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "text", Usage: "text or json"}},
				Action: runCertList,
			},
		},
	}
}

// parseLifetime reads a Go duration ("8760h") or a number of days ("365d").
func parseLifetime(flag, s string) (time.Duration, error) {
	var d time.Duration
	var err error
	if n, ok := strings.CutSuffix(s, "d"); ok {
		var days int64
		if days, err = strconv.ParseInt(n, 10, 32); err == nil {
			d = time.Duration(days) * 24 * time.Hour
		}
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil || d <= 0 {
		return 0, usage("--%s wants a positive duration (8760h) or a number of days (365d), not %q", flag, s)
	}
	return d, nil
}

// certArgs returns the command's arguments and applies the flags given after them, which
// urfave/cli leaves among the arguments: `kvctl cert create-node node1 db1 --certs-dir DIR`
// reads as `cockroach cert` does. After "--" everything is an argument.
func certArgs(c *cli.Context) ([]string, error) {
	var args []string
	in := c.Args().Slice()
	for i := 0; i < len(in); i++ {
		a := in[i]
		if a == "--" {
			return append(args, in[i+1:]...), nil
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			args = append(args, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		var flag cli.Flag
		for _, f := range c.Command.Flags {
			if slices.Contains(f.Names(), name) {
				flag = f
			}
		}
		if flag == nil {
			return nil, usage("%s: unknown flag %s", c.Command.Name, a)
		}
		if _, isBool := flag.(*cli.BoolFlag); isBool && !hasValue {
			value = "true"
		} else if !hasValue {
			if i+1 >= len(in) {
				return nil, usage("%s: flag %s needs a value", c.Command.Name, a)
			}
			i++
			value = in[i]
		}
		if err := c.Set(name, value); err != nil {
			return nil, usage("%s: bad %s: %v", c.Command.Name, a, err)
		}
	}
	return args, nil
}

func certOptions(c *cli.Context) (certs.Options, error) {
	lt, err := parseLifetime("lifetime", c.String("lifetime"))
	if err != nil {
		return certs.Options{}, err
	}
	return certs.Options{Lifetime: lt, CALifetime: lt, Overwrite: c.Bool("overwrite")}, nil
}

// certFailed adds to a create's error what the user can do about it.
func certFailed(err error) error {
	switch {
	case errors.Is(err, certs.ErrExists):
		return usage("%v: pass --overwrite to replace it", err)
	case errors.Is(err, certs.ErrNoCAKey):
		return usage("%v (kvctl cert create-ca --certs-dir DIR)", err)
	}
	return err
}

func runCreateCA(c *cli.Context) error {
	args, err := certArgs(c)
	if err != nil {
		return err
	}
	if len(args) != 0 {
		return usage("create-ca takes no arguments")
	}
	opts, err := certOptions(c)
	if err != nil {
		return err
	}
	dir := opt(c, "certs-dir")
	if err := certs.CreateCA(dir, opts); err != nil {
		return certFailed(err)
	}
	return printCreated(c, dir, certs.CACert)
}

func runCreateNode(c *cli.Context) error {
	args, err := certArgs(c)
	if err != nil {
		return err
	}
	if len(args) < 1 {
		return usage("create-node needs NAME (and optionally HOSTs)")
	}
	opts, err := certOptions(c)
	if err != nil {
		return err
	}
	name, role := args[0], certs.RoleNode
	if name == txn.MasterName {
		role = certs.RoleMaster
	}
	dir := opt(c, "certs-dir")
	if err := certs.CreateProcess(dir, name, role, args[1:], opts); err != nil {
		return certFailed(err)
	}
	return printCreated(c, dir, name+".crt")
}

func runCreateClient(c *cli.Context) error {
	args, err := certArgs(c)
	if err != nil {
		return err
	}
	if len(args) != 1 {
		return usage("create-client needs one NAME")
	}
	opts, err := certOptions(c)
	if err != nil {
		return err
	}
	dir := opt(c, "certs-dir")
	if err := certs.CreateClient(dir, args[0], opts); err != nil {
		return certFailed(err)
	}
	return printCreated(c, dir, args[0]+".crt")
}

func runCertInit(c *cli.Context) error {
	args, err := certArgs(c)
	if err != nil {
		return err
	}
	if len(args) != 0 {
		return usage("init takes no arguments (the cluster comes from --config)")
	}
	opts, err := certOptions(c)
	if err != nil {
		return err
	}
	if opts.CALifetime, err = parseLifetime("ca-lifetime", c.String("ca-lifetime")); err != nil {
		return err
	}
	cfg := txn.DefaultConfig()
	if path := opt(c, "config"); path != "" {
		if cfg, err = server.LoadConfig(path); err != nil {
			return err
		}
	}
	dir := cfg.TLS.Dir // the config's tls.dir, unless --certs-dir says otherwise
	if d, ok := setOpt(c, "certs-dir"); ok {
		dir = d
	}
	if err := certs.Init(dir, cfg, opts); err != nil {
		return certFailed(err)
	}
	files := []string{certs.CACert, txn.MasterName + ".crt"}
	for _, n := range cfg.Nodes {
		files = append(files, n.Name+".crt")
	}
	return printCreated(c, dir, append(files, certs.DefaultClient+".crt")...)
}

// printCreated prints one line per certificate file made.
func printCreated(c *cli.Context, dir string, files ...string) error {
	entries, err := certs.List(dir, time.Now())
	if err != nil {
		return err
	}
	for _, e := range entries {
		for _, f := range files {
			if filepath.Base(e.File) == f {
				key := strings.TrimSuffix(e.File, ".crt") + ".key"
				fmt.Fprintf(c.App.Writer, "created %s and %s: %s (%s), %sexpires %s\n", e.File, filepath.Base(key), e.Name, e.Role, hostsText(e.Hosts), e.NotAfter.UTC().Format(time.DateOnly))
			}
		}
	}
	return nil
}

func hostsText(hosts []string) string {
	if len(hosts) == 0 {
		return ""
	}
	return "hosts " + strings.Join(hosts, " ") + ", "
}

func runCertList(c *cli.Context) error {
	args, err := certArgs(c)
	if err != nil {
		return err
	}
	if len(args) != 0 {
		return usage("list takes no arguments")
	}
	format := opt(c, "output")
	if format != "text" && format != "json" {
		return usage("--output must be text or json, not %q", format)
	}
	dir := opt(c, "certs-dir")
	entries, err := certs.List(dir, time.Now())
	if err != nil {
		return err
	}
	if format == "json" {
		for _, e := range entries {
			jsonOut(c.App.Writer, e)
		}
		return nil
	}
	if len(entries) == 0 {
		return usage("no certificates in %s (kvctl cert init --certs-dir %s makes a cluster's)", dir, dir)
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FILE\tNAME\tROLE\tHOSTS\tEXPIRES\tSTATUS")
	bad := 0
	for _, e := range entries {
		status := "ok"
		if e.Problem != "" {
			status, bad = e.Problem, bad+1
		}
		hosts := strings.Join(e.Hosts, ",")
		if hosts == "" {
			hosts = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", filepath.Base(e.File), e.Name, e.Role, hosts, e.NotAfter.UTC().Format("2006-01-02 15:04 UTC"), status)
	}
	tw.Flush()
	if bad > 0 {
		return &exitError{code: exitUsage, msg: fmt.Sprintf("%d of %d certificates in %s would not load", bad, len(entries), dir)}
	}
	return nil
}
