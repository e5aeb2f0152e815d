//go:build !unix

package kv

import "io/fs"

// allocatedBytes is the disk space fi's file takes; without block counts, its size.
func allocatedBytes(fi fs.FileInfo) int64 { return fi.Size() }
