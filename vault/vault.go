// Package vault is keyhole's encrypted secret store: a buntdb file whose
// values are sealed with AES-256-GCM under a 32-byte master key taken from
// the environment, a key file or a passphrase (see KeySource).
//
// Every sealed value binds its buntdb key as additional authenticated data,
// so a record copied under another name fails to open. A key-check record
// makes a wrong master key a clear ErrWrongKey, and a damaged or truncated
// file is reported as ErrCorrupt and never replaced by an empty vault.
//
// buntdb does not lock its file: exactly one process may open a vault file
// at a time, which the caller enforces (keyhole's data-dir lock).
package vault

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
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
	path string

	mu     sync.RWMutex // guards the fields below; held exclusively by Rekey and Close
	db     *buntdb.DB
	aead   cipher.AEAD
	root   []byte // key material of DeriveKey, independent of the master key so derived keys survive Rekey
	closed bool
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
	v, err := writeNew(path, mk, root, nil)
	if err != nil {
		clear(root)
		_ = os.Remove(path)
		return nil, err
	}
	return v, nil
}

// writeNew fills the empty file at path with a vault under mk holding root
// and the given records (already sealed under mk), and returns it open.
func writeNew(path string, mk masterKey, root []byte, records map[string]string) (*Vault, error) {
	aead, err := newAEAD(mk.key)
	if err != nil {
		return nil, err
	}
	db, err := openDB(path)
	if err != nil {
		return nil, fmt.Errorf("vault: create %s: %w", path, err)
	}
	// The header goes first, in a transaction of its own, so a file cut short
	// anywhere in it has no key-check record and is refused as corrupt.
	err = db.Update(func(tx *buntdb.Tx) error {
		if mk.kdf != nil {
			if err := set(tx, keyKDF, mustJSON(mk.kdf)); err != nil {
				return err
			}
		}
		if err := set(tx, keyCheck, sealString(aead, keyCheck, []byte(checkPlaintext))); err != nil {
			return err
		}
		return set(tx, keyRoot, sealString(aead, keyRoot, root))
	})
	if err == nil && len(records) > 0 {
		err = db.Update(func(tx *buntdb.Tx) error {
			for k, val := range records {
				if err := set(tx, k, val); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("vault: write %s: %w", path, err)
	}
	return &Vault{path: path, db: db, aead: aead, root: root}, nil
}

// Open opens an existing vault file. A missing file yields an error wrapping
// fs.ErrNotExist (Open never creates one); an empty, damaged or truncated file
// yields ErrCorrupt and is left untouched; a wrong key yields ErrWrongKey; a
// file whose mode grants group or other access yields ErrVaultFileMode.
func Open(path string, ks KeySource) (*Vault, error) {
	if err := checkFile(path); err != nil {
		return nil, err
	}
	db, err := openDB(path)
	if err != nil {
		return nil, fmt.Errorf("vault: open %s: %w", path, err)
	}
	v, err := unlock(db, path, ks)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return v, nil
}

// checkFile refuses a vault file that is missing, not regular, open to group
// or other, empty, or not a complete buntdb log. It reads the file without
// modifying it: buntdb.Open would silently truncate a log that ends mid-record.
func checkFile(path string) error {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("vault: %s does not exist; run keyhole init to create it: %w", path, fs.ErrNotExist)
	}
	if err != nil {
		return fmt.Errorf("vault: open: %w", err)
	}
	switch perm := fi.Mode().Perm(); {
	case !fi.Mode().IsRegular():
		return fmt.Errorf("vault: open %s: not a regular file", path)
	case perm&0o077 != 0:
		return fmt.Errorf("%w: %s has mode %#o; fix with: chmod 600 %s", ErrVaultFileMode, path, perm, path)
	case fi.Size() == 0:
		return fmt.Errorf("%w: %s is empty (restore it from a backup; keyhole init creates a new vault only where none exists)", ErrCorrupt, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("vault: open: %w", err)
	}
	defer f.Close()
	mem, err := buntdb.Open(":memory:")
	if err != nil {
		return fmt.Errorf("vault: open %s: %w", path, err)
	}
	defer mem.Close()
	if err := mem.Load(f); err != nil {
		return fmt.Errorf("%w: %s is damaged or truncated (%v); restore it from a backup", ErrCorrupt, path, err)
	}
	return nil
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
	rootKey, err := openString(aead, keyRoot, root)
	if err != nil || len(rootKey) != keySize {
		return nil, fmt.Errorf("%w: %s has a damaged root key record", ErrCorrupt, path)
	}
	return &Vault{path: path, db: db, aead: aead, root: rootKey}, nil
}

// Close closes the vault and wipes its keys. Calling Close again returns nil.
func (v *Vault) Close() error {
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

// openDB opens the buntdb file at path, durable on every commit. Automatic
// shrinking is off: buntdb rewrites the file with mode 0666&^umask when it
// shrinks, which would widen the vault file's 0600.
func openDB(path string) (*buntdb.DB, error) {
	db, err := buntdb.Open(path)
	if err != nil {
		return nil, err
	}
	var cfg buntdb.Config
	if err := db.ReadConfig(&cfg); err != nil {
		_ = db.Close()
		return nil, err
	}
	cfg.SyncPolicy = buntdb.Always
	cfg.AutoShrinkDisabled = true
	if err := db.SetConfig(cfg); err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
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
