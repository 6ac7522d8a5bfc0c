package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
	// Force replaces the config, the master key and the vault. The old
	// config and key are kept as *.bak-<time>; the old vault goes aside
	// together with the audit log and the session store it keyed, into
	// one directory of the data dir, still verifiable with the old key.
	Force bool
}

// InitResult lists what Init created, reused and kept.
type InitResult struct {
	Created []string
	// Reused are the master key file and vault of an earlier init (a
	// second project on the same machine shares them).
	Reused []string
	// Backups are the files replaced by Force, and BackupDir the data dir
	// they went to (vault, audit log and sessions together).
	Backups   []string
	BackupDir string
	// Warnings are problems that did not stop Init, for the operator.
	Warnings []string
}

// ErrExists is returned by Init when a file it would create exists.
var ErrExists = errors.New("already exists")

// Init writes a starter config, a master key file (0600) unless a
// passphrase is used, and an empty vault. Where the user's master key and
// vault exist already (a second project), it writes just the config and
// reuses them. It refuses to replace an existing config unless Force.
//
// A vault keys its audit log and session store, so Init never creates a
// vault beside an audit log or session store of another: with Force they
// are moved aside together with the old vault; without, Init refuses and
// says why.
func Init(o InitOptions) (*InitResult, error) {
	res := &InitResult{}
	vaultPath := filepath.Join(o.DataDir, VaultFile)
	haveConfig, haveVault := exists(o.ConfigPath), exists(vaultPath)
	haveKey := o.Passphrase == nil && exists(o.KeyFile)
	if haveConfig && !o.Force {
		return nil, fmt.Errorf("keyhole: %s %w; pass --force to replace it (a backup is kept)", o.ConfigPath, ErrExists)
	}
	keyed := keyedFiles(o.DataDir)
	if !o.Force && !haveVault && len(keyed) > 0 {
		return nil, fmt.Errorf("keyhole: %s holds %s but no vault: they were written under a vault's key that is gone, so a new vault could not open them; `keyhole init --force` moves them aside (kept, in a backup directory of the data dir)",
			o.DataDir, strings.Join(keyed, ", "))
	}
	if haveVault && !o.Force {
		// A second project: a broker may own the data dir right now, and
		// this needs nothing of it.
		if err := writeStarter(o.ConfigPath); err != nil {
			return nil, err
		}
		res.Created = append(res.Created, o.ConfigPath)
		if haveKey {
			res.Reused = append(res.Reused, o.KeyFile)
		}
		res.Reused = append(res.Reused, vaultPath)
		return res, nil
	}
	dd, err := OpenDataDir(o.DataDir)
	if err != nil {
		if errors.Is(err, ErrDataDirInUse) {
			return nil, fmt.Errorf("%w; init needs the data dir itself", err)
		}
		return nil, err
	}
	defer dd.Close()
	stamp := time.Now().UTC().Format("20060102T150405Z")

	if haveConfig {
		bak := o.ConfigPath + ".bak-" + stamp
		if err := os.Rename(o.ConfigPath, bak); err != nil {
			return nil, fmt.Errorf("keyhole: back up %s: %w", o.ConfigPath, err)
		}
		res.Backups = append(res.Backups, bak)
	}
	if err := writeStarter(o.ConfigPath); err != nil {
		return nil, err
	}
	res.Created = append(res.Created, o.ConfigPath)

	if o.Force && (haveVault || len(keyed) > 0) {
		dir, moved, err := moveKeyed(dd, stamp)
		if err != nil {
			return nil, err
		}
		res.BackupDir = dir
		res.Backups = append(res.Backups, moved...)
	}
	ks := vault.KeySource{Passphrase: o.Passphrase}
	if o.Passphrase != nil && o.Force && exists(o.KeyFile) {
		// The old vault's key file would be tried before the passphrase.
		bak := o.KeyFile + ".bak-" + stamp
		if err := os.Rename(o.KeyFile, bak); err != nil {
			return nil, fmt.Errorf("keyhole: back up %s: %w", o.KeyFile, err)
		}
		res.Backups = append(res.Backups, bak)
	}
	if o.Passphrase == nil {
		switch {
		case haveKey && o.Force:
			bak := o.KeyFile + ".bak-" + stamp
			if err := os.Rename(o.KeyFile, bak); err != nil {
				return nil, fmt.Errorf("keyhole: back up %s: %w", o.KeyFile, err)
			}
			res.Backups = append(res.Backups, bak)
			fallthrough
		case !haveKey:
			if err := vault.GenerateKeyFile(o.KeyFile, true); err != nil {
				return nil, err
			}
			res.Created = append(res.Created, o.KeyFile)
		default:
			res.Reused = append(res.Reused, o.KeyFile) // a key file with no vault yet
		}
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

// writeStarter writes the starter keyhole.yaml at path, never over a file.
func writeStarter(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("keyhole: create config dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("keyhole: %s %w; pass --force to replace it (a backup is kept)", path, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("keyhole: write config: %w", err)
	}
	if _, err := f.Write(config.Starter); err != nil {
		f.Close()
		return fmt.Errorf("keyhole: write config: %w", err)
	}
	return f.Close()
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// keyedFiles are the files of a data dir written under its vault's keys:
// the audit log (in any of its files) and the session store.
func keyedFiles(dir string) []string {
	var out []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if n := e.Name(); !e.IsDir() && (strings.HasPrefix(n, "audit.") || n == SessionsFile) {
			out = append(out, n)
		}
	}
	return out
}

// moveKeyed moves the vault and every file it keys into one new
// directory of the data dir, so the old chain stays whole and verifiable
// with the old key (`keyhole audit verify --data-dir DIR`).
func moveKeyed(dd *DataDir, stamp string) (string, []string, error) {
	dir := dd.File("backup-" + stamp)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", nil, fmt.Errorf("keyhole: create %s: %w", dir, err)
	}
	var moved []string
	for _, n := range append([]string{VaultFile}, keyedFiles(dd.Path)...) {
		from := dd.File(n)
		if !exists(from) {
			continue
		}
		to := filepath.Join(dir, n)
		if err := os.Rename(from, to); err != nil {
			return dir, moved, fmt.Errorf("keyhole: move %s aside to %s (moved so far: %v): %w", from, dir, moved, err)
		}
		moved = append(moved, to)
	}
	return dir, moved, nil

}

// recordInit writes the keyhole.init record: the first change of who may
// do what in a data dir is that it exists.
func recordInit(dd *DataDir, v *vault.Vault, res *InitResult) error {
	l, err := openAuditLog(dd, nil, v, config.Audit{}, nil)
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
