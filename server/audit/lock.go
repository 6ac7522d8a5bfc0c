package audit

import (
	"fmt"
	"os"

	"github.com/gofrs/flock"
)

// lockFile takes an exclusive lock on path+".lock" for the one writer of
// the log at path, so a second writer (which would fork the chain) is
// refused with ErrInUse. Closing the returned lock releases it. The lock
// is flock(2) on Unix and LockFileEx on Windows, so on both a reader can
// tell a running writer from a dead one (writerLocked).
func lockFile(path string) (*flock.Flock, error) {
	name := path + ".lock"
	l := flock.New(name, flock.SetFlag(os.O_RDWR|os.O_CREATE), flock.SetPermissions(0o600))
	ok, err := l.TryLock()
	if err != nil {
		return nil, fmt.Errorf("audit: lock %s: %w", name, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s is locked by another writer", ErrInUse, path)
	}
	return l, nil
}

// writerLocked reports whether a writer holds the lock of the log at path.
// It never creates the lock file.
func writerLocked(path string) bool {
	l := flock.New(path+".lock", flock.SetFlag(os.O_RDONLY))
	ok, err := l.TryRLock()
	if err != nil {
		return false // no lock file: no writer ever ran here
	}
	if ok {
		l.Unlock()
	}
	return !ok
}
