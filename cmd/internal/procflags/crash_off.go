//go:build !crashpoints

package procflags

import "github.com/kvtx/kvtx/txn"

// CrashHooks returns no hooks: crash points (KVTX_CRASH_AT) are compiled in only with the
// crashpoints build tag.
func CrashHooks() (txn.Hooks, error) { return txn.Hooks{}, nil }
