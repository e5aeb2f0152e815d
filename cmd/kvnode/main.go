// Command kvnode runs one kvtx shard node: `kvnode node1` serves the node named node1 in the
// cluster config (built-in defaults when no config is given).
package main

import (
	"context"

	"github.com/urfave/cli/v2"

	"github.com/kvtx/kvtx/cmd/internal/procflags"
	"github.com/kvtx/kvtx/txn/server"
)

func main() {
	procflags.Main(&cli.App{
		Name:      "kvnode",
		Usage:     "run one kvtx shard node",
		UsageText: "kvnode [--config FILE] [--listen ADDR] [--metrics-listen ADDR] [--data-dir DIR] NAME",
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
			for i := range cfg.Nodes {
				if cfg.Nodes[i].Name == name {
					procflags.Override(c, &cfg.Nodes[i])
				}
			}
			n, err := server.StartNode(context.Background(), cfg, name, server.Options{Logger: log, Pprof: c.Bool("pprof")})
			if err != nil {
				return err
			}
			return procflags.Run(n, log.With("process", name))
		},
	})
}
