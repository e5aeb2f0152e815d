package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/kvtx/kvtx/txn/backup"
	"github.com/kvtx/kvtx/txn/client"
)

func init() {
	extraCommands = append(extraCommands, backupCommand(), restoreCommand())
}

func backupCommand() *cli.Command {
	return &cli.Command{
		Name: "backup", Usage: "write every key, at one snapshot version, to a new FILE (or check a FILE with --verify)",
		ArgsUsage: "FILE",
		Description: "The backup is exactly what a read at its version sees, on every shard (never half of a transaction),\n" +
			"while the cluster goes on serving writes. FILE holds a manifest (version, the cluster's shard map, each\n" +
			"shard's key count, size and SHA-256), then each shard's keys, values and versions, zstd-compressed; it\n" +
			"appears whole or not at all, and an existing FILE is refused. --verify reads a FILE without a cluster and\n" +
			"checks every checksum, count and key.",
		Flags: append(commonFlags(),
			&cli.BoolFlag{Name: "verify", Usage: "check FILE's checksums and manifest, without a cluster, and print its summary"},
			&cli.IntFlag{Name: "page-keys", Value: 1000, Usage: "keys per scan page (at most 10,000)"},
		),
		Action: runBackup,
	}
}

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name: "restore", Usage: "restore a backup FILE into an empty cluster of any number of nodes",
		ArgsUsage: "FILE",
		Description: "Every key gets the value and version it had at the backup's version, routed by this cluster's\n" +
			"shard map; new writes get higher versions. The whole FILE is verified before anything is written.\n" +
			"A cluster whose nodes hold any key (a deleted one too) is refused unless --force; a restore that\n" +
			"failed half-way can be run again with --force.",
		Flags: append(commonFlags(),
			&cli.BoolFlag{Name: "force", Usage: "restore into a cluster that holds data: the backup's versions are written over it"},
			&cli.IntFlag{Name: "batch-keys", Value: 1000, Usage: "keys per restore request (at most 10,000)"},
			&cli.IntFlag{Name: "parallel", Value: 4, Usage: "restore requests in flight"},
		),
		Action: runRestore,
	}
}

func runBackup(c *cli.Context) error {
	if c.NArg() != 1 {
		return usage("backup needs one FILE")
	}
	path := c.Args().First()
	if c.Bool("verify") {
		return runVerify(c, path)
	}
	cl, ctx, cancel, err := dialLong(c)
	if err != nil {
		return err
	}
	defer cancel()
	defer cl.Close()
	bar := newProgress("backup", -1)
	sum, err := backup.Backup(ctx, cl, path, backup.Options{PageKeys: c.Int("page-keys"), Progress: bar.set})
	bar.done()
	if errors.Is(err, backup.ErrExists) {
		return usage("%v: choose another name, or remove it first", err)
	}
	if err != nil {
		return err
	}
	printSummary(c, "backup", sum)
	return nil
}

func runVerify(c *cli.Context, path string) error {
	start := time.Now()
	m, err := backup.Verify(path, nil)
	if err != nil {
		return err
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	printSummary(c, "verify", &backup.Summary{Manifest: m, Path: path, FileBytes: st.Size(), Duration: time.Since(start)})
	return nil
}

func runRestore(c *cli.Context) error {
	if c.NArg() != 1 {
		return usage("restore needs one FILE")
	}
	path := c.Args().First()
	cl, ctx, cancel, err := dialLong(c)
	if err != nil {
		return err
	}
	defer cancel()
	defer cl.Close()
	var total int64 = -1
	if r, err := backup.Open(path); err == nil {
		total = r.Manifest().Keys
		r.Close()
	}
	bar := newProgress("verify", total)
	phase := "verify"
	sum, err := backup.Restore(ctx, cl, path, backup.RestoreOptions{
		Force: c.Bool("force"), BatchKeys: c.Int("batch-keys"), Parallel: c.Int("parallel"),
		Progress: func(p string, keys, bytes int64) {
			if p != phase {
				phase = p
				bar.describe(p)
			}
			bar.set(keys, bytes)
		},
	})
	bar.done()
	if errors.Is(err, client.ErrNotEmpty) {
		var ce *client.Error
		errors.As(err, &ce)
		msg := strings.Replace(ce.Message, "force the restore", "pass --force", 1)
		return &exitError{code: exitUsage, msg: "restore refused, nothing written: " + msg}
	}
	if err != nil {
		// The whole chain: where the restore stopped, and what the cluster said.
		return &exitError{code: exitUsage, msg: strings.ReplaceAll(err.Error(), "client: ", "")}
	}
	printSummary(c, "restore", sum)
	return nil
}

// dialLong is dial for a command that takes as long as the data it moves: --timeout bounds
// each request, not the command, which Ctrl-C stops.
func dialLong(c *cli.Context) (*client.Client, context.Context, context.CancelFunc, error) {
	cl, _, cancel, err := dial(c)
	if err != nil {
		return nil, nil, nil, err
	}
	cancel()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	return cl, ctx, stop, nil
}

// printSummary prints one line, or one JSON object with -o json, about a backup file.
func printSummary(c *cli.Context, what string, s *backup.Summary) {
	m := s.Manifest
	if opt(c, "output") == "json" {
		out := map[string]any{"op": what, "file": s.Path, "keys": m.Keys, "bytes": m.Bytes, "file_bytes": s.FileBytes,
			"shards": m.ShardMap.Nodes, "version": m.BackupTS, "created": m.Created, "seconds": s.Duration.Seconds()}
		if s.Nodes != nil {
			out["nodes"] = s.Nodes
		}
		jsonOut(c.App.Writer, out)
		return
	}
	line := fmt.Sprintf("%s: %d keys, %s, %d shards, version %d", what, m.Keys, humanBytes(m.Bytes), len(m.Shards), m.BackupTS)
	switch what {
	case "restore":
		line += fmt.Sprintf(", onto %d nodes", len(s.Nodes))
	case "verify":
		line = fmt.Sprintf("verify: OK: %d keys, %s, %d shards (%s), version %d, taken %s, file %s", m.Keys, humanBytes(m.Bytes),
			len(m.Shards), strings.Join(m.ShardMap.Nodes, ", "), m.BackupTS, m.Created.Format(time.RFC3339), humanBytes(s.FileBytes))
	default:
		line += ", file " + humanBytes(s.FileBytes)
	}
	fmt.Fprintf(c.App.Writer, "%s, %s: %s\n", line, s.Duration.Round(time.Millisecond), s.Path)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// progress is a bar on standard error when it is a terminal, and nothing otherwise.
type progress struct{ bar *progressbar.ProgressBar }

// newProgress starts a bar counting keys up to total (-1: unknown, a spinner).
func newProgress(desc string, total int64) *progress {
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		return &progress{}
	}
	return &progress{bar: progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(os.Stderr), progressbar.OptionSetDescription(desc),
		progressbar.OptionShowCount(), progressbar.OptionSetItsString("keys"), progressbar.OptionShowIts(),
		progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())}
}

func (p *progress) set(keys, _ int64) {
	if p.bar != nil {
		p.bar.Set64(keys)
	}
}

func (p *progress) describe(desc string) {
	if p.bar != nil {
		p.bar.Reset()
		p.bar.Describe(desc)
	}
}

func (p *progress) done() {
	if p.bar != nil {
		p.bar.Finish()
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
}
