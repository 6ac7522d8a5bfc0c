package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

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
