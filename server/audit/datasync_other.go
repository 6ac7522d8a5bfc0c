//go:build !linux

package audit

import "os"

// datasync makes f's data durable (fsync, or what Go's Sync does on the
// platform).
func datasync(f *os.File) error { return f.Sync() }
