package vault

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/tidwall/buntdb"
)

// ErrChanged is returned by Replace when the secret no longer holds the
// value the caller expected: someone stored another one first.
var ErrChanged = errors.New("vault: secret changed since it was read")

// maxStatus caps a secret's status text.
const maxStatus = 256

// Replace stores next as the value of secret name, as Rotate does
// (version+1, status cleared), but only if its current value is prev: the
// check and the write are one transaction, so a value that renews itself
// (a rotated OAuth 2.0 refresh token) never overwrites one an operator
// stored meanwhile. It returns the new metadata, ErrNotFound,
// ErrEmptyValue, or ErrChanged.
func (v *Vault) Replace(name string, prev, next []byte) (Meta, error) {
	return v.rotate(name, next, func(rec secretRecord) error {
		cur, err := openString(v.aead, prefixSecret+name, rec.Sealed)
		if err != nil {
			return fmt.Errorf("%w: secret %s cannot be decrypted (altered, moved or damaged record)", ErrCorrupt, name)
		}
		same := subtle.ConstantTimeCompare(cur, prev) == 1
		clear(cur)
		if !same {
			return fmt.Errorf("%w: %s", ErrChanged, name)
		}
		return nil
	})
}

// SetStatus records what an operator must do about secret name ("needs
// login: the refresh token was refused"), shown by `keyhole secret list`;
// "" clears it. The value and its version are unchanged. Control
// characters are replaced, and the text is cut at 256 bytes.
func (v *Vault) SetStatus(name, status string) error {
	if err := checkName(name); err != nil {
		return err
	}
	b := []byte(status)
	for i, c := range b {
		if c < 0x20 || c == 0x7f {
			b[i] = ' '
		}
	}
	if len(b) > maxStatus {
		b = bytes.ToValidUTF8(b[:maxStatus], nil)
	}
	return v.update(func(tx *buntdb.Tx) error {
		rec, meta, err := v.getRecord(tx, name)
		if err != nil {
			return err
		}
		if meta.Status == string(b) {
			return nil
		}
		meta.Status = string(b)
		return v.putRecord(tx, name, rec, meta)
	})
}
