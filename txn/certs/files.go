package certs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The files of a certificate directory.
const (
	// CACert is the CA's certificate file: every process reads it. It may hold several CA
	// certificates (during a rotation), all trusted.
	CACert = "ca.crt"
	// CAKey is the CA's key file: only the cert commands read it.
	CAKey = "ca.key"
)

// Files names the three files a process loads: the CA certificates it trusts, its own
// certificate and its key.
type Files struct {
	CA, Cert, Key string
}

// FilesFor returns the files of the process or client named name in dir: dir/ca.crt,
// dir/NAME.crt and dir/NAME.key.
func FilesFor(dir, name string) Files {
	return Files{CA: filepath.Join(dir, CACert), Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key")}
}

// Modes of the files written: keys are readable by their owner only.
const (
	certMode os.FileMode = 0o644
	keyMode  os.FileMode = 0o600
	dirMode  os.FileMode = 0o700
)

// checkAbsent returns an error wrapping ErrExists that names every path that exists, unless
// overwrite.
func checkAbsent(overwrite bool, paths ...string) error {
	if overwrite {
		return nil
	}
	var there []string
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			there = append(there, p)
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("certs: %w", err)
		}
	}
	if len(there) > 0 {
		return fmt.Errorf("%w: %s", ErrExists, strings.Join(there, ", "))
	}
	return nil
}

// writeFile puts data at path atomically and durably: a temporary file in the same
// directory, written with mode perm, synced, then linked into place (refused if path exists,
// unless overwrite: then renamed over it), and the directory synced. A crash leaves the old
// file or the new one, never part of one.
func writeFile(path string, data []byte, perm os.FileMode, overwrite bool) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("certs: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("certs: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if overwrite {
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("certs: %w", err)
		}
	} else {
		if err := os.Link(tmp, path); err != nil {
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%w: %s", ErrExists, path)
			}
			return fmt.Errorf("certs: %w", err)
		}
		if err := os.Remove(tmp); err != nil {
			return fmt.Errorf("certs: %w", err)
		}
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("certs: sync %s: %w", dir, err)
	}
	return nil
}

// withDir creates dir (mode 0700) if needed and runs fn holding the directory's lock, so
// that two commands (or three processes of `make run` starting at once) never make two CAs
// or two certificates for one name.
func withDir(dir string, fn func() error) error {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer unlock()
	return fn()
}
