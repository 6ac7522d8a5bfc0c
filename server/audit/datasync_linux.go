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

// preallocate reserves the bytes [off, off+n) of f with fallocate(2), so
// appends into them change neither the file's size nor its extents and
// each fdatasync writes their data alone (the journal's appends: p50
// about 30 µs and a third of the CPU of an fdatasync less than into a
// growing file, BENCHMARKS.md). The bytes read as zeros until written.
// It reports false where the file system cannot (tmpfs of old kernels,
// some network file systems): the file then grows with each write.
func preallocate(f *os.File, off, n int64) (bool, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return false, err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = syscall.Fallocate(int(fd), 0, off, n)
			if !errors.Is(ferr, syscall.EINTR) {
				return
			}
		}
	}); err != nil {
		return false, err
	}
	switch {
	case errors.Is(ferr, syscall.EOPNOTSUPP), errors.Is(ferr, syscall.ENOSYS):
		return false, nil
	case ferr != nil:
		return false, &os.PathError{Op: "fallocate", Path: f.Name(), Err: ferr}
	}
	return true, nil
}
