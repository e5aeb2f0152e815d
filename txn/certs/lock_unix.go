//go:build unix

package certs

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockName is the lock file of a certificate directory.
const lockName = ".lock"

// lockDir takes an exclusive flock on dir's lock file, waiting for it, and returns the
// function that releases it.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDWR, keyMode)
	if err != nil {
		return nil, fmt.Errorf("certs: lock %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("certs: lock %s: %w", dir, err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
