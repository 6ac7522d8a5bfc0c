package server

import (
	"errors"
	"fmt"
	"os"

	"github.com/keyhole-dev/keyhole/vault"
)

// RekeyOptions says how Rekey finds the vault and where the new key goes.
type RekeyOptions struct {
	DataDir string
	// Keys is the current master key.
	Keys KeySource
	// KeyFile is the master key file: rewritten with the new key, or
	// removed when the new key comes from a passphrase.
	KeyFile string
	// Passphrase, if set, derives the new master key from a passphrase
	// (Argon2id) instead of a new key file.
	Passphrase func() ([]byte, error)
}

// Rekey re-encrypts every secret of the data dir's vault under a new
// master key, in one transaction: a new key file (written beside the old
// one, then moved over it) or a passphrase (then the old key file is
// removed). The old key stops working. It needs the data dir itself, so a
// running broker must be stopped first.
func Rekey(o RekeyOptions) error {
	dd, err := OpenDataDir(o.DataDir)
	if err != nil {
		if errors.Is(err, ErrDataDirInUse) {
			return fmt.Errorf("%w; stop the broker (keyhole serve) before this command", err)
		}
		return err
	}
	defer dd.Close()
	v, err := openVault(dd.Path, o.Keys)
	if err != nil {
		return err
	}
	defer v.Close()
	if o.Passphrase != nil {
		p, err := o.Passphrase()
		if err != nil {
			return err
		}
		defer clear(p)
		if err := v.Rekey(vault.KeySource{Passphrase: func() ([]byte, error) { return p, nil }}); err != nil {
			return err
		}
		if err := os.Remove(o.KeyFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("keyhole: vault re-encrypted under the passphrase, but the old key file remains: %w", err)
		}
		return nil
	}
	next := o.KeyFile + ".new"
	if err := vault.GenerateKeyFile(next, true); err != nil {
		return err
	}
	if err := v.Rekey(vault.KeySource{KeyFile: next}); err != nil {
		os.Remove(next)
		return err
	}
	if err := os.Rename(next, o.KeyFile); err != nil {
		return fmt.Errorf("keyhole: vault re-encrypted; the new key is in %s (move it to %s): %w", next, o.KeyFile, err)
	}
	return nil
}
