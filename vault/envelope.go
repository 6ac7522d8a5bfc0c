package vault

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/tidwall/buntdb"
)

// This file is what another store of sealed secrets (vault/pgvault, for
// several brokers on PostgreSQL) shares with the vault file, so that both
// seal the same way and a migration moves values without changing them.

// Envelope seals values as the vault does: AES-256-GCM under the master
// key, a fresh random nonce per seal, base64 of nonce||ciphertext, and
// the name of what is sealed bound as associated data.
type Envelope struct{ aead cipher.AEAD }

// NewEnvelope returns the envelope of a 32-byte key.
func NewEnvelope(key []byte) (*Envelope, error) {
	if len(key) != keySize {
		return nil, fmt.Errorf("vault: key is %d bytes, want %d", len(key), keySize)
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	return &Envelope{aead: aead}, nil
}

// Seal seals plain with aad.
func (e *Envelope) Seal(aad string, plain []byte) string { return sealString(e.aead, aad, plain) }

// Open opens what Seal sealed with the same aad; any change fails.
func (e *Envelope) Open(aad, sealed string) ([]byte, error) { return openString(e.aead, aad, sealed) }

// SecretAAD is the associated data of a secret's sealed value. With the
// others below it names what a store seals: a secret's value and
// metadata, a record, the key check and the root key.
func SecretAAD(name string) string { return prefixSecret + name }

// MetaAAD is the associated data of a secret's sealed metadata.
func MetaAAD(name string) string { return metaAAD(name) }

// RecordAAD is the associated data of a record.
func RecordAAD(name string) string { return prefixRecord + name }

// Associated data and plaintext of the key check, and the root's.
const (
	CheckAAD       = keyCheck
	CheckPlaintext = checkPlaintext
	RootAAD        = keyRoot
	// KeySize is the size of the master key and of the root key.
	KeySize = keySize
)

// SecretMetadata is the sealed part of a secret's metadata, as the vault
// file seals it.
type SecretMetadata = secretMeta

// MetaOf returns the metadata a caller sees of a secret's sealed part.
func MetaOf(m SecretMetadata, name string, version int) Meta { return m.meta(name, version) }

// CheckName refuses a secret name the vault would refuse (ErrBadName).
func CheckName(name string) error { return checkName(name) }

// CheckRecordName refuses a record name the vault would refuse.
func CheckRecordName(name string) error { return checkRecordName(name) }

// NewSecret wraps a decrypted value; the Secret owns b.
func NewSecret(b []byte) Secret { return newSecret(b) }

// Derive derives a 32-byte key from a root key as DeriveKey does.
func Derive(root []byte, label string) []byte {
	key, err := hkdf.Key(sha256.New, root, nil, label, keySize)
	if err != nil {
		// hkdf.Key fails only for lengths above 255*32 bytes.
		panic("vault: hkdf: " + err.Error())
	}
	return key
}

// MasterKey resolves a master key that needs no vault file: from EnvKey,
// else from KeyFile. A passphrase is refused: its Argon2id parameters
// live in a vault file. The caller clears the key after use.
func (ks KeySource) MasterKey() (key []byte, source string, err error) {
	if ks.EnvKey == "" && ks.KeyFile == "" {
		return nil, "", fmt.Errorf("%w: set %s or provide a key file (a passphrase works only with a vault file)", ErrNoKey, EnvMasterKey)
	}
	mk, err := KeySource{EnvKey: ks.EnvKey, KeyFile: ks.KeyFile}.resolve(nil, false)
	if err != nil {
		return nil, "", err
	}
	return mk.key, mk.source, nil
}

// Dump is everything a vault holds, decrypted, for moving it into another
// store: its root key (so derived keys stay the same), its secrets with
// their metadata, and its records.
type Dump struct {
	Root    []byte
	Secrets []DumpedSecret
	Records map[string][]byte
}

// DumpedSecret is one secret of a Dump.
type DumpedSecret struct {
	Meta     Meta
	Value    []byte
	Metadata SecretMetadata
}

// Dump decrypts everything the vault holds. The caller clears it.
func (v *Vault) Dump() (*Dump, error) {
	metas, err := v.List()
	if err != nil {
		return nil, err
	}
	d := &Dump{Records: map[string][]byte{}}
	v.mu.RLock()
	d.Root = append([]byte(nil), v.root...)
	v.mu.RUnlock()
	for _, m := range metas {
		s, err := v.Get(m.Name)
		if err != nil {
			return nil, err
		}
		var sm secretMeta
		err = v.view(func(tx *buntdb.Tx) error {
			_, sm, err = v.getRecord(tx, m.Name)
			return err
		})
		if err != nil {
			return nil, err
		}
		d.Secrets = append(d.Secrets, DumpedSecret{Meta: m, Value: append([]byte(nil), s.Bytes()...), Metadata: sm})
	}
	var names []string
	err = v.view(func(tx *buntdb.Tx) error {
		return tx.AscendKeys(prefixRecord+"*", func(k, _ string) bool {
			names = append(names, strings.TrimPrefix(k, prefixRecord))
			return true
		})
	})
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		data, err := v.GetRecord(n)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		d.Records[n] = data
	}
	return d, nil
}
