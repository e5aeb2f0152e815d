// Command kvmaster runs kvtx's master: the router, timestamp oracle and two-phase commit
// coordinator. With no flags it serves the built-in local cluster.
package main

import (
	"context"

	"github.com/urfave/cli/v2"

	"github.com/kvtx/kvtx/cmd/internal/procflags"
	"github.com/kvtx/kvtx/txn/server"
)

func main() {
	procflags.Main(&cli.App{
		Name:      "kvmaster",
		Usage:     "run the kvtx master (router, timestamp oracle, 2PC coordinator)",
		UsageText: "kvmaster [--config FILE] [--listen ADDR] [--metrics-listen ADDR] [--data-dir DIR] [--insecure]",
		Flags:     procflags.Flags,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return cli.Exit("kvmaster takes no arguments", 1)
			}
			cfg, log, err := procflags.Load(c)
			if err != nil {
				return err
			}
			procflags.Override(c, &cfg.Master)
			opts, err := procflags.ServerOptions(c, log)
			if err != nil {
				return err
			}
			m, err := server.StartMaster(context.Background(), cfg, opts)
			if err != nil {
				return err
			}
			return procflags.Run(m, log.With("process", "master"))
		},
	})
}
