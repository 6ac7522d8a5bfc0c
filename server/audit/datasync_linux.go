package audit

import (
	"errors"
	"os"
	"syscall"
)

// datasync makes f's data durable with fdatasync(2), as SQLite syncs its
// own WAL on Linux: unlike fsync it does not write the inode when only its
// times changed (a WAL reused from its start keeps its size), which saves
// a second write to the disk on every group commit.
func datasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = syscall.Fdatasync(int(fd))
			if !errors.Is(serr, syscall.EINTR) {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}
