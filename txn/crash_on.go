//go:build crashpoints

package txn

import (
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// CrashPointsEnabled reports whether this binary was built with the crashpoints tag.
const CrashPointsEnabled = true

var crashPoint, crashAt = parseCrashEnv(os.Getenv("KVTX_CRASH_AT"))

var crashCount atomic.Int64

func parseCrashEnv(v string) (string, int64) {
	if v == "" {
		return "", 0
	}
	name, nth, ok := strings.Cut(v, ":")
	n := int64(1)
	if ok {
		if p, err := strconv.ParseInt(nth, 10, 64); err == nil && p > 0 {
			n = p
		}
	}
	return name, n
}

// CrashPoint kills the process with SIGKILL the Nth time it reaches the point named by
// KVTX_CRASH_AT=POINT[:N]. Compiled in only with the crashpoints build tag.
func CrashPoint(name string) {
	if name != crashPoint || crashPoint == "" {
		return
	}
	if crashCount.Add(1) == crashAt {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}

// crashArmed reports whether KVTX_CRASH_AT names point.
func crashArmed(name string) bool { return crashPoint == name }
