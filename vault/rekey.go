package vault

import (
	"crypto/cipher"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/tidwall/buntdb"
)

// Rekey re-encrypts every secret and record under the master key from newKey
// (a passphrase gets a fresh salt) and replaces the vault file atomically:
// the new vault is written beside the old one with mode 0600, synced, and
// renamed over it, so a crash leaves either the old vault or the new one. The
// rewrite also drops the file's append-only history, so no value sealed under
// the old key survives on disk. Afterwards the old key no longer opens the
// vault. If any value fails to decrypt, Rekey changes nothing and returns an
// error wrapping ErrCorrupt. Keys from DeriveKey are unchanged.
func (v *Vault) Rekey(newKey KeySource) error {
	mk, err := newKey.resolve(nil, true)
	if err != nil {
		return err
	}
	defer clear(mk.key)
	aead, err := newAEAD(mk.key)
	if err != nil {
		return err
	}

	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return ErrClosed
	}
	records, err := v.reseal(aead)
	if err != nil {
		return err
	}

	tmp := v.path + ".rekey"
	// A leftover of an interrupted Rekey holds nothing the vault still needs.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("vault: rekey: %w", err)
	}
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("vault: rekey: %w", err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("vault: rekey: %w", err)
	}
	next, err := writeNew(tmp, mk, v.root, records)
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	// next.db keeps its descriptor across the rename, so it becomes the handle
	// of the file at v.path; no reopen is needed.
	if err := os.Rename(tmp, v.path); err != nil {
		_ = next.db.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("vault: rekey: %w", err)
	}
	old := v.db
	v.db, v.aead = next.db, next.aead
	_ = old.Close() // its file is already unlinked; nothing left to lose
	if err := syncDir(filepath.Dir(v.path)); err != nil {
		return fmt.Errorf("vault: rekey: re-encrypted, but the new file may not survive a crash: %w", err)
	}
	return nil
}

// reseal returns every secret and record of the vault sealed under aead,
// keyed as stored. The header records are left out: writeNew writes them.
func (v *Vault) reseal(aead cipher.AEAD) (map[string]string, error) {
	out := make(map[string]string)
	err := v.db.View(func(tx *buntdb.Tx) error {
		var ferr error
		err := tx.Ascend("", func(key, val string) bool {
			switch {
			case key == keyCheck || key == keyKDF || key == keyRoot:
			case strings.HasPrefix(key, prefixSecret):
				name := strings.TrimPrefix(key, prefixSecret)
				rec, err := decodeRecord(name, val)
				if err != nil {
					ferr = err
					return false
				}
				plain, err := openString(v.aead, key, rec.Sealed)
				if err != nil {
					ferr = fmt.Errorf("%w: secret %s cannot be decrypted; nothing was re-encrypted", ErrCorrupt, name)
					return false
				}
				rec.Sealed = sealString(aead, key, plain)
				clear(plain)
				out[key] = mustJSON(rec)
			case strings.HasPrefix(key, prefixRecord):
				plain, err := openString(v.aead, key, val)
				if err != nil {
					ferr = fmt.Errorf("%w: record %s cannot be decrypted; nothing was re-encrypted", ErrCorrupt, strings.TrimPrefix(key, prefixRecord))
					return false
				}
				out[key] = sealString(aead, key, plain)
				clear(plain)
			default:
				ferr = fmt.Errorf("%w: unknown record %q; nothing was re-encrypted", ErrCorrupt, key)
				return false
			}
			return true
		})
		if ferr != nil {
			return ferr
		}
		if err != nil {
			return fmt.Errorf("vault: rekey: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
