package server

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gofrs/flock"

	"github.com/keyhole-dev/keyhole/vault"
)

// ErrDataDirInUse is returned when another process owns the data dir.
var ErrDataDirInUse = errors.New("data dir in use")

// Files in a data dir.
const (
	lockFile = "keyhole.lock"
	// PIDFile names the process that owns the data dir; it exists while
	// the lock is held.
	PIDFile = "keyhole.pid"
	// stoppingFile names a broker that is stopping (it no longer answers
	// on its socket); it goes with the pid file.
	stoppingFile = "keyhole.stopping"
	// cleanStopFile says the last broker stopped cleanly: every session's
	// counters were saved and no call outlived the shutdown. A starting
	// broker removes it before it serves.
	cleanStopFile = "keyhole.clean-stop"
	VaultFile     = "vault.db"
	AuditFile     = "audit.sqlite"
	// LegacyAuditFile is the buntdb audit log of keyhole before SQLite; it is
	// migrated into AuditFile on the first start and kept as audit.db.migrated.
	LegacyAuditFile = "audit.db"
)

// DataDir is a data dir this process owns: it holds an exclusive lock on
// it until Close, so buntdb never has two writers.
type DataDir struct {
	Path string
	lock *flock.Flock
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
	lk := flock.New(filepath.Join(dir, lockFile), flock.SetPermissions(0o600))
	ok, err := lk.TryLock()
	if err != nil {
		return nil, fmt.Errorf("keyhole: lock data dir %s: %w", dir, err)
	}
	if !ok {
		pid := "unknown"
		if n, err := ownerPID(dir); err == nil {
			pid = strconv.Itoa(n)
		}
		return nil, fmt.Errorf("keyhole: data dir %s is in use by pid %s (stop it with `keyhole stop`, or use another --data-dir): %w", dir, pid, ErrDataDirInUse)
	}
	pidPath := filepath.Join(dir, PIDFile)
	if err := os.WriteFile(pidPath, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		lk.Close()
		return nil, fmt.Errorf("keyhole: write %s: %w", pidPath, err)
	}
	return &DataDir{Path: dir, lock: lk}, nil
}

// ownerPID reads the pid of the process that owns (or last owned) dir.
func ownerPID(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, PIDFile))
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("keyhole: %s holds %q, not a pid", PIDFile, b)
	}
	return pid, nil
}

// OwnerAlive reports whether a live process other than this one owns the
// data dir, by the pid its pid file names. It never takes the lock, so it
// cannot make a keyhole that is starting find the data dir in use. A stale
// pid that the system has given to another process reads as alive.
func OwnerAlive(dir string) bool {
	pid, err := ownerPID(dir)
	if err != nil || pid == os.Getpid() {
		return false
	}
	return processAlive(pid)
}

// dataDirFree reports whether no process holds the data dir's lock. It
// takes the lock for an instant to know, so it is only for a caller that
// waits for an owner to let go (a process that has exited, even one not
// yet reaped, holds no lock).
func dataDirFree(dir string) bool {
	lk := flock.New(filepath.Join(dir, lockFile), flock.SetPermissions(0o600))
	ok, err := lk.TryLock()
	if err != nil || !ok {
		return false
	}
	lk.Close()
	return true
}

// markStopping notes that the broker owning the data dir is stopping.
func (d *DataDir) markStopping() {
	os.WriteFile(d.File(stoppingFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)
}

// StoppingBroker returns the pid of the broker that owns dir and is
// stopping (it no longer answers on its socket), if there is one.
func StoppingBroker(dir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, stoppingFile))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	owner, err := ownerPID(dir)
	return pid, err == nil && owner == pid && processAlive(pid)
}

// File returns the path of a file in the data dir.
func (d *DataDir) File(name string) string { return filepath.Join(d.Path, name) }

// Close releases the lock. The pid file goes first, so from the moment
// the lock is free no reader takes the data dir for owned.
func (d *DataDir) Close() error {
	if d.lock == nil {
		return nil
	}
	os.Remove(d.File(stoppingFile))
	os.Remove(d.File(PIDFile))
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

// markCleanStop records that the broker stopped cleanly (cleanStopFile).
func markCleanStop(d *DataDir) error {
	if err := os.WriteFile(d.File(cleanStopFile), nil, 0o600); err != nil {
		return err
	}
	return syncDir(d.Path)
}

// takeCleanStop reports whether the last broker stopped cleanly and
// removes the mark, durably, so a crash from now on is not taken for a
// clean stop.
func takeCleanStop(d *DataDir) (bool, error) {
	err := os.Remove(d.File(cleanStopFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("keyhole: %w", err)
	}
	// Where the removal cannot be made durable (a directory cannot be
	// fsynced on every system), the start takes it for a crash: counting
	// the calls again costs time, never a limit.
	return syncDir(d.Path) == nil, nil
}

// syncDir makes the names in dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("keyhole: fsync %s: %w", dir, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("keyhole: fsync %s: %w", dir, err)
	}
	return nil
}
