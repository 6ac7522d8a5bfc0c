package vault

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
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

// secretRecord is a secret as stored: its version, the sealed value (base64
// of nonce||ciphertext, additional data "secret:"+name) and its sealed
// metadata (additional data "meta:secret:"+name). Earlier versions kept the
// metadata in plain fields; they are read, and rewritten sealed on Open.
type secretRecord struct {
	Version int    `json:"version"`
	Sealed  string `json:"sealed"`
	Meta    string `json:"meta,omitempty"`

	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created,omitzero"`
	Updated     time.Time `json:"updated,omitzero"`
	LastUsed    time.Time `json:"last_used,omitzero"`
}

// secretMeta is the sealed part of a secret's metadata: nothing in the file
// says when a secret was set, rotated or last used.
type secretMeta struct {
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	Updated     time.Time `json:"updated"`
	LastUsed    time.Time `json:"last_used,omitzero"`
	Status      string    `json:"status,omitempty"`
}

func (m secretMeta) meta(name string, version int) Meta {
	return Meta{Name: name, Version: version, Description: m.Description, Created: m.Created, Updated: m.Updated, LastUsed: m.LastUsed, Status: m.Status}
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
		rec := secretRecord{Version: 1, Sealed: sealString(v.aead, key, value)}
		return v.putRecord(tx, name, rec, secretMeta{Description: description, Created: now, Updated: now})
	})
}

// Rotate replaces the value of an existing secret, increments its version and
// sets Updated. It returns the new metadata, ErrNotFound, or ErrEmptyValue.
func (v *Vault) Rotate(name string, value []byte) (Meta, error) {
	return v.rotate(name, value, nil)
}

// rotate stores value as the new version of secret name (status cleared),
// after check, if set, accepted the current record, in one transaction.
func (v *Vault) rotate(name string, value []byte, check func(rec secretRecord) error) (Meta, error) {
	if err := checkName(name); err != nil {
		return Meta{}, err
	}
	if len(value) == 0 {
		return Meta{}, fmt.Errorf("%w for %s", ErrEmptyValue, name)
	}
	var m Meta
	err := v.update(func(tx *buntdb.Tx) error {
		key := prefixSecret + name
		rec, meta, err := v.getRecord(tx, name)
		if err != nil {
			return err
		}
		if check != nil {
			if err := check(rec); err != nil {
				return err
			}
		}
		rec.Version++
		meta.Updated = time.Now().UTC()
		meta.Status = ""
		rec.Sealed = sealString(v.aead, key, value)
		m = meta.meta(name, rec.Version)
		return v.putRecord(tx, name, rec, meta)
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
		rec, err := decodeRecord(tx, name)
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

// Read decrypts the secret stored under name and returns it with its
// metadata, both read in one transaction, so the value is the one of the
// version the metadata names. Errors are those of Get.
func (v *Vault) Read(name string) (Secret, Meta, error) {
	if err := checkName(name); err != nil {
		return Secret{}, Meta{}, err
	}
	var plain []byte
	var m Meta
	err := v.view(func(tx *buntdb.Tx) error {
		rec, meta, err := v.getRecord(tx, name)
		if err != nil {
			return err
		}
		if plain, err = openString(v.aead, prefixSecret+name, rec.Sealed); err != nil {
			return fmt.Errorf("%w: secret %s cannot be decrypted (altered, moved or damaged record)", ErrCorrupt, name)
		}
		m = meta.meta(name, rec.Version)
		return nil
	})
	if err != nil {
		return Secret{}, Meta{}, err
	}
	return newSecret(plain), m, nil
}

// Meta returns the metadata of the secret stored under name, or ErrNotFound.
func (v *Vault) Meta(name string) (Meta, error) {
	if err := checkName(name); err != nil {
		return Meta{}, err
	}
	v.metaMu.Lock()
	m, ok := v.metas[name]
	gen := v.gen
	v.metaMu.Unlock()
	if ok {
		return m, nil
	}
	err := v.view(func(tx *buntdb.Tx) error {
		rec, meta, err := v.getRecord(tx, name)
		if err != nil {
			return err
		}
		m = meta.meta(name, rec.Version)
		return nil
	})
	if err != nil {
		return Meta{}, err
	}
	v.metaMu.Lock()
	if v.gen == gen {
		if v.metas == nil {
			v.metas = make(map[string]Meta)
		}
		v.metas[name] = m
	}
	v.metaMu.Unlock()
	return m, nil
}

// List returns the metadata of every secret, sorted by name.
func (v *Vault) List() ([]Meta, error) {
	var metas []Meta
	err := v.view(func(tx *buntdb.Tx) error {
		var derr error
		err := tx.AscendKeys(prefixSecret+"*", func(key, val string) bool {
			name := strings.TrimPrefix(key, prefixSecret)
			rec, meta, err := v.getRecord(tx, name)
			if err != nil {
				derr = err
				return false
			}
			metas = append(metas, meta.meta(name, rec.Version))
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
		rec, meta, err := v.getRecord(tx, name)
		if err != nil {
			return err
		}
		if !t.After(meta.LastUsed) {
			return errUnchanged
		}
		meta.LastUsed = t.UTC()
		return v.putRecord(tx, name, rec, meta)
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
// and are not listed. PutRecord replaces an existing record; the file keeps
// no earlier value of it. The first PutRecord of a name also records the name
// (sealed), so that its removal from the file can be told from its absence.
func (v *Vault) PutRecord(name string, data []byte) error {
	if err := checkRecordName(name); err != nil {
		return err
	}
	return v.update(func(tx *buntdb.Tx) error {
		v.recMu.Lock()
		defer v.recMu.Unlock()
		if v.records == nil {
			v.records = map[string]bool{}
		}
		if !v.records[name] {
			v.records[name] = true
			if err := v.setRoot(tx); err != nil {
				delete(v.records, name)
				return err
			}
		}
		return set(tx, prefixRecord+name, sealString(v.aead, prefixRecord+name, data))
	})
}

// GetRecord returns the data stored by PutRecord under name; an error
// wrapping ErrNotFound and fs.ErrNotExist if no record of that name was ever
// stored; ErrRecordRemoved if one was and is gone; or an error wrapping
// ErrCorrupt if it was altered.
func (v *Vault) GetRecord(name string) ([]byte, error) {
	if err := checkRecordName(name); err != nil {
		return nil, err
	}
	var data []byte
	err := v.view(func(tx *buntdb.Tx) error {
		sealed, err := tx.Get(prefixRecord + name)
		if errors.Is(err, buntdb.ErrNotFound) {
			v.recMu.Lock()
			had := v.records[name]
			v.recMu.Unlock()
			if had {
				return fmt.Errorf("%w: %s", ErrRecordRemoved, name)
			}
			return fmt.Errorf("%w: record %s (%w)", ErrNotFound, name, fs.ErrNotExist)
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
	return Derive(v.root, label)
}

// decodeRecord reads the record of secret name, or ErrNotFound.
func decodeRecord(tx *buntdb.Tx, name string) (secretRecord, error) {
	val, err := tx.Get(prefixSecret + name)
	if errors.Is(err, buntdb.ErrNotFound) {
		return secretRecord{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return secretRecord{}, fmt.Errorf("vault: store: %w", err)
	}
	var rec secretRecord
	if err := json.Unmarshal([]byte(val), &rec); err != nil {
		return secretRecord{}, fmt.Errorf("%w: secret %s has a malformed record", ErrCorrupt, name)
	}
	return rec, nil
}

// getRecord reads the record of secret name and opens its metadata.
func (v *Vault) getRecord(tx *buntdb.Tx, name string) (secretRecord, secretMeta, error) {
	rec, err := decodeRecord(tx, name)
	if err != nil {
		return rec, secretMeta{}, err
	}
	if rec.Meta == "" {
		// Written by an earlier version, in plain fields.
		return rec, secretMeta{Description: rec.Description, Created: rec.Created, Updated: rec.Updated, LastUsed: rec.LastUsed}, nil
	}
	plain, err := openString(v.aead, metaAAD(name), rec.Meta)
	if err != nil {
		return rec, secretMeta{}, fmt.Errorf("%w: secret %s has metadata that cannot be decrypted (altered, moved or damaged record)", ErrCorrupt, name)
	}
	var m secretMeta
	if err := json.Unmarshal(plain, &m); err != nil {
		return rec, secretMeta{}, fmt.Errorf("%w: secret %s has malformed metadata", ErrCorrupt, name)
	}
	return rec, m, nil
}

// putRecord stores the record of secret name with its metadata sealed.
func (v *Vault) putRecord(tx *buntdb.Tx, name string, rec secretRecord, m secretMeta) error {
	rec.Meta = sealString(v.aead, metaAAD(name), []byte(mustJSON(m)))
	rec.Description, rec.Created, rec.Updated, rec.LastUsed = "", time.Time{}, time.Time{}, time.Time{}
	return set(tx, prefixSecret+name, mustJSON(rec))
}

func metaAAD(name string) string { return "meta:" + prefixSecret + name }

// errUnchanged, returned by an update's fn, means it wrote nothing: the
// update succeeds without a new snapshot.
var errUnchanged = errors.New("vault: unchanged")

// view runs fn in a read transaction while holding the vault open.
func (v *Vault) view(fn func(tx *buntdb.Tx) error) error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.closed {
		return ErrClosed
	}
	var fnErr error
	err := v.db.View(func(tx *buntdb.Tx) error {
		fnErr = fn(tx)
		return fnErr
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("vault: store: %w", err)
	}
	return nil
}

// update runs fn in a write transaction and replaces the file with the
// result. If the file cannot be written the change is undone in memory too
// (the vault is read back from the file) and the error returned.
func (v *Vault) update(fn func(tx *buntdb.Tx) error) error {
	if v.readOnly {
		return ErrReadOnly
	}
	v.wmu.Lock()
	defer v.wmu.Unlock()
	v.forgetMetas()
	defer v.forgetMetas()
	v.mu.RLock()
	if v.closed {
		v.mu.RUnlock()
		return ErrClosed
	}
	var fnErr error
	err := v.db.Update(func(tx *buntdb.Tx) error {
		fnErr = fn(tx)
		return fnErr
	})
	if errors.Is(fnErr, errUnchanged) {
		v.mu.RUnlock()
		return nil
	}
	if fnErr != nil {
		v.mu.RUnlock()
		return fnErr
	}
	if err != nil {
		v.mu.RUnlock()
		return fmt.Errorf("vault: store: %w", err)
	}
	err = v.persist()
	v.mu.RUnlock()
	if err != nil {
		v.restore()
	}
	return err
}

// forgetMetas empties the metadata cache and makes reads in flight not
// fill it.
func (v *Vault) forgetMetas() {
	v.metaMu.Lock()
	v.metas = nil
	v.gen++
	v.metaMu.Unlock()
}

// restore reads the vault back from its file after a write that could not
// be persisted, so memory holds only what the file holds.
func (v *Vault) restore() {
	db, err := load(v.path)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		if err == nil {
			_ = db.Close()
		}
		return
	}
	if err != nil {
		// Neither the change nor the file can be trusted: stop serving.
		v.closed = true
		clear(v.root)
		v.aead = nil
		_ = v.db.Close()
		return
	}
	_ = v.db.Close()
	v.db = db
	// The record names in memory may include one the failed write added.
	var root string
	if db.View(func(tx *buntdb.Tx) error { root, _ = tx.Get(keyRoot); return nil }) == nil {
		if plain, err := openString(v.aead, keyRoot, root); err == nil && len(plain) > keySize {
			var names rootNames
			if json.Unmarshal(plain[keySize:], &names) == nil {
				v.recMu.Lock()
				v.records = make(map[string]bool, len(names.Records))
				for _, n := range names.Records {
					v.records[n] = true
				}
				v.recMu.Unlock()
			}
		}
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Only the vault's own plain structs are marshalled; they cannot fail.
		panic("vault: marshal: " + err.Error())
	}
	return string(b)
}
