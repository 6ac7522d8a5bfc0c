package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/keyhole-dev/keyhole/server/access"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/tools"
	"github.com/keyhole-dev/keyhole/vault"
)

// auditKeyLabel derives the audit MAC key from the master key.
const auditKeyLabel = "keyhole audit v1"

// accessKeyLabel derives the key of access requests' MACs (approvals and
// stored records) from the master key.
const accessKeyLabel = "keyhole access v1"

// KeySource says where the master key comes from: the environment, a key
// file, or a passphrase.
type KeySource = vault.KeySource

// Errors of the master key and of secret values, for commands to test.
var (
	// ErrNoKey: no master key could be had from the KeySource.
	ErrNoKey = vault.ErrNoKey
	// ErrEmptyValue: a secret value is empty.
	ErrEmptyValue = vault.ErrEmptyValue
)

// RuntimeOptions says where a runtime's parts live.
type RuntimeOptions struct {
	DataDir    string
	ConfigPath string
	Keys       vault.KeySource
	Logger     *slog.Logger
	Env        tools.Env
	Now        func() time.Time
	Metrics    *Metrics
	// Approvals opens the access requests (access.db): calls that need a
	// person's approval are held for an answer on the broker's socket.
	// Without it such calls are denied (a standalone stdio session has
	// no socket to answer on).
	Approvals bool
	// Store, if set, is a PostgreSQL store (postgres://…) shared by
	// several brokers: the vault, sessions and audit live there instead of
	// in the data dir, which keeps only the broker's lock and socket.
	Store string
	// Replica names this broker among those of Store (its audit chain);
	// "" is the host name.
	Replica string
	// LeaseTTL is how long this broker's lease on its audit chain lasts
	// unrenewed: how long after its death another broker records its
	// open calls as interrupted (0: audit.DefaultLeaseTTL).
	LeaseTTL time.Duration
}

// Runtime is everything a serving keyhole process holds: the locked data
// dir, the vault, the audit log and the broker over them.
type Runtime struct {
	DataDir *DataDir
	// Vault is the secret store: the vault file, or the shared store's.
	Vault SecretStore
	Audit *audit.Log
	// Access holds access requests; nil without RuntimeOptions.Approvals.
	Access *access.Manager
	Broker *Broker
	// shared is the PostgreSQL store, when there is one.
	shared *shared
}

// Replica is this broker's name among the brokers of a shared store, or
// "" for a broker on the embedded store.
func (rt *Runtime) Replica() string {
	if rt.shared == nil {
		return ""
	}
	return rt.shared.replica
}

// Open locks the data dir, loads the config, and opens the vault and the
// audit log. Close releases them in reverse order.
func Open(o RuntimeOptions) (*Runtime, error) {
	path, err := filepath.Abs(o.ConfigPath)
	if err != nil {
		return nil, fmt.Errorf("keyhole: config %s: %w", o.ConfigPath, err)
	}
	cfg, err := config.Load(path, o.Env)
	if err != nil {
		return nil, err
	}
	dd, err := OpenDataDir(o.DataDir)
	if err != nil {
		return nil, err
	}
	rt := &Runtime{DataDir: dd}
	if o.Store != "" {
		if rt.shared, err = openShared(context.Background(), o.Store, o.Replica, dd.Path); err != nil {
			rt.Close()
			return nil, err
		}
		rt.shared.leaseTTL = o.LeaseTTL
	}
	v, err := openSecrets(rt.shared, dd.Path, o.Keys)
	if err != nil {
		rt.Close()
		return nil, err
	}
	rt.Vault = v
	log, err := openAuditLog(dd, rt.shared, v, cfg.Config.Audit, o.Now)
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
	if o.Approvals {
		if rt.Access, err = openAccess(dd, rt.shared, v, log, o); err != nil {
			rt.Close()
			return nil, err
		}
	}
	rt.Broker = NewBroker(Options{
		Config:  cfg,
		Env:     o.Env,
		Secrets: v,
		Audit:   auditLog{log},
		Access:  rt.Access,
		Logger:  o.Logger,
		Now:     o.Now,
		Metrics: o.Metrics,
	})
	return rt, nil
}

// Close flushes the audit log and releases the vault and the data dir.
func (rt *Runtime) Close() error {
	if rt.Broker != nil {
		rt.Broker.cache.evictAll() // zero every cached secret
	}
	var errs []error
	if rt.Access != nil {
		errs = append(errs, rt.Access.Close())
	}
	if rt.Audit != nil {
		errs = append(errs, rt.Audit.Close())
	}
	if rt.Vault != nil {
		errs = append(errs, rt.Vault.Close())
	}
	if rt.shared != nil {
		rt.shared.db.Close()
	}
	if rt.DataDir != nil {
		errs = append(errs, rt.DataDir.Close())
	}
	return errors.Join(errs...)
}

// openAuditLog opens the audit log of a data dir this process owns, or
// its replica's chain in the shared store, for writing, under the audit:
// section of a config.
func openAuditLog(dd *DataDir, sh *shared, v SecretStore, a config.Audit, now func() time.Time) (*audit.Log, error) {
	o := audit.Options{
		Path:       dd.File(AuditFile),
		Legacy:     dd.File(LegacyAuditFile),
		Key:        v.DeriveKey(auditKeyLabel),
		Checkpoint: v,
		Arguments:  a.Arguments,
		Mirror:     a.Mirror,
		Anchor:     a.Anchor,
		Now:        now,
	}
	if sh != nil {
		o.Path, o.Legacy = "", ""
		o.Postgres, o.Replica, o.Holder, o.LeaseTTL = sh.db, sh.replica, sh.holder, sh.leaseTTL
		o.LeaseWait = sh.lease() // a peer recovering this chain lets it go within moments
	}
	return audit.Open(o)
}
