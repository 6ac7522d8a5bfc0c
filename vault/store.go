package vault

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tidwall/buntdb"
)

// Meta is a secret's metadata (never the value).
type Meta struct {
	Name        string    `json:"name"`
	Version     int       `json:"version"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	Updated     time.Time `json:"updated"`
	LastUsed    time.Time `json:"last_used,omitzero"`
	// Status is what an operator must do about the secret, set by the
	// broker when the secret stopped working ("needs login"); "" when
	// nothing. A new value (Rotate, Replace) clears it.
	Status string `json:"status,omitempty"`
}

// secretRecord is a secret as stored: plain metadata and the sealed value
// (base64 of nonce||ciphertext, additional data "secret:"+name).
type secretRecord struct {
	Version     int       `json:"version"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	Updated     time.Time `json:"updated"`
	LastUsed    time.Time `json:"last_used,omitzero"`
	Status      string    `json:"status,omitempty"`
	Sealed      string    `json:"sealed"`
}

func (r secretRecord) meta(name string) Meta {
	return Meta{Name: name, Version: r.Version, Description: r.Description, Created: r.Created, Updated: r.Updated, LastUsed: r.LastUsed, Status: r.Status}
}

// nameRule is the rule ErrBadName refers to.
const nameRule = "a name is 1 to 64 characters from a-z, 0-9, '_', '.', '-' and starts with a letter"

// checkName enforces ^[a-z][a-z0-9_.-]{0,63}$.
func checkName(name string) error {
	ok := len(name) >= 1 && len(name) <= 64 && name[0] >= 'a' && name[0] <= 'z'
	for i := 1; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%w %q: %s", ErrBadName, name, nameRule)
	}
	return nil
}

// Set stores a new secret under name with version 1. It returns ErrBadName,
// ErrEmptyValue, or ErrExists if name is taken (use Rotate to replace a value).
func (v *Vault) Set(name string, value []byte, description string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if len(value) == 0 {
		return fmt.Errorf("%w for %s", ErrEmptyValue, name)
	}
	return v.update(func(tx *buntdb.Tx) error {
		key := prefixSecret + name
		if _, err := tx.Get(key); err == nil {
			return fmt.Errorf("%w: %s (use rotate to replace its value)", ErrExists, name)
		} else if !errors.Is(err, buntdb.ErrNotFound) {
			return fmt.Errorf("vault: store: %w", err)
		}
		now := time.Now().UTC()
		rec := secretRecord{Version: 1, Description: description, Created: now, Updated: now, Sealed: sealString(v.aead, key, value)}
		return set(tx, key, mustJSON(rec))
	})
}

// Rotate replaces the value of an existing secret, increments its version and
// sets Updated. It returns the new metadata, ErrNotFound, or ErrEmptyValue.
func (v *Vault) Rotate(name string, value []byte) (Meta, error) {
	if err := checkName(name); err != nil {
		return Meta{}, err
	}
	if len(value) == 0 {
		return Meta{}, fmt.Errorf("%w for %s", ErrEmptyValue, name)
	}
	var m Meta
	err := v.update(func(tx *buntdb.Tx) error {
		key := prefixSecret + name
		rec, err := getRecord(tx, name)
		if err != nil {
			return err
		}
		rec.Version++
		rec.Updated = time.Now().UTC()
		rec.Status = ""
		rec.Sealed = sealString(v.aead, key, value)
		m = rec.meta(name)
		return set(tx, key, mustJSON(rec))
	})
	if err != nil {
		return Meta{}, err
	}
	return m, nil
}

// Get decrypts the secret stored under name. It returns ErrNotFound, or an
// error wrapping ErrCorrupt (naming the secret) if its record was altered,
// moved from another name, or damaged.
func (v *Vault) Get(name string) (Secret, error) {
	if err := checkName(name); err != nil {
		return Secret{}, err
	}
	var plain []byte
	err := v.view(func(tx *buntdb.Tx) error {
		rec, err := getRecord(tx, name)
		if err != nil {
			return err
		}
		if plain, err = openString(v.aead, prefixSecret+name, rec.Sealed); err != nil {
			return fmt.Errorf("%w: secret %s cannot be decrypted (altered, moved or damaged record)", ErrCorrupt, name)
		}
		return nil
	})
	if err != nil {
		return Secret{}, err
	}
	return newSecret(plain), nil
}

// Meta returns the metadata of the secret stored under name, or ErrNotFound.
func (v *Vault) Meta(name string) (Meta, error) {
	if err := checkName(name); err != nil {
		return Meta{}, err
	}
	var m Meta
	err := v.view(func(tx *buntdb.Tx) error {
		rec, err := getRecord(tx, name)
		if err != nil {
			return err
		}
		m = rec.meta(name)
		return nil
	})
	if err != nil {
		return Meta{}, err
	}
	return m, nil
}

// List returns the metadata of every secret, sorted by name.
func (v *Vault) List() ([]Meta, error) {
	var metas []Meta
	err := v.view(func(tx *buntdb.Tx) error {
		var derr error
		err := tx.AscendKeys(prefixSecret+"*", func(key, val string) bool {
			name := strings.TrimPrefix(key, prefixSecret)
			rec, err := decodeRecord(name, val)
			if err != nil {
				derr = err
				return false
			}
			metas = append(metas, rec.meta(name))
			return true
		})
		if err != nil {
			return fmt.Errorf("vault: store: %w", err)
		}
		return derr
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(metas, func(i, j int) bool { return metas[i].Name < metas[j].Name })
	return metas, nil
}

// Delete removes the secret stored under name, or returns ErrNotFound.
func (v *Vault) Delete(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	return v.update(func(tx *buntdb.Tx) error {
		_, err := tx.Delete(prefixSecret + name)
		if errors.Is(err, buntdb.ErrNotFound) {
			return fmt.Errorf("%w: %s", ErrNotFound, name)
		}
		if err != nil {
			return fmt.Errorf("vault: store: %w", err)
		}
		return nil
	})
}

// Touch records t as the time the secret was last used. A t earlier than the
// recorded one is ignored, so concurrent callers cannot move it backwards.
func (v *Vault) Touch(name string, t time.Time) error {
	if err := checkName(name); err != nil {
		return err
	}
	return v.update(func(tx *buntdb.Tx) error {
		rec, err := getRecord(tx, name)
		if err != nil || !t.After(rec.LastUsed) {
			return err
		}
		rec.LastUsed = t.UTC()
		return set(tx, prefixSecret+name, mustJSON(rec))
	})
}

// maxRecordName bounds PutRecord names.
const maxRecordName = 128

// checkRecordName accepts 1 to 128 printable ASCII characters without spaces.
func checkRecordName(name string) error {
	ok := len(name) >= 1 && len(name) <= maxRecordName
	for i := 0; ok && i < len(name); i++ {
		ok = name[i] > ' ' && name[i] < 0x7f
	}
	if !ok {
		return fmt.Errorf("%w %q: a record name is 1 to %d printable ASCII characters without spaces", ErrBadName, name, maxRecordName)
	}
	return nil
}

// PutRecord stores data under name, sealed with additional data
// "record:"+name. Records are for small values other subsystems keep in the
// vault file, such as the audit chain's head checkpoint; they are not secrets
// and are not listed. PutRecord replaces an existing record.
func (v *Vault) PutRecord(name string, data []byte) error {
	if err := checkRecordName(name); err != nil {
		return err
	}
	return v.update(func(tx *buntdb.Tx) error {
		return set(tx, prefixRecord+name, sealString(v.aead, prefixRecord+name, data))
	})
}

// GetRecord returns the data stored by PutRecord under name, ErrNotFound if
// there is none, or an error wrapping ErrCorrupt if it was altered.
func (v *Vault) GetRecord(name string) ([]byte, error) {
	if err := checkRecordName(name); err != nil {
		return nil, err
	}
	var data []byte
	err := v.view(func(tx *buntdb.Tx) error {
		sealed, err := tx.Get(prefixRecord + name)
		if errors.Is(err, buntdb.ErrNotFound) {
			return fmt.Errorf("%w: record %s", ErrNotFound, name)
		}
		if err != nil {
			return fmt.Errorf("vault: store: %w", err)
		}
		if data, err = openString(v.aead, prefixRecord+name, sealed); err != nil {
			return fmt.Errorf("%w: record %s cannot be decrypted (altered, moved or damaged)", ErrCorrupt, name)
		}
		return nil
	})
	return data, err
}

// DeriveKey returns a 32-byte key derived with HKDF-SHA256 and label (for
// example "keyhole audit v1") from the vault's root key, for other
// subsystems such as audit MACs. Different labels give independent keys. The
// root key is random, sealed in the vault and unchanged by Rekey, so derived
// keys stay the same for the life of the vault file. After Close it returns nil.
func (v *Vault) DeriveKey(label string) []byte {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.closed {
		return nil
	}
	key, err := hkdf.Key(sha256.New, v.root, nil, label, keySize)
	if err != nil {
		// hkdf.Key fails only for lengths above 255*32 bytes.
		panic("vault: hkdf: " + err.Error())
	}
	return key
}

// getRecord reads and decodes the record of secret name, or ErrNotFound.
func getRecord(tx *buntdb.Tx, name string) (secretRecord, error) {
	val, err := tx.Get(prefixSecret + name)
	if errors.Is(err, buntdb.ErrNotFound) {
		return secretRecord{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return secretRecord{}, fmt.Errorf("vault: store: %w", err)
	}
	return decodeRecord(name, val)
}

func decodeRecord(name, val string) (secretRecord, error) {
	var rec secretRecord
	if err := json.Unmarshal([]byte(val), &rec); err != nil {
		return secretRecord{}, fmt.Errorf("%w: secret %s has a malformed record", ErrCorrupt, name)
	}
	return rec, nil
}

// view runs fn in a read transaction while holding the vault open.
func (v *Vault) view(fn func(tx *buntdb.Tx) error) error {
	return v.run(false, fn)
}

// update runs fn in a write transaction, committed durably, while holding the vault open.
func (v *Vault) update(fn func(tx *buntdb.Tx) error) error {
	return v.run(true, fn)
}

// run returns fn's error as is and wraps buntdb's own (commit) errors.
func (v *Vault) run(writable bool, fn func(tx *buntdb.Tx) error) error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.closed {
		return ErrClosed
	}
	var fnErr error
	call := func(tx *buntdb.Tx) error {
		fnErr = fn(tx)
		return fnErr
	}
	var err error
	if writable {
		err = v.db.Update(call)
	} else {
		err = v.db.View(call)
	}
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("vault: store: %w", err)
	}
	return nil
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Only the vault's own plain structs are marshalled; they cannot fail.
		panic("vault: marshal: " + err.Error())
	}
	return string(b)
}
