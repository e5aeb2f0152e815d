package lossy

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// ErrClosed is returned by a Server's methods after Shutdown.
var ErrClosed = errors.New("lossyfs: server shut down")

// Config says what to serve where.
type Config struct {
	// Backing is the directory whose tree the mount shows. Required; it must exist and be one
	// file system.
	Backing string
	// Mountpoint is where to mount; created if missing. Required; neither it nor Backing may be
	// inside the other.
	Mountpoint string
	// Debug logs every FUSE request and reply. Default off.
	Debug bool
	// Logger receives what the server does not return as an error (a lazy unmount, a failed
	// operation). Default: standard error.
	Logger *log.Logger
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if c.Backing == "" {
		errs = append(errs, errors.New("lossyfs: no backing directory"))
	} else if fi, err := os.Stat(c.Backing); err != nil {
		errs = append(errs, fmt.Errorf("lossyfs: backing directory: %w", err))
	} else if !fi.IsDir() {
		errs = append(errs, fmt.Errorf("lossyfs: backing %s is not a directory", c.Backing))
	}
	if c.Mountpoint == "" {
		errs = append(errs, errors.New("lossyfs: no mountpoint"))
	}
	if c.Backing != "" && c.Mountpoint != "" {
		b, err1 := filepath.Abs(c.Backing)
		m, err2 := filepath.Abs(c.Mountpoint)
		if err := errors.Join(err1, err2); err != nil {
			errs = append(errs, err)
		} else if within(m, b) || within(b, m) {
			errs = append(errs, fmt.Errorf("lossyfs: mountpoint %s and backing %s overlap", m, b))
		}
	}
	return errors.Join(errs...)
}

func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+string(filepath.Separator))
}

// Server serves one lossy mount. Its methods are safe to call concurrently; Crash and Shutdown
// run one at a time. Nothing in the serving process may touch the mount through mmap, or much at
// all: a thread blocked in a page fault on the mount is invisible to the Go scheduler and can
// deadlock the server. Run it as its own process (Start does).
type Server struct {
	cfg Config

	mu struct {
		sync.Mutex
		gen    *generation
		fuse   *fuse.Server
		closed bool
		// broken is why a crash failed half way; the backing tree is then in no known state
		// and every later Crash returns it.
		broken error
	}
}

// Mount takes everything in cfg.Backing as durable, mounts it at cfg.Mountpoint and serves it
// until Shutdown. The mount is usable when Mount returns.
func Mount(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := Available(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = log.New(os.Stderr, "", log.LstdFlags)
	}
	var err error
	if cfg.Backing, err = filepath.Abs(cfg.Backing); err != nil {
		return nil, err
	}
	if cfg.Mountpoint, err = filepath.Abs(cfg.Mountpoint); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Mountpoint, 0o755); err != nil {
		return nil, fmt.Errorf("lossyfs: %w", err)
	}
	g, err := newGeneration(cfg.Backing)
	if err != nil {
		return nil, fmt.Errorf("lossyfs: %w", err)
	}
	s := &Server{cfg: cfg}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.mountLocked(g); err != nil {
		return nil, err
	}
	return s, nil
}

// Mountpoint returns the absolute mountpoint.
func (s *Server) Mountpoint() string { return s.cfg.Mountpoint }

// Backing returns the absolute backing directory.
func (s *Server) Backing() string { return s.cfg.Backing }

// mountLocked mounts a fresh loopback tree over the backing directory for generation g. s.mu
// must be held.
func (s *Server) mountLocked(g *generation) error {
	root, err := fs.NewLoopbackRoot(s.cfg.Backing)
	if err != nil {
		return fmt.Errorf("lossyfs: %w", err)
	}
	lb := root.(*fs.LoopbackNode)
	rn := &node{LoopbackNode: lb, g: g, log: s.cfg.Logger}
	lb.RootData.RootNode = rn
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName:            "lossyfs",
			Name:              "lossyfs",
			DirectMountStrict: true,
			Debug:             s.cfg.Debug,
			Logger:            s.cfg.Logger,
			// Kernel passthrough would send reads and writes straight to the backing files.
			DisabledCapabilities: fuse.CAP_PASSTHROUGH,
		},
		Logger: s.cfg.Logger,
	}
	srv, err := fs.Mount(s.cfg.Mountpoint, rn, opts)
	if err != nil {
		return fmt.Errorf("lossyfs: mounting needs root and /dev/fuse: %w", err)
	}
	s.mu.gen, s.mu.fuse = g, srv
	return nil
}

// unmountLocked unmounts, retrying while the mount is busy and detaching it lazily in the end.
// A lazily detached mount lives on until its last user lets go, served by the old generation.
// s.mu must be held.
func (s *Server) unmountLocked() error {
	mp := s.cfg.Mountpoint
	var err error
	for delay := 5 * time.Millisecond; delay < 700*time.Millisecond; delay *= 2 {
		if err = unix.Unmount(mp, 0); err == nil {
			s.mu.fuse.Wait()
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(delay)
	}
	if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("lossyfs: unmount %s: %w", mp, err)
	}
	s.cfg.Logger.Printf("lossyfs: %s was busy (%v): detached it lazily", mp, err)
	return nil
}

// Crash forgets everything that was not durable, as a power cut would, and returns once the
// mount shows only the durable state, with a fresh kernel cache. It stops applying changes,
// unmounts (the kernel's last writeback of dirty mmap pages is dropped), rebuilds the backing
// tree from the durable listings and undo logs, and mounts again at the same place. Whatever
// uses the mount should be dead by then; a handle that survives belongs to the old, frozen
// mount.
func (s *Server) Crash() (Summary, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return Summary{}, ErrClosed
	}
	if s.mu.broken != nil {
		return Summary{}, s.mu.broken
	}
	sum, err := s.crashLocked()
	if err != nil {
		s.mu.broken = fmt.Errorf("lossyfs: an earlier crash failed: %w", err)
	}
	return sum, err
}

func (s *Server) crashLocked() (Summary, error) {
	g := s.mu.gen
	g.freeze()
	if err := s.unmountLocked(); err != nil {
		return Summary{}, err
	}
	sum, err := g.rebuild()
	if err != nil {
		return sum, fmt.Errorf("lossyfs: rebuild the durable tree: %w", err)
	}
	ng, err := newGeneration(s.cfg.Backing)
	if err != nil {
		return sum, fmt.Errorf("lossyfs: %w", err)
	}
	if err := s.mountLocked(ng); err != nil {
		return sum, err
	}
	return sum, nil
}

// Status reports what the server holds for undo now.
func (s *Server) Status() (Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return Status{}, ErrClosed
	}
	return s.mu.gen.status(), nil
}

// Shutdown unmounts (the kernel first writes back what it holds: a clean stop loses nothing) and
// removes StateDir from the backing directory. It is safe to call twice.
func (s *Server) Shutdown() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return nil
	}
	s.mu.closed = true
	var err error
	if mounted, _ := Mounted(s.cfg.Mountpoint); mounted || s.mu.broken == nil {
		err = s.unmountLocked()
	}
	s.mu.gen.freeze()
	if rmErr := os.RemoveAll(filepath.Join(s.cfg.Backing, StateDir)); err == nil {
		err = rmErr
	}
	return err
}
