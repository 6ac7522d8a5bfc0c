//go:build !unix

package audit

import (
	"fmt"
	"os"
)

// lockFile opens path+".lock" for the one writer of the log at path. This
// platform has no advisory lock here: the data dir's lock is the only
// guard, and a second writer fails on its first append (the seqs collide).
func lockFile(path string) (*os.File, error) {
	name := path + ".lock"
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: open %s: %w", name, err)
	}
	return f, nil
}

// lockTells is whether writerLocked can tell a running writer: not here,
// so a reader neither waits for a writer's journal nor moves it.
const lockTells = false

// writerLocked reports whether a writer holds the lock of the log at path:
// unknown here.
func writerLocked(string) bool { return false }
