// Package vault is keyhole's encrypted secret store: a buntdb file whose
// values are sealed with AES-256-GCM under a 32-byte master key taken from
// the environment, a key file or a passphrase (see KeySource).
//
// Every sealed value binds its buntdb key as additional authenticated data,
// so a record copied under another name fails to open. A key-check record
// makes a wrong master key a clear ErrWrongKey, and a damaged or truncated
// file is reported as ErrCorrupt and never replaced by an empty vault.
//
// The vault is held in memory and every write replaces the file with a
// snapshot of it (written beside it, fsynced, renamed over it), so the file
// never keeps an earlier value of anything: no old checkpoint to replay, no
// old ciphertext. A secret's metadata (description, times) is sealed too, so
// nothing in the file dates anything. The names of the records ever stored
// with PutRecord are sealed with the root key, so a record that was removed
// from the file reads as ErrRecordRemoved, not as never stored.
//
// Exactly one process may open a vault file for writing at a time, which
// the caller enforces (keyhole's data-dir lock); OpenReadOnly reads a
// snapshot beside it.
package vault

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/tidwall/buntdb"
)

// Sentinel errors; test with errors.Is. Returned errors wrap them with detail.
var (
	ErrNotFound    = errors.New("vault: secret not found")
	ErrExists      = errors.New("vault: secret already exists")
	ErrWrongKey    = errors.New("vault: wrong master key")
	ErrCorrupt     = errors.New("vault: store is corrupt")
	ErrBadName     = errors.New("vault: invalid secret name")
	ErrEmptyValue  = errors.New("vault: empty secret value")
	ErrKeyFileMode = errors.New("vault: key file is readable by others")
	ErrNoKey       = errors.New("vault: no master key")
	// ErrVaultFileMode reports a vault file whose mode grants group or other access.
	ErrVaultFileMode = errors.New("vault: vault file is readable by others")
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("vault: closed")
	// ErrReadOnly is returned by every write to a vault opened with OpenReadOnly.
	ErrReadOnly = errors.New("vault: opened read-only")
	// ErrRecordRemoved is returned by GetRecord for a record that was stored
	// and is no longer in the file: someone removed it.
	ErrRecordRemoved = errors.New("vault: record was removed from the vault file")
)

// Keys of the vault's own records. Every sealed value uses its buntdb key as
// additional authenticated data.
const (
	keyCheck     = "keyhole:check" // sealed checkPlaintext: proves the master key
	keyKDF       = "keyhole:kdf"   // plain Argon2id parameters, passphrase vaults only
	keyRoot      = "keyhole:root"  // sealed random root of DeriveKey
	prefixSecret = "secret:"
	prefixRecord = "record:"

	checkPlaintext = "keyhole vault key check v1"
)

// Vault is an open vault file. Its methods are safe for concurrent use.
type Vault struct {
	path     string
	readOnly bool

	wmu sync.Mutex // serializes writes and the snapshots they write

	mu     sync.RWMutex // guards the fields below; held exclusively by Rekey, Close and a failed write
	db     *buntdb.DB   // in memory; the file is a snapshot of it
	aead   cipher.AEAD
	root   []byte // key material of DeriveKey, independent of the master key so derived keys survive Rekey
	closed bool

	recMu   sync.Mutex
	records map[string]bool // names of every record ever stored, sealed with the root key

	// metas caches decrypted metadata (the broker reads a secret's version
	// on every call); any write empties it. gen counts writes, so a reader
	// that raced a write does not cache what it read before it.
	metaMu sync.Mutex
	metas  map[string]Meta
	gen    uint64
}

// existsError reports an existing vault file; it matches both fs.ErrExist and ErrExists.
type existsError struct{ path string }

func (e existsError) Error() string {
	return "vault: create " + e.path + ": a vault file already exists; refusing to overwrite it"
}

func (e existsError) Is(target error) bool { return target == fs.ErrExist || target == ErrExists }

// Create creates a new vault file at path (its directory must exist) with mode
// 0600 and a key-check record. A passphrase-only KeySource derives the master
// key with Argon2id under a fresh salt and stores the parameters. Create
// refuses an existing file with an error matching fs.ErrExist and ErrExists.
func Create(path string, ks KeySource) (*Vault, error) {
	mk, err := ks.resolve(nil, true)
	if err != nil {
		return nil, err
	}
	defer clear(mk.key)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, existsError{path}
	}
	if err != nil {
		return nil, fmt.Errorf("vault: create: %w", err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("vault: create: %w", err)
	}
	root := make([]byte, keySize)
	_, _ = rand.Read(root)
	v, err := build(path, mk, root, map[string]bool{}, nil)
	if err == nil {
		err = v.persist()
	}
	if err != nil {
		if v != nil {
			_ = v.db.Close()
		}
		clear(root)
		_ = os.Remove(path)
		return nil, err
	}
	return v, nil
}

// build builds, in memory, a vault under mk holding root, the names of
// the records ever stored and the given records (already sealed under mk).
// It writes nothing: persist does.
func build(path string, mk masterKey, root []byte, names map[string]bool, records map[string]string) (*Vault, error) {
	aead, err := newAEAD(mk.key)
	if err != nil {
		return nil, err
	}
	db, err := buntdb.Open(":memory:")
	if err != nil {
		return nil, fmt.Errorf("vault: create %s: %w", path, err)
	}
	v := &Vault{path: path, db: db, aead: aead, root: root, records: names}
	err = db.Update(func(tx *buntdb.Tx) error {
		if mk.kdf != nil {
			if err := set(tx, keyKDF, mustJSON(mk.kdf)); err != nil {
				return err
			}
		}
		if err := set(tx, keyCheck, sealString(aead, keyCheck, []byte(checkPlaintext))); err != nil {
			return err
		}
		if err := v.setRoot(tx); err != nil {
			return err
		}
		for k, val := range records {
			if err := set(tx, k, val); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("vault: write %s: %w", path, err)
	}
	return v, nil
}

// rootRecord is the sealed root record: the root key, then the names of the
// records ever stored (a vault written before names were kept has only the
// key).
type rootNames struct {
	Records []string `json:"records"`
}

// setRoot seals the root key and the record names into the root record.
// v.recMu is held, or v is not yet shared.
func (v *Vault) setRoot(tx *buntdb.Tx) error {
	names := rootNames{Records: slices.Sorted(maps.Keys(v.records))}
	plain := append(append([]byte(nil), v.root...), mustJSON(names)...)
	defer clear(plain)
	return set(tx, keyRoot, sealString(v.aead, keyRoot, plain))
}

// Open opens an existing vault file for reading and writing. A missing file
// yields an error wrapping fs.ErrNotExist (Open never creates one); an empty,
// damaged or truncated file yields ErrCorrupt and is left untouched; a wrong
// key yields ErrWrongKey; a file whose mode grants group or other access
// yields ErrVaultFileMode. A vault written by an earlier version (plain
// metadata, no record names) is rewritten in the current form.
func Open(path string, ks KeySource) (*Vault, error) {
	v, err := open(path, ks)
	if err != nil {
		return nil, err
	}
	if err := v.upgrade(); err != nil {
		_ = v.Close()
		return nil, err
	}
	return v, nil
}

// OpenReadOnly opens a vault file as Open does, reading a snapshot of it and
// never writing to it: every write returns ErrReadOnly. It is safe beside a
// process that has the vault open for writing.
func OpenReadOnly(path string, ks KeySource) (*Vault, error) {
	v, err := open(path, ks)
	if err != nil {
		return nil, err
	}
	v.readOnly = true
	return v, nil
}

func open(path string, ks KeySource) (*Vault, error) {
	db, err := load(path)
	if err != nil {
		return nil, err
	}
	v, err := unlock(db, path, ks)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return v, nil
}

// load reads the vault file into memory. It refuses a file that is missing,
// not regular, open to group or other, empty, or not a complete buntdb
// file, and never modifies it.
func load(path string) (*buntdb.DB, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("vault: %s does not exist; run keyhole init to create it: %w", path, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("vault: open: %w", err)
	}
	switch perm := fi.Mode().Perm(); {
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("vault: open %s: not a regular file", path)
	case perm&0o077 != 0:
		return nil, fmt.Errorf("%w: %s has mode %#o; fix with: chmod 600 %s", ErrVaultFileMode, path, perm, path)
	case fi.Size() == 0:
		return nil, fmt.Errorf("%w: %s is empty (restore it from a backup; keyhole init creates a new vault only where none exists)", ErrCorrupt, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("vault: open: %w", err)
	}
	defer f.Close()
	mem, err := buntdb.Open(":memory:")
	if err != nil {
		return nil, fmt.Errorf("vault: open %s: %w", path, err)
	}
	if err := mem.Load(bufio.NewReader(f)); err != nil {
		_ = mem.Close()
		return nil, fmt.Errorf("%w: %s is damaged or truncated (%v); restore it from a backup", ErrCorrupt, path, err)
	}
	return mem, nil
}

// unlock reads the header records of db and proves the master key.
func unlock(db *buntdb.DB, path string, ks KeySource) (*Vault, error) {
	var check, kdf, root string
	err := db.View(func(tx *buntdb.Tx) error {
		var err error
		if check, err = tx.Get(keyCheck); err != nil {
			return fmt.Errorf("%w: %s has no key-check record", ErrCorrupt, path)
		}
		if root, err = tx.Get(keyRoot); err != nil {
			return fmt.Errorf("%w: %s has no root key record", ErrCorrupt, path)
		}
		kdf, err = tx.Get(keyKDF)
		if err != nil && !errors.Is(err, buntdb.ErrNotFound) {
			return fmt.Errorf("vault: open %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var params *kdfParams
	if kdf != "" {
		if params, err = parseKDFParams(kdf); err != nil {
			return nil, err
		}
	}
	mk, err := ks.resolve(params, false)
	if err != nil {
		return nil, err
	}
	defer clear(mk.key)
	aead, err := newAEAD(mk.key)
	if err != nil {
		return nil, err
	}
	plain, err := openString(aead, keyCheck, check)
	if err != nil {
		return nil, fmt.Errorf("%w (key from %s)", ErrWrongKey, mk.source)
	}
	if string(plain) != checkPlaintext {
		return nil, fmt.Errorf("%w: %s has a malformed key-check record", ErrCorrupt, path)
	}
	plainRoot, err := openString(aead, keyRoot, root)
	if err != nil || len(plainRoot) < keySize {
		return nil, fmt.Errorf("%w: %s has a damaged root key record", ErrCorrupt, path)
	}
	v := &Vault{path: path, db: db, aead: aead, root: plainRoot[:keySize:keySize]}
	if len(plainRoot) > keySize {
		var names rootNames
		if err := json.Unmarshal(plainRoot[keySize:], &names); err != nil {
			return nil, fmt.Errorf("%w: %s has a damaged root key record", ErrCorrupt, path)
		}
		v.records = make(map[string]bool, len(names.Records))
		for _, n := range names.Records {
			v.records[n] = true
		}
	}
	return v, nil
}

// upgrade rewrites a vault written by an earlier version: the names of its
// records into the root record, and its secrets' metadata sealed. The new
// snapshot replaces the file, and with it the file's history.
func (v *Vault) upgrade() error {
	var plain []string
	err := v.db.View(func(tx *buntdb.Tx) error {
		return tx.AscendKeys(prefixSecret+"*", func(key, val string) bool {
			var rec secretRecord
			if json.Unmarshal([]byte(val), &rec) == nil && rec.Meta == "" {
				plain = append(plain, strings.TrimPrefix(key, prefixSecret))
			}
			return true
		})
	})
	if err != nil {
		return fmt.Errorf("vault: open %s: %w", v.path, err)
	}
	v.recMu.Lock()
	named := v.records != nil
	v.recMu.Unlock()
	if named && len(plain) == 0 {
		return nil
	}
	return v.update(func(tx *buntdb.Tx) error {
		v.recMu.Lock()
		defer v.recMu.Unlock()
		if v.records == nil {
			v.records = map[string]bool{}
			err := tx.AscendKeys(prefixRecord+"*", func(key, _ string) bool {
				v.records[strings.TrimPrefix(key, prefixRecord)] = true
				return true
			})
			if err != nil {
				return fmt.Errorf("vault: store: %w", err)
			}
			if err := v.setRoot(tx); err != nil {
				return err
			}
		}
		for _, name := range plain {
			rec, meta, err := v.getRecord(tx, name)
			if err != nil {
				return err
			}
			if err := v.putRecord(tx, name, rec, meta); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close closes the vault and wipes its keys. Calling Close again returns nil.
func (v *Vault) Close() error {
	v.forgetMetas()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil
	}
	v.closed = true
	clear(v.root)
	v.aead = nil
	if err := v.db.Close(); err != nil {
		return fmt.Errorf("vault: close %s: %w", v.path, err)
	}
	return nil
}

// persist replaces the file with a snapshot of the vault: written beside it
// with mode 0600, fsynced, renamed over it and the rename made durable, so a
// crash leaves the old file or the new one, and no earlier value survives.
func (v *Vault) persist() error {
	tmp := v.path + ".tmp"
	// A leftover of an interrupted write holds nothing the vault still needs.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("vault: write %s: %w", v.path, err)
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("vault: write %s: %w", v.path, err)
	}
	w := bufio.NewWriter(f)
	err = v.db.Save(w)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, v.path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("vault: write %s: %w", v.path, err)
	}
	if err := syncDir(filepath.Dir(v.path)); err != nil {
		return fmt.Errorf("vault: write %s: the new file may not survive a crash: %w", v.path, err)
	}
	return nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("vault: cipher: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block) // fresh random nonce on every Seal
	if err != nil {
		return nil, fmt.Errorf("vault: cipher: %w", err)
	}
	return aead, nil
}

// sealString seals plain with aad and returns base64 of nonce||ciphertext.
func sealString(aead cipher.AEAD, aad string, plain []byte) string {
	return base64.StdEncoding.EncodeToString(aead.Seal(nil, nil, plain, []byte(aad)))
}

// openString reverses sealString.
func openString(aead cipher.AEAD, aad, sealed string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil {
		return nil, err
	}
	return aead.Open(b[:0], nil, b, []byte(aad))
}

func set(tx *buntdb.Tx, key, val string) error {
	if _, _, err := tx.Set(key, val, nil); err != nil {
		return fmt.Errorf("vault: store: %w", err)
	}
	return nil
}

// Refresh reads the file of a vault opened with OpenReadOnly again, so a
// reader beside a live writer sees what was written since it opened (the
// audit's newest checkpoint). The file must still be the same vault, under
// the same master key: a rekeyed or replaced file is refused with
// ErrWrongKey or ErrCorrupt and the snapshot held so far is kept.
func (v *Vault) Refresh() error {
	if !v.readOnly {
		return nil // a writable vault is the file's only writer
	}
	db, err := load(v.path)
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		_ = db.Close()
		return ErrClosed
	}
	var check, root string
	err = db.View(func(tx *buntdb.Tx) error {
		var err error
		if check, err = tx.Get(keyCheck); err != nil {
			return fmt.Errorf("%w: %s has no key-check record", ErrCorrupt, v.path)
		}
		if root, err = tx.Get(keyRoot); err != nil {
			return fmt.Errorf("%w: %s has no root key record", ErrCorrupt, v.path)
		}
		return nil
	})
	if err == nil {
		if plain, oerr := openString(v.aead, keyCheck, check); oerr != nil || string(plain) != checkPlaintext {
			err = fmt.Errorf("%w: %s is no longer sealed with the key it was opened with", ErrWrongKey, v.path)
		}
	}
	var names map[string]bool
	if err == nil {
		plainRoot, oerr := openString(v.aead, keyRoot, root)
		switch {
		case oerr != nil || len(plainRoot) < keySize || !bytes.Equal(plainRoot[:keySize], v.root):
			err = fmt.Errorf("%w: %s holds another vault's root key", ErrCorrupt, v.path)
		case len(plainRoot) > keySize:
			var rn rootNames
			if jerr := json.Unmarshal(plainRoot[keySize:], &rn); jerr != nil {
				err = fmt.Errorf("%w: %s has a damaged root key record", ErrCorrupt, v.path)
			}
			names = make(map[string]bool, len(rn.Records))
			for _, n := range rn.Records {
				names[n] = true
			}
		}
		clear(plainRoot)
	}
	if err != nil {
		_ = db.Close()
		return err
	}
	old := v.db
	v.db = db
	v.recMu.Lock()
	for n := range names {
		if v.records == nil {
			v.records = map[string]bool{}
		}
		v.records[n] = true // a name once stored stays known: its removal is tampering
	}
	v.recMu.Unlock()
	v.forgetMetas()
	_ = old.Close()
	return nil
}
