// Package procflags binds the flags that kvmaster and kvnode share (config file, listen
// addresses, data directory, logging) and runs a process until SIGINT or SIGTERM.
package procflags

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/server"
)

// Flags are the flags of a server process.
var Flags = []cli.Flag{
	&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "cluster config `FILE` (YAML); built-in defaults when absent", EnvVars: []string{"KVTX_CONFIG"}},
	&cli.StringFlag{Name: "listen", Usage: "protocol `ADDR` (overrides the config)"},
	&cli.StringFlag{Name: "metrics-listen", Usage: "Prometheus metrics `ADDR` (overrides the config; \"\" keeps it)"},
	&cli.StringFlag{Name: "data-dir", Usage: "data `DIR` (overrides the config)"},
	&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
	&cli.StringFlag{Name: "pprof-listen", Usage: "serve /debug/pprof on `ADDR`, a loopback address, on a listener of its own (off by default)"},
}

// signals receives SIGINT and SIGTERM from the moment Load runs, so that a signal that arrives
// while the process is still starting is not fatal: it stops the process once it is up.
var signals = make(chan os.Signal, 1)

// Load reads the config named by --config (or the defaults) and returns it with the logger.
func Load(c *cli.Context) (txn.Config, *slog.Logger, error) {
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return txn.Config{}, nil, fmt.Errorf("bad --log-level %q: want debug, info, warn or error", c.String("log-level"))
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg := txn.DefaultConfig()
	if path := c.String("config"); path != "" {
		var err error
		if cfg, err = server.LoadConfig(path); err != nil {
			return txn.Config{}, nil, err
		}
	}
	return cfg, log, nil
}

// ServerOptions returns the process options the flags and the environment ask for: the
// logger, --pprof-listen and, in a crashpoints build, the crash hooks of KVTX_CRASH_AT.
func ServerOptions(c *cli.Context, log *slog.Logger) (server.Options, error) {
	hooks, err := CrashHooks()
	if err != nil {
		return server.Options{}, err
	}
	return server.Options{Logger: log, PprofListen: c.String("pprof-listen"), Hooks: hooks}, nil
}

// Override applies --listen, --metrics-listen and --data-dir to p.
func Override(c *cli.Context, p *txn.Process) {
	if c.IsSet("listen") {
		p.Listen = c.String("listen")
	}
	if c.IsSet("metrics-listen") {
		p.Metrics = c.String("metrics-listen")
	}
	if c.IsSet("data-dir") {
		p.DataDir = c.String("data-dir")
	}
}

// Process is a started server that can be shut down.
type Process interface {
	Shutdown(ctx context.Context) error
	Done() <-chan error
}

// Run waits for SIGINT or SIGTERM (or a server failure) and shuts p down.
func Run(p Process, log *slog.Logger) error {
	var failure error
	select {
	case s := <-signals:
		log.Info("shutting down", "signal", s.String())
	case err := <-p.Done():
		failure = err
		log.Error("server failed", "err", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return failure
}

// Main runs app and exits 1 with one line on stderr when it fails.
func Main(app *cli.App) {
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %s\n", app.Name, strings.TrimSpace(err.Error()))
		os.Exit(1)
	}
}
