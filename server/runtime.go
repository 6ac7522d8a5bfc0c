package server

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/tools"
	"github.com/keyhole-dev/keyhole/vault"
)

// auditKeyLabel derives the audit MAC key from the master key.
const auditKeyLabel = "keyhole audit v1"

// RuntimeOptions says where a runtime's parts live.
type RuntimeOptions struct {
	DataDir    string
	ConfigPath string
	Keys       vault.KeySource
	Logger     *slog.Logger
	Env        tools.Env
	Now        func() time.Time
	Metrics    *Metrics
}

// Runtime is everything a serving keyhole process holds: the locked data
// dir, the vault, the audit log and the broker over them.
type Runtime struct {
	DataDir *DataDir
	Vault   *vault.Vault
	Audit   *audit.Log
	Broker  *Broker
}

// Open locks the data dir, loads the config, and opens the vault and the
// audit log. Close releases them in reverse order.
func Open(o RuntimeOptions) (*Runtime, error) {
	cfg, err := LoadConfig(o.ConfigPath, o.Env)
	if err != nil {
		return nil, err
	}
	dd, err := OpenDataDir(o.DataDir)
	if err != nil {
		return nil, err
	}
	rt := &Runtime{DataDir: dd}
	v, err := vault.Open(dd.File(VaultFile), o.Keys)
	if err != nil {
		rt.Close()
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("keyhole: no vault in %s: run `keyhole init` first", dd.Path)
		}
		return nil, err
	}
	rt.Vault = v
	log, err := audit.Open(audit.Options{
		Path:       dd.File(AuditFile),
		Legacy:     dd.File(LegacyAuditFile),
		Key:        v.DeriveKey(auditKeyLabel),
		Checkpoint: v,
		Arguments:  cfg.Config.Audit.Arguments,
		Mirror:     cfg.Config.Audit.Mirror,
		Anchor:     cfg.Config.Audit.Anchor,
		Now:        o.Now,
	})
	if err != nil {
		rt.Close()
		return nil, err
	}
	rt.Audit = log
	if cfg.Retention > 0 {
		now := time.Now
		if o.Now != nil {
			now = o.Now
		}
		if _, err := log.Prune(now().Add(-cfg.Retention)); err != nil {
			rt.Close()
			return nil, err
		}
	}
	rt.Broker = NewBroker(Options{
		Config:  cfg,
		Secrets: v,
		Audit:   AuditAdapter{log},
		Logger:  o.Logger,
		Now:     o.Now,
		Metrics: o.Metrics,
	})
	return rt, nil
}

// Close flushes the audit log and releases the vault and the data dir.
func (rt *Runtime) Close() error {
	var errs []error
	if rt.Audit != nil {
		errs = append(errs, rt.Audit.Close())
	}
	if rt.Vault != nil {
		errs = append(errs, rt.Vault.Close())
	}
	if rt.DataDir != nil {
		errs = append(errs, rt.DataDir.Close())
	}
	return errors.Join(errs...)
}

// OpenAuditReader opens the audit log of a data dir read-only, for the
// admin commands that review and verify it: it never writes to the log or
// the vault, so it is safe beside a running keyhole that owns the data dir.
// It reads the file as it is when opened; a call without an outcome reads
// as running while the keyhole owning the data dir is alive, interrupted
// otherwise. Close releases what it opened.
func OpenAuditReader(dir string, keys vault.KeySource) (*Runtime, error) {
	v, err := vault.OpenReadOnly(filepath.Join(dir, VaultFile), keys)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("keyhole: no vault in %s: run `keyhole init` first", dir)
		}
		return nil, err
	}
	log, err := audit.Open(audit.Options{
		Path: filepath.Join(dir, AuditFile), Legacy: filepath.Join(dir, LegacyAuditFile),
		Key: v.DeriveKey(auditKeyLabel), Checkpoint: v, ReadOnly: true,
		// A call in flight in the keyhole that owns the data dir is running, not interrupted.
		WriterAlive: func() bool { return ownerAlive(dir) },
	})
	if err != nil {
		defer v.Close()
		if errors.Is(err, os.ErrNotExist) {
			// No log and no checkpoint ever: nothing was ever recorded. A
			// checkpoint without its log, or a checkpoint removed from the
			// vault, means the log was deleted.
			if _, cerr := v.GetRecord(audit.CheckpointName); !errors.Is(cerr, os.ErrNotExist) {
				return nil, fmt.Errorf("keyhole: the audit log %s is missing, but the vault has had its checkpoint: the log was deleted", filepath.Join(dir, AuditFile))
			}
			return nil, fmt.Errorf("keyhole: %w in %s: it is written on the first call", ErrNoAuditLog, dir)
		}
		return nil, err
	}
	return &Runtime{Vault: v, Audit: log}, nil
}

// ErrNoAuditLog is returned by OpenAuditReader for a data dir in which no
// call was ever recorded.
var ErrNoAuditLog = errors.New("no audit log yet")
