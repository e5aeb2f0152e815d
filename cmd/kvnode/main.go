// Command kvnode runs one kvtx shard node: `kvnode node1` serves the node named node1 in the
// cluster config (built-in defaults when no config is given).
package main

import (
	"context"
	"os"
	"runtime/debug"

	"github.com/urfave/cli/v2"

	"github.com/kvtx/kvtx/cmd/internal/procflags"
	"github.com/kvtx/kvtx/txn/server"
)

// nodeGCPercent is the node's GOGC unless the environment sets one. Badger's memtable arenas
// count as live heap, so at the default of 100 the garbage collector lets as much garbage again
// pile up before it runs; at 50 a node holds much less memory, for a few more collections under
// load. The node also runs with a soft memory limit derived from its storage budget
// (server.NodeMemoryLimit) unless GOMEMLIMIT sets one: GOGC paces the collector while the heap
// is small, the limit caps it when Badger's large allocations come and go.
const nodeGCPercent = 50

func main() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(nodeGCPercent)
	}
	procflags.Main(&cli.App{
		Name:      "kvnode",
		Usage:     "run one kvtx shard node",
		UsageText: "kvnode [--config FILE] [--listen ADDR] [--metrics-listen ADDR] [--data-dir DIR] [--insecure] NAME",
		Flags:     procflags.Flags,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("kvnode needs exactly one argument: the node's NAME (e.g. node1)", 1)
			}
			name := c.Args().First()
			cfg, log, err := procflags.Load(c)
			if err != nil {
				return err
			}
			if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
				debug.SetMemoryLimit(server.NodeMemoryLimit(cfg))
			}
			for i := range cfg.Nodes {
				if cfg.Nodes[i].Name == name {
					procflags.Override(c, &cfg.Nodes[i])
				}
			}
			opts, err := procflags.ServerOptions(c, log)
			if err != nil {
				return err
			}
			n, err := server.StartNode(context.Background(), cfg, name, opts)
			if err != nil {
				return err
			}
			return procflags.Run(n, log.With("process", name))
		},
	})
}
