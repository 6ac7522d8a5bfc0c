package vault

import (
	"crypto/cipher"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/tidwall/buntdb"
)

// Rekey re-encrypts every secret and record under the master key from newKey
// (a passphrase gets a fresh salt) and replaces the vault file atomically:
// the new vault is written beside the old one with mode 0600, synced, and
// renamed over it, so a crash leaves either the old vault or the new one, and
// no value sealed under the old key survives on disk. Afterwards the old key no longer opens the
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

	if v.readOnly {
		return ErrReadOnly
	}
	v.wmu.Lock()
	defer v.wmu.Unlock()
	v.forgetMetas()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return ErrClosed
	}
	records, err := v.reseal(aead)
	if err != nil {
		return err
	}

	v.recMu.Lock()
	names := maps.Clone(v.records)
	v.recMu.Unlock()
	next, err := build(v.path, mk, v.root, names, records)
	if err != nil {
		return err
	}
	if err := next.persist(); err != nil {
		_ = next.db.Close()
		return fmt.Errorf("vault: rekey: %w", err)
	}
	old := v.db
	v.db, v.aead = next.db, next.aead
	_ = old.Close()
	return nil
}

// reseal returns every secret and record of the vault sealed under aead,
// keyed as stored. The header records are left out: build writes them.
func (v *Vault) reseal(aead cipher.AEAD) (map[string]string, error) {
	out := make(map[string]string)
	err := v.db.View(func(tx *buntdb.Tx) error {
		var ferr error
		err := tx.Ascend("", func(key, val string) bool {
			switch {
			case key == keyCheck || key == keyKDF || key == keyRoot:
			case strings.HasPrefix(key, prefixSecret):
				name := strings.TrimPrefix(key, prefixSecret)
				rec, meta, err := v.getRecord(tx, name)
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
				rec.Meta = sealString(aead, metaAAD(name), []byte(mustJSON(meta)))
				rec.Description, rec.Created, rec.Updated, rec.LastUsed = "", time.Time{}, time.Time{}, time.Time{}
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
