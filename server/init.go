package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/vault"
)

// InitOptions says where `keyhole init` puts things.
type InitOptions struct {
	ConfigPath string
	DataDir    string
	KeyFile    string
	// Passphrase, if set, derives the master key from a passphrase instead
	// of writing a key file.
	Passphrase func() ([]byte, error)
	// Force replaces existing files; the old ones are kept as *.bak-<time>.
	Force bool
}

// InitResult lists what Init created.
type InitResult struct {
	Created []string
	Backups []string
	// Warnings are problems that did not stop Init, for the operator.
	Warnings []string
}

// ErrExists is returned by Init when a file it would create exists.
var ErrExists = errors.New("already exists")

// Init writes a starter config, a master key file (0600) unless a
// passphrase is used, and an empty vault. It refuses to replace any
// existing file unless Force, and then keeps a backup.
func Init(o InitOptions) (*InitResult, error) {
	res := &InitResult{}
	vaultPath := filepath.Join(o.DataDir, VaultFile)
	targets := []string{o.ConfigPath, vaultPath}
	if o.Passphrase == nil {
		targets = append(targets, o.KeyFile)
	}
	for _, p := range targets {
		if _, err := os.Stat(p); err == nil && !o.Force {
			return nil, fmt.Errorf("keyhole: %s %w; pass --force to replace it (a backup is kept)", p, ErrExists)
		}
	}
	dd, err := OpenDataDir(o.DataDir)
	if err != nil {
		return nil, err
	}
	defer dd.Close()
	stamp := time.Now().UTC().Format("20060102T150405Z")
	for _, p := range targets {
		if _, err := os.Stat(p); err == nil {
			bak := p + ".bak-" + stamp
			if err := os.Rename(p, bak); err != nil {
				return nil, fmt.Errorf("keyhole: back up %s: %w", p, err)
			}
			res.Backups = append(res.Backups, bak)
		}
	}
	if err := os.MkdirAll(filepath.Dir(o.ConfigPath), 0o755); err != nil {
		return nil, fmt.Errorf("keyhole: create config dir: %w", err)
	}
	if err := os.WriteFile(o.ConfigPath, config.Starter, 0o644); err != nil {
		return nil, fmt.Errorf("keyhole: write config: %w", err)
	}
	res.Created = append(res.Created, o.ConfigPath)

	ks := vault.KeySource{Passphrase: o.Passphrase}
	if o.Passphrase == nil {
		if err := vault.GenerateKeyFile(o.KeyFile, true); err != nil {
			return nil, err
		}
		res.Created = append(res.Created, o.KeyFile)
		ks = vault.KeySource{KeyFile: o.KeyFile}
	}
	v, err := vault.Create(vaultPath, ks)
	if err != nil {
		return nil, err
	}
	if err := recordInit(dd, v, res); err != nil {
		res.Warnings = append(res.Warnings, err.Error())
	}
	if err := v.Close(); err != nil {
		return nil, err
	}
	res.Created = append(res.Created, vaultPath)
	return res, nil
}

// recordInit writes the keyhole.init record: the first change of who may
// do what in a data dir is that it exists.
func recordInit(dd *DataDir, v *vault.Vault, res *InitResult) error {
	l, err := openAuditLog(dd, v, config.Audit{}, nil)
	if err != nil {
		return fmt.Errorf("keyhole init could not be recorded in the audit log: %w", err)
	}
	reason := "data dir " + dd.Path + " initialised with an empty vault"
	if len(res.Backups) > 0 {
		reason += fmt.Sprintf(" (%d earlier file(s) kept as backups)", len(res.Backups))
	}
	_, err = l.Write(context.Background(), changeRecord(time.Now(), ToolInit, reason))
	return errors.Join(err, l.Close())
}
