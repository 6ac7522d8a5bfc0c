//go:build !linux

package audit

import "os"

// datasync makes f's data durable (fsync, or what Go's Sync does on the
// platform).
func datasync(f *os.File) error { return f.Sync() }

// preallocate is not done here: the file grows with each write.
func preallocate(*os.File, int64, int64) (bool, error) { return false, nil }
