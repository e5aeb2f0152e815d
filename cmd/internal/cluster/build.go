package cluster

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"

	"github.com/kvtx/kvtx/cmd/lossyfs/lossy"
)

// Binaries are the programs a Cluster runs.
type Binaries struct {
	// Dir holds kvmaster, kvnode and kvctl, built with the crashpoints tag (inert unless
	// KVTX_CRASH_AT is set).
	Dir string
	// LossyFS is the lossyfs binary, for Config.LossyDisks.
	LossyFS string
}

// Path returns the path of one of the programs in Dir ("kvctl").
func (b Binaries) Path(program string) string { return filepath.Join(b.Dir, program) }

// Build builds kvmaster, kvnode and kvctl with the crashpoints tag, and lossyfs, into dir, from
// the module this package belongs to, with the go command on PATH. It takes as long as a
// build of the module.
func Build(dir string) (Binaries, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return Binaries{}, errors.New("cluster: build: cannot find the source tree")
	}
	cmd := exec.Command("go", "build", "-tags", "crashpoints", "-o", dir+string(filepath.Separator),
		"./cmd/kvmaster", "./cmd/kvnode", "./cmd/kvctl")
	cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		return Binaries{}, fmt.Errorf("cluster: build binaries: %w\n%s", err, out)
	}
	lossyFS, err := lossy.Build(dir)
	if err != nil {
		return Binaries{}, fmt.Errorf("cluster: %w", err)
	}
	return Binaries{Dir: dir, LossyFS: lossyFS}, nil
}
