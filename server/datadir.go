package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/keyhole-dev/keyhole/vault"
)

// ErrDataDirInUse is returned when another process owns the data dir.
var ErrDataDirInUse = errors.New("data dir in use")

// Files in a data dir.
const (
	lockFile  = "keyhole.lock"
	VaultFile = "vault.db"
	AuditFile = "audit.sqlite"
	// LegacyAuditFile is the buntdb audit log of keyhole before SQLite; it is
	// migrated into AuditFile on the first start and kept as audit.db.migrated.
	LegacyAuditFile = "audit.db"
)

// DataDir is a data dir this process owns: it holds an exclusive lock on
// it until Close, so buntdb never has two writers.
type DataDir struct {
	Path string
	lock *os.File
}

// OpenDataDir creates dir (0700) if needed and takes its exclusive lock. If
// another process holds it, the error wraps ErrDataDirInUse and names that
// process's pid.
func OpenDataDir(dir string) (*DataDir, error) {
	if dir == "" {
		return nil, errors.New("keyhole: no data dir (set --data-dir or KEYHOLE_DATA_DIR)")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keyhole: create data dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("keyhole: open lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid := readPID(f)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("keyhole: data dir %s is in use by pid %s (stop it, or use another --data-dir): %w", dir, pid, ErrDataDirInUse)
		}
		return nil, fmt.Errorf("keyhole: lock data dir %s: %w", dir, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &DataDir{Path: dir, lock: f}, nil
}

func readPID(f *os.File) string {
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	if pid := strings.TrimSpace(string(buf[:n])); pid != "" {
		return pid
	}
	return "unknown"
}

// OwnerAlive reports whether a live process other than this one owns the
// data dir, by the pid its lock file names. It never takes the lock, so it
// cannot make a keyhole that is starting find the data dir in use. A stale
// pid that the system has given to another process reads as alive.
func OwnerAlive(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, lockFile))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return false
	}
	err = syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// File returns the path of a file in the data dir.
func (d *DataDir) File(name string) string { return filepath.Join(d.Path, name) }

// Close releases the lock.
func (d *DataDir) Close() error {
	if d.lock == nil {
		return nil
	}
	err := d.lock.Close()
	d.lock = nil
	return err
}

// openVault opens the vault of data dir dir; a missing one says to run
// keyhole init.
func openVault(dir string, keys vault.KeySource) (*vault.Vault, error) {
	v, err := vault.Open(filepath.Join(dir, VaultFile), keys)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("keyhole: no vault in %s: run `keyhole init` first", dir)
	}
	return v, err
}
