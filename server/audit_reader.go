package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/vault"
)

// ErrNoAuditLog is returned by OpenAuditReader for a data dir in which no
// call was ever recorded.
var ErrNoAuditLog = errors.New("no audit log yet")

// AuditReader is the audit log of a data dir opened read-only, for the
// commands that review, verify and follow it (audit.Log.Follow reads the
// file as it grows, with the key the reader already holds). It never writes to the log
// or the vault, so it is safe beside a running keyhole that owns the data
// dir. It reads the file as it was when opened; a call without an outcome
// reads as running while the keyhole owning the data dir is alive,
// interrupted otherwise.
type AuditReader struct {
	*audit.Log
	dir   string
	key   []byte // the audit MAC key, to read the log again as it grows
	vault *vault.Vault
}

// OpenAuditReader opens the audit log of dir read-only. The vault is
// opened for the audit key and the chain's checkpoint. Close releases
// both.
func OpenAuditReader(dir string, keys KeySource) (*AuditReader, error) {
	v, err := vault.OpenReadOnly(filepath.Join(dir, VaultFile), keys)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("keyhole: no vault in %s: run `keyhole init` first", dir)
		}
		return nil, err
	}
	r := &AuditReader{dir: dir, key: v.DeriveKey(auditKeyLabel), vault: v}
	if r.Log, err = r.open(v); err != nil {
		defer v.Close()
		if errors.Is(err, os.ErrNotExist) {
			// No log and no checkpoint ever: nothing was ever recorded. A
			// checkpoint without its log, or a checkpoint removed from the
			// vault, means the log was deleted.
			if _, cerr := v.GetRecord(audit.CheckpointName); !errors.Is(cerr, os.ErrNotExist) {
				return nil, fmt.Errorf("keyhole: the audit log %s is missing, but the vault has had its checkpoint: the log was deleted", r.path())
			}
			return nil, fmt.Errorf("keyhole: %w in %s: it is written on the first call", ErrNoAuditLog, dir)
		}
		return nil, err
	}
	return r, nil
}

func (r *AuditReader) path() string { return filepath.Join(r.dir, AuditFile) }

// open opens the log file as it is now; cp may be nil when the
// checkpoint is not needed (following, not verifying).
func (r *AuditReader) open(cp audit.Checkpointer) (*audit.Log, error) {
	o := audit.Options{
		Path: r.path(), Legacy: filepath.Join(r.dir, LegacyAuditFile), Key: r.key, ReadOnly: true,
		// A call in flight in the keyhole that owns the data dir is running, not interrupted.
		WriterAlive: func() bool { return OwnerAlive(r.dir) },
	}
	if cp != nil {
		o.Checkpoint = cp
	}
	return audit.Open(o)
}

// Close releases the log and the vault.
func (r *AuditReader) Close() error {
	return errors.Join(r.Log.Close(), r.vault.Close())
}

// OpenArchivedAudit opens, read-only, a log that `keyhole audit archive`
// moved into archiveDir: with the key of dataDir's vault (it is the same
// vault) and the checkpoint the vault held for it then, kept beside it.
func OpenArchivedAudit(dataDir, archiveDir string, keys KeySource) (*AuditReader, error) {
	v, err := vault.OpenReadOnly(filepath.Join(dataDir, VaultFile), keys)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("keyhole: no vault in %s: run `keyhole init` first", dataDir)
		}
		return nil, err
	}
	r := &AuditReader{dir: archiveDir, key: v.DeriveKey(auditKeyLabel), vault: v}
	r.Log, err = audit.Open(audit.Options{
		Path: r.path(), Key: r.key, ReadOnly: true,
		Checkpoint: audit.FileCheckpoint(filepath.Join(archiveDir, audit.ArchiveCheckpointFile)),
	})
	if err != nil {
		v.Close()
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("keyhole: no archived audit log in %s", archiveDir)
		}
		return nil, err
	}
	return r, nil
}

// ArchiveAudit is `keyhole audit archive`: the way out of an audit log
// that does not match its checkpoint. It needs the data dir (no broker
// may run), moves the log into audit-archive-<time> in the data dir, kept
// and verifiable (OpenArchivedAudit), and starts a new chain whose first
// record names the archived head and what verifying it found.
func ArchiveAudit(o RuntimeOptions) (audit.Archived, error) {
	dd, err := OpenDataDir(o.DataDir)
	if err != nil {
		if errors.Is(err, ErrDataDirInUse) {
			return audit.Archived{}, fmt.Errorf("%w; stop the broker first (keyhole stop)", err)
		}
		return audit.Archived{}, err
	}
	defer dd.Close()
	if _, err := os.Stat(dd.File(AuditFile)); err != nil {
		if _, lerr := os.Stat(dd.File(LegacyAuditFile)); lerr == nil {
			return audit.Archived{}, fmt.Errorf("keyhole: the audit log in %s is still in the old format (%s); a broker migrates it when it starts", dd.Path, LegacyAuditFile)
		}
		return audit.Archived{}, fmt.Errorf("keyhole: no audit log in %s to archive", dd.Path)
	}
	v, err := openVault(dd.Path, o.Keys)
	if err != nil {
		return audit.Archived{}, err
	}
	defer v.Close()
	dir := dd.File("audit-archive-" + time.Now().UTC().Format("20060102T150405Z"))
	return audit.Archive(audit.Options{Path: dd.File(AuditFile), Key: v.DeriveKey(auditKeyLabel), Checkpoint: v, Now: o.Now}, dir)
}
