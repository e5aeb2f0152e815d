package cluster

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/kvtx/kvtx/cmd/lossyfs/lossy"
)

// The lossy disks of a cluster with Config.LossyDisks: one lossy file system per process, one
// machine each, whose power PowerCut cuts.

// mountDisks starts one lossy file system per process, its backing directory and its
// mountpoint side by side under Dir/disks.
func (c *Cluster) mountDisks(names []string) error {
	if err := lossy.Available(); err != nil {
		return fmt.Errorf("cluster: power loss needs a lossy file system: %w", err)
	}
	c.disks = map[string]*lossy.Process{}
	root := filepath.Join(c.cfg.Dir, "disks")
	for _, name := range names {
		backing, mountpoint := filepath.Join(root, name+".backing"), filepath.Join(root, name)
		for _, d := range []string{backing, mountpoint} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("cluster: %w", err)
			}
		}
		d, err := lossy.Start(c.cfg.Binaries.LossyFS, backing, mountpoint)
		if err != nil {
			return fmt.Errorf("cluster: disk of %s: %w", name, err)
		}
		c.disks[name] = d
	}
	return nil
}

// stopDisks unmounts every lossy file system; the processes using them must be dead.
func (c *Cluster) stopDisks() error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(c.disks)) {
		if err := c.disks[name].Stop(); err != nil {
			errs = append(errs, fmt.Errorf("cluster: disk of %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// PowerCut cuts the power of the named processes' machines at once, as a rack losing power:
// it SIGKILLs every one of them that runs, waits until all are dead, then makes their lossy
// file systems forget every write that was not fsynced, concurrently, and returns once each is
// mounted again with only its durable state (a summary per process). It needs LossyDisks.
func (c *Cluster) PowerCut(names ...string) (map[string]lossy.Summary, error) {
	if c.disks == nil {
		return nil, errors.New("cluster: power cut of a cluster without lossy file systems (Config.LossyDisks)")
	}
	for _, name := range names {
		if c.disks[name] == nil {
			return nil, fmt.Errorf("cluster: power cut of %s: no such process", name)
		}
	}
	c.kill("power cut", names)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		sums = map[string]lossy.Summary{}
		errs []error
	)
	for _, name := range names {
		wg.Go(func() {
			sum, err := c.disks[name].Crash()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("cluster: power cut of %s: %w", name, err))
				return
			}
			sums[name] = sum
		})
	}
	wg.Wait()
	return sums, errors.Join(errs...)
}
