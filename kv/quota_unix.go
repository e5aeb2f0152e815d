//go:build unix

package kv

import (
	"io/fs"
	"syscall"
)

// allocatedBytes is the disk space fi's file takes: its allocated blocks.
func allocatedBytes(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return fi.Size()
}
