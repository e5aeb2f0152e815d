// Command lossyfs serves a directory over FUSE and, on command, forgets everything that was not
// fsynced, as a power cut would. See package lossy for the durability model.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/kvtx/kvtx/cmd/lossyfs/lossy"
)

func main() {
	app := &cli.App{
		Name:  "lossyfs",
		Usage: "a FUSE passthrough file system that can lose, on command, whatever was not fsynced",
		Commands: []*cli.Command{
			{
				Name:      "serve",
				Usage:     "mount the backing directory at MOUNTPOINT and serve it until SIGTERM or SIGINT",
				ArgsUsage: "MOUNTPOINT",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "backing", Usage: "the directory to serve (required)", Required: true},
					&cli.BoolFlag{Name: "debug", Usage: "log every FUSE request"},
				},
				Action: serve,
			},
			{
				Name:      "crash",
				Usage:     "make the server of MOUNTPOINT forget everything not durable; returns once the mount shows the durable state",
				ArgsUsage: "MOUNTPOINT",
				Action: func(c *cli.Context) error {
					mp, err := mountpointArg(c)
					if err != nil {
						return err
					}
					sum, err := lossy.RequestCrash(mp)
					if err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "lossyfs: crashed %s: %v\n", mp, sum)
					return nil
				},
			},
			{
				Name:      "status",
				Usage:     "show what the server of MOUNTPOINT holds for undo",
				ArgsUsage: "MOUNTPOINT",
				Action: func(c *cli.Context) error {
					mp, err := mountpointArg(c)
					if err != nil {
						return err
					}
					st, err := lossy.RequestStatus(mp)
					if err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "lossyfs: %s: %d dirty files, %d pages (%d bytes) saved for undo\n",
						mp, st.DirtyFiles, st.SavedPages, st.SavedBytes)
					return nil
				},
			},
		},
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func mountpointArg(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", fmt.Errorf("lossyfs %s: want one MOUNTPOINT, got %d arguments", c.Command.Name, c.NArg())
	}
	return c.Args().First(), nil
}

func serve(c *cli.Context) error {
	mp, err := mountpointArg(c)
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	// Before anything else, so a machine without FUSE says so in one line.
	if err := lossy.Available(); err != nil {
		return err
	}
	ln, err := lossy.Listen(mp)
	if err != nil {
		return err
	}
	defer ln.Close()
	srv, err := lossy.Mount(lossy.Config{Backing: c.String("backing"), Mountpoint: mp, Debug: c.Bool("debug")})
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeControl(ln) }()
	fmt.Fprintln(c.App.Writer, lossy.ReadyLine(srv.Backing(), srv.Mountpoint()))

	select {
	case <-sigs:
	case err = <-served:
		err = fmt.Errorf("lossyfs: control socket: %w", err)
	}
	ln.Close()
	return errors.Join(err, srv.Shutdown())
}
