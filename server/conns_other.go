//go:build !unix

package server

// fileLimit is the process's limit on open descriptors, or 0 if unknown.
func fileLimit() uint64 { return 0 }
