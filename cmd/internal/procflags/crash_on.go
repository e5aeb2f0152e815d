//go:build crashpoints

package procflags

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/kvtx/kvtx/txn"
)

// CrashHooks returns the hooks that make this process SIGKILL itself the Nth time (default the
// first) it reaches the point named by KVTX_CRASH_AT=POINT[:N], or none when it is unset. An
// unknown point or a bad N is an error, so that a typo does not make a crash test pass without
// crashing.
func CrashHooks() (txn.Hooks, error) {
	v := os.Getenv("KVTX_CRASH_AT")
	if v == "" {
		return txn.Hooks{}, nil
	}
	point, nth, hasN := strings.Cut(v, ":")
	if !slices.Contains(txn.CrashPoints, point) {
		return txn.Hooks{}, fmt.Errorf("KVTX_CRASH_AT=%s: unknown point %q (known: %s)", v, point, strings.Join(txn.CrashPoints, ", "))
	}
	n := int64(1)
	if hasN {
		var err error
		if n, err = strconv.ParseInt(nth, 10, 64); err != nil || n < 1 {
			return txn.Hooks{}, fmt.Errorf("KVTX_CRASH_AT=%s: the count after the colon must be a positive integer", v)
		}
	}
	var reached atomic.Int64
	return txn.Hooks{AtPoint: func(p string) {
		if p == point && reached.Add(1) == n {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}}, nil
}
