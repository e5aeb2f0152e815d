// Command kvctl is kvtx's command-line client: put, get, del, conditional transactions and
// cluster status against a master.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/certs"
	"github.com/kvtx/kvtx/txn/client"
	"github.com/kvtx/kvtx/txn/server"
	"github.com/kvtx/kvtx/wire"
)

// Exit statuses.
const (
	exitOK       = 0
	exitNotFound = 1 // key not found, or a compare failed: nothing written
	exitAborted  = 2 // aborted, safe to retry
	exitUnknown  = 3 // outcome unknown: it may have committed
	exitUsage    = 4 // usage or any other error
	exitNoSpace  = 5 // a node is over its disk quota: nothing written
)

const exitHelp = `EXIT STATUS:
   0  success
   1  key not found, or a compare failed (nothing was written)
   2  transaction aborted, safe to retry (conflict, node unavailable: the message says which)
   3  outcome unknown: the transaction may have committed; read before retrying
   4  usage or other error
   5  space exceeded: a node is over its disk quota (nothing was written)`

func main() {
	app := &cli.App{
		Name:                  "kvctl",
		Usage:                 "talk to a kvtx cluster",
		Flags:                 commonFlags(),
		CustomAppHelpTemplate: cli.AppHelpTemplate + exitHelp + "\n",
		Commands: append([]*cli.Command{
			{
				Name: "put", Usage: "set KEY to VALUE (with no VALUE, the value is read from standard input)",
				ArgsUsage: "KEY [VALUE]", Flags: commonFlags(),
				Description: "Example: kvctl put config < config.json\n" +
					"A value from standard input is taken byte for byte, a trailing newline included, as etcdctl does.",
				Action: func(c *cli.Context) error {
					var value []byte
					switch c.NArg() {
					case 2:
						value = []byte(c.Args().Get(1))
					case 1:
						var err error
						if value, err = readValue(c.App.Reader); err != nil {
							return err
						}
					default:
						return usage("put needs KEY and VALUE (or KEY, with the value on standard input)")
					}
					return runTxn(c, nil, []client.Op{client.Put([]byte(c.Args().Get(0)), value)})
				},
			},
			{
				Name: "get", Usage: "read keys (several: one atomic snapshot), or a range of keys",
				ArgsUsage: "KEY... | --prefix P | --range KEY END | --from-key KEY",
				Description: "A range is read at one version, in pages, and printed in key order: --prefix P (every key\n" +
					"starting with P), --range KEY END (the half-open [KEY, END)), --from-key KEY (KEY and every key after it).\n" +
					"With -o json a range prints one object per key and a closing {\"more\":…,\"version\":…}: the next page\n" +
					"reads from just after the last key with --at that version, and sees the same snapshot.",
				Flags:  append(commonFlags(), rangeFlags()...),
				Action: runGet,
			},
			{
				Name: "del", Usage: "delete keys, or the keys of a range, in one transaction",
				ArgsUsage: "KEY... | --prefix P | --range KEY END | --from-key KEY",
				Description: "A range is read at one version and its keys deleted in one transaction that holds only if\n" +
					"none of them changed since (else nothing is deleted and del exits 1: run it again); keys written into\n" +
					"the range after that version are not deleted. Past the transaction limits nothing is deleted.",
				Flags: append(commonFlags(), rangeFlags()[:3]...),
				Action: func(c *cli.Context) error {
					if c.IsSet("prefix") || c.IsSet("range") || c.IsSet("from-key") {
						return runDelRange(c)
					}
					if c.NArg() == 0 {
						return usage("del needs at least one KEY")
					}
					var ops []client.Op
					for _, k := range c.Args().Slice() {
						ops = append(ops, client.Del([]byte(k)))
					}
					return runTxn(c, nil, ops)
				},
			},
			{
				Name:      "txn",
				Usage:     "apply operations atomically across shards if every compare holds",
				ArgsUsage: "[COMPARE FLAGS] OP...   where OP is `put KEY VALUE` or `del KEY`",
				Description: "Example: kvctl txn --if-version a=7 --if-missing b put a 1 put b 2 del c\n" +
					"A compare that fails writes nothing and exits 1, naming the compare.",
				Flags: append(commonFlags(),
					&cli.StringSliceFlag{Name: "if-version", Usage: "`KEY=N`: KEY's version is N (0: missing)"},
					&cli.StringSliceFlag{Name: "if-value", Usage: "`KEY=V`: KEY's value is V"},
					&cli.StringSliceFlag{Name: "if-exists", Usage: "`KEY` has a value"},
					&cli.StringSliceFlag{Name: "if-missing", Usage: "`KEY` has no value"},
				),
				Action: func(c *cli.Context) error {
					cmps, err := parseCompares(c)
					if err != nil {
						return err
					}
					ops, err := parseOps(c.Args().Slice())
					if err != nil {
						return err
					}
					return runTxn(c, cmps, ops)
				},
				Subcommands: []*cli.Command{{
					Name:   "list",
					Usage:  "list prepared and in-doubt transactions on every process: id, age, keys, participants, what each waits for (nodes are asked directly when the master is down)",
					Flags:  commonFlags(),
					Action: runTxnList,
				}},
			},
			{
				Name: "status", Usage: "show the master and nodes: address, health, prepared and in-doubt transactions (nodes are asked directly when the master is down)",
				Flags:  commonFlags(),
				Action: runStatus,
			},
		}, extraCommands...),
	}
	app.ExitErrHandler = func(*cli.Context, error) {}
	err := app.Run(os.Args)
	os.Exit(report(err))
}

// commonFlags are accepted before and after the command name (kvctl -o json get k, kvctl get
// -o json k); the one given closest to the command wins.
func commonFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "endpoint", Value: txn.DefaultConfig().Master.DialAddr(), Usage: "master `ADDR` (default: the --config master's advertise address, else its listen address, else the built-in cluster's)", EnvVars: []string{"KVTX_ENDPOINT"}},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "text", Usage: "text or json"},
		&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "give up on a command after this long"},
		&cli.StringFlag{Name: "config", Usage: "cluster config `FILE`: its tls section, and its nodes, which status and txn list ask when the master is down (default: the built-in cluster)", EnvVars: []string{"KVTX_CONFIG"}},
	}, tlsFlags()...)
}

// configFlag names the cluster config of cert init.
func configFlag() cli.Flag {
	return &cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "cluster config `FILE` (default: the built-in cluster)", EnvVars: []string{"KVTX_CONFIG"}}
}

// isSetHere reports whether ctx's own command line set the flag name.
func isSetHere(ctx *cli.Context, name string) bool {
	for _, n := range ctx.LocalFlagNames() {
		if n == name {
			return true
		}
	}
	return false
}

// opt returns a common flag's value from the innermost command line that set it.
func opt(c *cli.Context, name string) string {
	for _, ctx := range c.Lineage() {
		if isSetHere(ctx, name) {
			return fmt.Sprint(ctx.Value(name))
		}
	}
	return fmt.Sprint(c.Value(name))
}

// extraCommands are added by the other files of this package (bench, check).
var extraCommands []*cli.Command

// exitError carries an exit status and a one-line message.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func usage(format string, args ...any) error {
	return &exitError{code: exitUsage, msg: fmt.Sprintf(format, args...)}
}

// report prints err in one line on stderr and returns the exit status.
func report(err error) int {
	if err == nil {
		return exitOK
	}
	code := exitUsage
	var ee *exitError
	var ce *client.Error
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case errors.Is(err, client.ErrNotFound), errors.Is(err, client.ErrCompareFailed):
		code = exitNotFound
	case errors.Is(err, client.ErrUnknownOutcome):
		code = exitUnknown
	case errors.Is(err, client.ErrSpaceExceeded):
		code = exitNoSpace
	case errors.Is(err, client.ErrAborted):
		code = exitAborted
	case errors.As(err, &ce) && ce.Code == wire.CodeUnavailable:
		code = exitAborted
	}
	msg := strings.TrimPrefix(err.Error(), "client: ")
	if errors.As(err, &ce) {
		msg = describe(ce)
	}
	fmt.Fprintf(os.Stderr, "kvctl: %s\n", strings.ReplaceAll(msg, "\n", "; "))
	return code
}

// describe says what happened to a transaction in words: committed never reaches here, so it
// is aborted (and why), unknown, or rejected.
func describe(e *client.Error) string {
	msg := e.Message
	txn := ""
	if e.TxnID != 0 {
		txn = fmt.Sprintf(" (txn %d)", e.TxnID)
	}
	var ce *certs.Error
	switch {
	case errors.As(e, &ce):
		return msg // a certificate problem, in the one line certs wrote
	case errors.Is(e, client.ErrCompareFailed):
		return fmt.Sprintf("compare failed, nothing written%s: %s", txn, msg)
	case e.Code == wire.CodeUnavailable && e.TxnID == 0:
		return fmt.Sprintf("unavailable, safe to retry: %s", msg)
	case errors.Is(e, client.ErrUnknownOutcome):
		return fmt.Sprintf("outcome unknown, the transaction may have committed%s: %s", txn, msg)
	case errors.Is(e, client.ErrAborted):
		return fmt.Sprintf("aborted (%s), nothing written, safe to retry%s: %s", e.Reason(), txn, msg)
	case errors.Is(e, client.ErrUnavailable):
		return fmt.Sprintf("unavailable, safe to retry: %s", msg)
	case errors.Is(e, client.ErrNotFound):
		return msg
	case errors.Is(e, client.ErrInvalid):
		return fmt.Sprintf("rejected (%s), nothing written: %s", e.Reason(), msg)
	case errors.Is(e, client.ErrSpaceExceeded):
		return fmt.Sprintf("space exceeded, nothing written%s: %s", txn, msg)
	}
	return fmt.Sprintf("%s: %s", e.Reason(), msg)
}

func dial(c *cli.Context) (*client.Client, context.Context, context.CancelFunc, error) {
	switch opt(c, "output") {
	case "text", "json":
	default:
		return nil, nil, nil, usage("--output must be text or json, not %q", opt(c, "output"))
	}
	timeout, err := time.ParseDuration(opt(c, "timeout"))
	if err != nil {
		return nil, nil, nil, usage("bad --timeout: %v", err)
	}
	sec, err := loadSecurity(c)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	addr, err := endpoint(c)
	if err != nil {
		cancel()
		return nil, nil, nil, err
	}
	cl, err := client.Dial(ctx, addr, sec.clientOptions(client.Options{Timeout: timeout}))
	if err != nil {
		cancel()
		return nil, nil, nil, err
	}
	return cl, ctx, cancel, nil
}

// endpoint returns the master's address: --endpoint (or $KVTX_ENDPOINT) when given, else the
// address the --config file's master is dialled at (its advertise address, or its listen
// address), else the built-in cluster's.
func endpoint(c *cli.Context) (string, error) {
	for _, ctx := range c.Lineage() {
		if ctx.IsSet("endpoint") {
			return opt(c, "endpoint"), nil
		}
	}
	path := opt(c, "config")
	if path == "" {
		return opt(c, "endpoint"), nil
	}
	cfg, err := server.LoadConfig(path)
	if err != nil {
		return "", err
	}
	return cfg.Master.DialAddr(), nil
}

func jsonOut(w io.Writer, v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintln(w, string(b))
}

func runTxn(c *cli.Context, cmps []client.Compare, ops []client.Op) error {
	cl, ctx, cancel, err := dial(c)
	if err != nil {
		return err
	}
	defer cancel()
	defer cl.Close()
	res, err := cl.Txn(ctx, cmps, ops...)
	if err != nil {
		var ce *client.Error
		if errors.As(err, &ce) && ce.Code == wire.CodeCompareFailed && ce.Index >= 0 && ce.Index < len(cmps) {
			ce.Message = fmt.Sprintf("%s: %s", compareString(cmps[ce.Index]), ce.Message)
		}
		return err
	}
	if opt(c, "output") == "json" {
		jsonOut(c.App.Writer, map[string]any{"outcome": "committed", "txn_id": res.TxnID, "version": res.CommitTS, "path": res.Path})
		return nil
	}
	fmt.Fprintln(c.App.Writer, "OK")
	return nil
}

func runGet(c *cli.Context) error {
	if c.IsSet("prefix") || c.IsSet("range") || c.IsSet("from-key") {
		return runRange(c)
	}
	if c.IsSet("limit") || c.IsSet("keys-only") || c.IsSet("count-only") {
		return usage("get: --limit, --keys-only and --count-only go with a range (--prefix, --range or --from-key)")
	}
	if c.NArg() == 0 {
		return usage("get needs at least one KEY")
	}
	keys := make([][]byte, c.NArg())
	for i, k := range c.Args().Slice() {
		keys[i] = []byte(k)
	}
	cl, ctx, cancel, err := dial(c)
	if err != nil {
		return err
	}
	defer cancel()
	defer cl.Close()
	var kvs []client.KeyValue
	if at := c.Uint64("at"); at != 0 {
		kvs, err = cl.ReadAt(ctx, at, keys...)
	} else {
		kvs, _, err = cl.Snapshot(ctx, keys...)
	}
	if err != nil {
		return err
	}
	var missing []string
	w := c.App.Writer
	for _, kv := range kvs {
		if !kv.Found {
			missing = append(missing, string(kv.Key))
		}
		switch {
		case opt(c, "output") == "json":
			jsonOut(w, map[string]any{"key": string(kv.Key), "value": string(kv.Value), "version": kv.Version, "found": kv.Found})
		case !kv.Found:
		case len(kvs) == 1:
			fmt.Fprintln(w, string(kv.Value))
		default:
			fmt.Fprintln(w, string(kv.Key))
			fmt.Fprintln(w, string(kv.Value))
		}
	}
	if len(missing) > 0 {
		return &exitError{code: exitNotFound, msg: fmt.Sprintf("key not found: %s", strings.Join(quoteAll(missing), ", "))}
	}
	return nil
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}

func parseCompares(c *cli.Context) ([]client.Compare, error) {
	var cmps []client.Compare
	for _, s := range c.StringSlice("if-version") {
		k, v, ok := strings.Cut(s, "=")
		n, err := strconv.ParseUint(v, 10, 64)
		if !ok || k == "" || err != nil {
			return nil, usage("--if-version wants KEY=N with N a version number, not %q", s)
		}
		cmps = append(cmps, client.IfVersion([]byte(k), n))
	}
	for _, s := range c.StringSlice("if-value") {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return nil, usage("--if-value wants KEY=VALUE, not %q", s)
		}
		cmps = append(cmps, client.IfValue([]byte(k), []byte(v)))
	}
	for _, k := range c.StringSlice("if-exists") {
		cmps = append(cmps, client.IfExists([]byte(k)))
	}
	for _, k := range c.StringSlice("if-missing") {
		cmps = append(cmps, client.IfMissing([]byte(k)))
	}
	return cmps, nil
}

func compareString(cmp client.Compare) string {
	switch cmp.Kind {
	case wire.CmpVersionEqual:
		return fmt.Sprintf("--if-version %s=%d", cmp.Key, cmp.Version)
	case wire.CmpValueEqual:
		return fmt.Sprintf("--if-value %s=%s", cmp.Key, cmp.Value)
	case wire.CmpExists:
		return fmt.Sprintf("--if-exists %s", cmp.Key)
	case wire.CmpMissing:
		return fmt.Sprintf("--if-missing %s", cmp.Key)
	}
	return fmt.Sprintf("compare on %s", cmp.Key)
}

// parseOps reads `put KEY VALUE` and `del KEY` words.
func parseOps(args []string) ([]client.Op, error) {
	if len(args) == 0 {
		return nil, usage("txn needs at least one operation: put KEY VALUE or del KEY")
	}
	var ops []client.Op
	for i := 0; i < len(args); {
		switch args[i] {
		case "put":
			if i+2 >= len(args) {
				return nil, usage("txn: put needs KEY and VALUE (operation %d)", len(ops)+1)
			}
			ops = append(ops, client.Put([]byte(args[i+1]), []byte(args[i+2])))
			i += 3
		case "del", "delete":
			if i+1 >= len(args) {
				return nil, usage("txn: del needs KEY (operation %d)", len(ops)+1)
			}
			ops = append(ops, client.Del([]byte(args[i+1])))
			i += 2
		default:
			return nil, usage("txn: unknown operation %q: want put KEY VALUE or del KEY (compare flags go before the operations)", args[i])
		}
	}
	return ops, nil
}

// status asks the master for the status of every process.
//
// When the master cannot be reached, it asks the nodes of the cluster config (--config, or
// the built-in cluster) directly, so that an operator still sees what holds the locks: the
// master is then reported down.
func status(c *cli.Context) ([]wire.ProcessStatus, error) {
	cl, ctx, cancel, err := dial(c)
	if err == nil {
		defer cancel()
		defer cl.Close()
		var procs []wire.ProcessStatus
		if procs, err = cl.Status(ctx); err == nil {
			return procs, nil
		}
	}
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != wire.CodeUnavailable {
		return nil, err
	}
	cfg := txn.DefaultConfig()
	if path := opt(c, "config"); path != "" {
		if cfg, err = server.LoadConfig(path); err != nil {
			return nil, err
		}
	}
	sec, err := loadSecurity(c)
	if err != nil {
		return nil, err
	}
	return nodeStatus(cfg, sec, ce.Message), nil
}

// nodeStatus asks every node of cfg for its status directly.
func nodeStatus(cfg txn.Config, sec *security, masterErr string) []wire.ProcessStatus {
	procs := []wire.ProcessStatus{{Name: txn.MasterName, Role: "master", Addr: cfg.Master.DialAddr(), MetricsAddr: cfg.Master.Metrics, Error: masterErr}}
	for _, n := range cfg.Nodes {
		ps := wire.ProcessStatus{Name: n.Name, Role: "node"}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		opts := wire.DialOptions{Role: "client", Name: "kvctl"}
		if opts.TLS = sec.dialTLS(n.Name); opts.TLS != nil {
			opts.Name = "" // the certificate's
		}
		conn, err := wire.Dial(ctx, n.DialAddr(), opts)
		err = sec.explain(err)
		if err == nil {
			var rep wire.StatusReply
			if err = conn.Call(ctx, &wire.StatusRequest{}, &rep); err == nil && len(rep.Processes) > 0 {
				ps = rep.Processes[0]
			}
			conn.Close()
		}
		cancel()
		if err != nil {
			ps.Error = err.Error()
		}
		ps.Addr, ps.MetricsAddr = n.DialAddr(), n.Metrics
		procs = append(procs, ps)
	}
	return procs
}

func runStatus(c *cli.Context) error {
	procs, err := status(c)
	if err != nil {
		return err
	}
	if opt(c, "output") == "json" {
		for _, p := range procs {
			jsonOut(c.App.Writer, p)
		}
		return nil
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tADDRESS\tMETRICS\tHEALTH\tLOCKS\tPREPARED\tIN DOUBT\tDATA")
	down := 0
	for _, p := range procs {
		health := "up"
		if !p.Up {
			health = "DOWN: " + p.Error
			down++
		}
		data := "-"
		if p.Role == "node" && p.Up {
			data = humanBytes(p.DataBytes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", p.Name, p.Role, p.Addr, p.MetricsAddr, health, p.LocksHeld, len(p.Prepared), p.InDoubt, data)
	}
	tw.Flush()
	for _, p := range procs {
		if slices.Contains(p.Alarms, txn.AlarmNoSpace) {
			fmt.Fprintf(c.App.Writer, "%s: ALARM NOSPACE: its shard takes %s on disk, its quota is %s (storage.quota_bytes): new writes are refused until the GC frees space\n",
				p.Name, humanBytes(p.DataBytes), humanBytes(p.QuotaBytes))
		}
		for _, t := range p.Prepared {
			state, waiting := txnState(p, t)
			if t.InDoubt {
				state = "IN DOUBT"
			}
			fmt.Fprintf(c.App.Writer, "%s: txn %d %s for %s, participants %s, waiting for %s\n",
				p.Name, t.TxnID, state, time.Duration(t.AgeMillis)*time.Millisecond, strings.Join(t.Participants, ","), waiting)
		}
	}
	if down > 0 {
		return &exitError{code: exitAborted, msg: fmt.Sprintf("%d of %d processes are down", down, len(procs))}
	}
	return nil
}

func runTxnList(c *cli.Context) error {
	procs, err := status(c)
	if err != nil {
		return err
	}
	json := opt(c, "output") == "json"
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	if !json {
		fmt.Fprintln(tw, "PROCESS\tTXN\tSTATE\tAGE\tPARTICIPANTS\tKEYS\tWAITING FOR")
	}
	n := 0
	for _, p := range procs {
		for _, t := range p.Prepared {
			n++
			state, waiting := txnState(p, t)
			if t.InDoubt {
				state = "in doubt"
			}
			keys := make([]string, len(t.Keys))
			for i, k := range t.Keys {
				keys[i] = string(k)
			}
			if json {
				jsonOut(c.App.Writer, map[string]any{"process": p.Name, "txn_id": t.TxnID, "state": state, "age_ms": t.AgeMillis,
					"participants": t.Participants, "keys": keys, "waiting": waiting})
				continue
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", p.Name, t.TxnID, state, time.Duration(t.AgeMillis)*time.Millisecond,
				strings.Join(t.Participants, ","), strings.Join(keys, ","), waiting)
		}
	}
	if !json {
		tw.Flush()
		if n == 0 {
			fmt.Fprintln(c.App.Writer, "no prepared transactions")
		}
	}
	for _, p := range procs {
		if !p.Up {
			return &exitError{code: exitAborted, msg: fmt.Sprintf("%s is down: its transactions are not listed: %s", p.Name, p.Error)}
		}
	}
	return nil
}

// txnState returns the state of a transaction that process p reports and what it waits for:
// a node's transactions are prepared; the master's are in the phase it reports.
func txnState(p wire.ProcessStatus, t wire.TxnInfo) (state, waiting string) {
	if p.Role != "master" {
		return "prepared", t.Waiting
	}
	if t.State == "" {
		return "in flight", t.Waiting
	}
	return t.State, t.Waiting
}

// readValue reads a put's value from r, refusing one larger than a frame (the cluster's value
// limit, at most that, is enforced by the master with a clear error) before it is all read.
func readValue(r io.Reader) ([]byte, error) {
	value, err := io.ReadAll(io.LimitReader(r, wire.DefaultMaxFrame+1))
	if err != nil {
		return nil, fmt.Errorf("kvctl: read the value from standard input: %w", err)
	}
	if len(value) > wire.DefaultMaxFrame {
		return nil, usage("put: the value on standard input is over %d bytes, the frame limit", wire.DefaultMaxFrame)
	}
	return value, nil
}
