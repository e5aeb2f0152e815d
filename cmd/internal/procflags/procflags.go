// Package procflags binds the flags that kvmaster and kvnode share (config file, listen
// addresses, data directory, logging, --insecure) and runs a process until SIGINT or SIGTERM,
// reloading its certificates on SIGHUP.
package procflags

import (
	"context"
	"fmt"
	"log/slog"
	"net"
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
	&cli.StringFlag{Name: "listen", Usage: "protocol `ADDR` to bind (overrides the config; the other processes still dial the config's address)"},
	&cli.StringFlag{Name: "metrics-listen", Usage: "Prometheus metrics `ADDR` (overrides the config; \"\" keeps it)"},
	&cli.StringFlag{Name: "data-dir", Usage: "data `DIR` (overrides the config)"},
	&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
	&cli.StringFlag{Name: "pprof-listen", Usage: "serve /debug/pprof on `ADDR`, a loopback address, on a listener of its own (off by default)"},
	&cli.BoolFlag{Name: "insecure", Usage: "serve and dial without TLS, trusting every peer with the role it claims (tests, benchmarks; logged at WARN). By default every link is mutual TLS with the certificates of the config's tls.dir (data/certs)"},
}

// signals receives SIGINT, SIGTERM and SIGHUP from the moment Load runs, so that a signal that
// arrives while the process is still starting is not fatal: it stops the process (or reloads
// its certificates) once it is up.
var signals = make(chan os.Signal, 4)

// Load reads the config named by --config (or the defaults) and returns it with the logger.
func Load(c *cli.Context) (txn.Config, *slog.Logger, error) {
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
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
// logger, --pprof-listen, --insecure and, in a crashpoints build, the crash hooks of
// KVTX_CRASH_AT.
func ServerOptions(c *cli.Context, log *slog.Logger) (server.Options, error) {
	hooks, err := CrashHooks()
	if err != nil {
		return server.Options{}, err
	}
	return server.Options{Logger: log, PprofListen: c.String("pprof-listen"), Hooks: hooks, Insecure: c.Bool("insecure")}, nil
}

// Override applies --listen, --metrics-listen and --data-dir to p. The other processes read
// the config file, not these flags, so they still dial p at the config's address: --listen
// keeps it as p's advertise address when the config gives none (and its listen host is no
// wildcard).
func Override(c *cli.Context, p *txn.Process) {
	if c.IsSet("listen") {
		if host, _, err := net.SplitHostPort(p.Listen); p.Advertise == "" && err == nil && !txn.IsWildcardHost(host) {
			p.Advertise = p.Listen
		}
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
	ReloadCerts() error
}

// Run waits for SIGINT or SIGTERM (or a server failure) and shuts p down. On SIGHUP it
// reloads p's certificates (a failed reload is logged, and the current ones stay).
func Run(p Process, log *slog.Logger) error {
	var failure error
wait:
	for {
		select {
		case s := <-signals:
			if s == syscall.SIGHUP {
				log.Info("reloading certificates", "signal", s.String())
				_ = p.ReloadCerts() // the loader logs the outcome
				continue
			}
			log.Info("shutting down", "signal", s.String())
			break wait
		case err := <-p.Done():
			failure = err
			log.Error("server failed", "err", err)
			break wait
		}
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
