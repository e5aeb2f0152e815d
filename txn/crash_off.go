//go:build !crashpoints

package txn

// CrashPointsEnabled reports whether this binary was built with the crashpoints tag.
const CrashPointsEnabled = false

// CrashPoint does nothing: crash points are compiled in only with the crashpoints build tag.
func CrashPoint(string) {}

func crashArmed(string) bool { return false }
