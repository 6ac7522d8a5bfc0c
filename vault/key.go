package vault

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/crypto/argon2"
)

// Environment variables the CLI reads to fill a KeySource.
const (
	EnvMasterKey  = "KEYHOLE_MASTER_KEY" // base64 of the 32-byte master key
	EnvPassphrase = "KEYHOLE_PASSPHRASE" // passphrase of a passphrase-protected vault
)

const (
	keySize        = 32
	maxKeyFileSize = 1024
)

// KeySource says where the master key comes from, tried in this order:
//
//   - EnvKey: base64 of 32 bytes (from KEYHOLE_MASTER_KEY);
//   - KeyFile: a file holding base64 of 32 bytes; its mode must not grant
//     group or other any access (like ssh, keyhole refuses it otherwise). A
//     KeyFile that does not exist is skipped in favour of Passphrase;
//   - Passphrase: called only when needed; the key is derived with Argon2id,
//     whose parameters and salt are stored in the vault file in a plain,
//     non-secret record. The returned slice is zeroed after use.
type KeySource struct {
	EnvKey     string
	KeyFile    string
	Passphrase func() ([]byte, error)
}

// masterKey is a resolved master key.
type masterKey struct {
	key    []byte
	kdf    *kdfParams // non-nil only for a passphrase-derived key
	source string     // where the key came from, for error messages; never the key
}

// resolve finds the master key. When creating, a passphrase gets fresh
// Argon2id parameters; when opening, stored holds the vault's parameters
// (nil if the vault does not use a passphrase).
func (ks KeySource) resolve(stored *kdfParams, creating bool) (masterKey, error) {
	if ks.EnvKey != "" {
		key, err := decodeKey([]byte(ks.EnvKey))
		if err != nil {
			return masterKey{}, fmt.Errorf("vault: %s is not the base64 of %d bytes", EnvMasterKey, keySize)
		}
		return masterKey{key: key, source: EnvMasterKey}, nil
	}
	if ks.KeyFile != "" {
		key, err := readKeyFile(ks.KeyFile)
		switch {
		case err == nil:
			return masterKey{key: key, source: "key file " + ks.KeyFile}, nil
		case !errors.Is(err, fs.ErrNotExist):
			return masterKey{}, err
		case ks.Passphrase == nil:
			return masterKey{}, fmt.Errorf("%w: key file %s does not exist; run keyhole init, or set %s", ErrNoKey, ks.KeyFile, EnvMasterKey)
		}
	}
	if ks.Passphrase == nil {
		return masterKey{}, fmt.Errorf("%w: set %s, create a key file with keyhole init, or use a passphrase (keyhole init --passphrase)", ErrNoKey, EnvMasterKey)
	}
	params := stored
	if creating {
		params = newKDFParams()
	} else if params == nil {
		return masterKey{}, fmt.Errorf("%w: this vault is not protected by a passphrase; set %s or provide its key file", ErrNoKey, EnvMasterKey)
	}
	pass, err := ks.Passphrase()
	defer clear(pass)
	if err != nil {
		return masterKey{}, fmt.Errorf("vault: read passphrase: %w", err)
	}
	if len(pass) == 0 {
		return masterKey{}, fmt.Errorf("%w: the passphrase is empty", ErrNoKey)
	}
	return masterKey{key: params.derive(pass), kdf: params, source: "passphrase"}, nil
}

// readKeyFile reads a key file, refusing one whose mode grants group or other
// any access. A missing file yields an error wrapping fs.ErrNotExist.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("vault: key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("vault: key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("vault: key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %#o; fix with: chmod 600 %s", ErrKeyFileMode, path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	defer clear(data)
	if err != nil {
		return nil, fmt.Errorf("vault: key file %s: %w", path, err)
	}
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("vault: key file %s is larger than %d bytes; it does not hold a key", path, maxKeyFileSize)
	}
	key, err := decodeKey(data)
	if err != nil {
		return nil, fmt.Errorf("vault: key file %s does not hold the base64 of %d bytes", path, keySize)
	}
	return key, nil
}

// decodeKey decodes base64 (surrounding white space allowed) of exactly keySize bytes.
func decodeKey(text []byte) ([]byte, error) {
	text = bytes.TrimSpace(text)
	key := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
	n, err := base64.StdEncoding.Decode(key, text)
	if err != nil || n != keySize {
		clear(key)
		return nil, errors.New("vault: bad key encoding")
	}
	return key[:n], nil
}

// GenerateKeyFile writes a fresh random master key (base64 and a newline) to
// path with mode 0600, creating missing parent directories with mode 0700.
// It refuses to overwrite an existing file (error wrapping fs.ErrExist)
// unless force is set; with force the file is replaced atomically.
func GenerateKeyFile(path string, force bool) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("vault: key file: %w", err)
	}
	key := make([]byte, keySize)
	_, _ = rand.Read(key) // crypto/rand.Read never fails; it aborts the program instead
	data := []byte(base64.StdEncoding.EncodeToString(key) + "\n")
	clear(key)
	defer clear(data)

	if !force {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("vault: key file %s already exists; refusing to overwrite it (it may be the only key to a vault): %w", path, fs.ErrExist)
		}
		if err != nil {
			return fmt.Errorf("vault: key file: %w", err)
		}
		if err := writeSync(f, data); err != nil {
			_ = os.Remove(path)
			return fmt.Errorf("vault: key file %s: %w", path, err)
		}
		return syncDir(filepath.Dir(path))
	}

	f, err := os.CreateTemp(filepath.Dir(path), ".master.key-*") // CreateTemp uses mode 0600
	if err != nil {
		return fmt.Errorf("vault: key file: %w", err)
	}
	tmp := f.Name()
	if err := writeSync(f, data); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("vault: key file %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("vault: key file: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

// writeSync writes data to f, syncs and closes it.
func writeSync(f *os.File, data []byte) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir makes a rename or create in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("vault: sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("vault: sync %s: %w", dir, err)
	}
	return nil
}

// kdfParams are the Argon2id parameters of a passphrase-protected vault.
// They are not secret and are stored in plain text in the vault file.
type kdfParams struct {
	Alg       string `json:"alg"`
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
	Salt      []byte `json:"salt"`
}

const kdfArgon2id = "argon2id"

// rfc9106Cost is the RFC 9106 second recommended Argon2id cost (t=3,
// m=64 MiB, p=4).
var rfc9106Cost = kdfParams{Alg: kdfArgon2id, Time: 3, MemoryKiB: 64 * 1024, Threads: 4}

// kdfCost is the cost new passphrase vaults get. Only this package's
// tests lower it (to the least parseKDFParams accepts), to keep the suite
// fast under the race detector; nothing outside the package can.
var kdfCost = rfc9106Cost

// newKDFParams returns kdfCost with a fresh 16-byte salt.
func newKDFParams() *kdfParams {
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	p := kdfCost
	p.Salt = salt
	return &p
}

// parseKDFParams decodes stored parameters, refusing values outside sane
// bounds: the record is not authenticated, and a huge memory cost would let an
// edited file exhaust memory before the key check could fail.
func parseKDFParams(data string) (*kdfParams, error) {
	var p kdfParams
	if err := json.Unmarshal([]byte(data), &p); err != nil {
		return nil, fmt.Errorf("%w: passphrase parameters: %v", ErrCorrupt, err)
	}
	ok := p.Alg == kdfArgon2id &&
		p.Time >= 1 && p.Time <= 64 &&
		p.MemoryKiB >= 8*1024 && p.MemoryKiB <= 4*1024*1024 &&
		p.Threads >= 1 && p.Threads <= 64 &&
		len(p.Salt) >= 16 && len(p.Salt) <= 64
	if !ok {
		return nil, fmt.Errorf("%w: passphrase parameters out of range", ErrCorrupt)
	}
	return &p, nil
}

func (p *kdfParams) derive(pass []byte) []byte {
	return argon2.IDKey(pass, p.Salt, p.Time, p.MemoryKiB, p.Threads, keySize)
}
