package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyhole-dev/keyhole/server/access"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/pgstore"
	"github.com/keyhole-dev/keyhole/server/sessions"
	"github.com/keyhole-dev/keyhole/vault"
	"github.com/keyhole-dev/keyhole/vault/pgvault"
)

// StoreMigrateOptions configures `keyhole store migrate`.
type StoreMigrateOptions struct {
	// Store is the PostgreSQL store (postgres://…).
	Store string
	// Keys gives the master key: KEYHOLE_MASTER_KEY or a key file.
	Keys KeySource
	// From, if set, is the data dir of an embedded install to move into
	// the store: its vault (secrets, root key), sessions and audit log.
	From string
	// Replica names the chain the data dir's audit log becomes (""
	// DefaultReplica): start the broker that goes on with it with the
	// same --replica.
	Replica string
}

// StoreMigrated is what `keyhole store migrate` did.
type StoreMigrated struct {
	Store   string `json:"store"`
	Applied []int  `json:"applied"`
	Schema  int    `json:"schema"`
	// VaultCreated says a new vault (a new root key) was made in the store.
	VaultCreated bool `json:"vault_created,omitempty"`
	// From and what was moved from it, verified.
	From     string       `json:"from,omitempty"`
	Secrets  int          `json:"secrets,omitempty"`
	Sessions int          `json:"sessions,omitempty"`
	Audit    int          `json:"audit_entries,omitempty"`
	Access   int          `json:"access_requests,omitempty"`
	Replica  string       `json:"replica,omitempty"`
	Verified audit.Report `json:"verified,omitzero"`
}

// MigrateStore creates or upgrades keyhole's schema in the store and,
// the first time, its vault: a new root key, or with From the data dir's,
// whose secrets, sessions and audit log (as the chain of Replica) are
// moved with it and verified: every secret opens to the same value, every
// session is there, and the moved chain verifies against the moved
// checkpoint. The data dir is locked meanwhile (no broker may run on it)
// and left as it was.
func MigrateStore(ctx context.Context, o StoreMigrateOptions) (StoreMigrated, error) {
	res := StoreMigrated{Store: pgstore.Redact(o.Store)}
	db, err := pgstore.Open(ctx, o.Store)
	if err != nil {
		return res, err
	}
	defer db.Close()
	if res.Applied, err = pgstore.Migrate(ctx, db); err != nil {
		return res, err
	}
	res.Schema = pgstore.Latest()
	exists, err := pgvault.Exists(ctx, db)
	if err != nil {
		return res, err
	}
	if o.From == "" {
		if !exists {
			// Brokers starting together may all migrate: one creates it.
			switch err := pgvault.Create(ctx, db, o.Keys, nil); {
			case err == nil:
				res.VaultCreated = true
			case !errors.Is(err, vault.ErrExists):
				return res, err
			}
		}
		// Prove the key against the store's vault.
		v, err := pgvault.Open(ctx, db, o.Keys)
		if err != nil {
			return res, err
		}
		return res, v.Close()
	}
	if exists {
		return res, fmt.Errorf("keyhole: the store already holds a vault; move a data dir only into a new store (an empty database)")
	}
	replica := o.Replica
	if replica == "" {
		if replica, err = DefaultReplica(); err != nil {
			return res, err
		}
	}
	if err := audit.CheckReplica(replica); err != nil {
		return res, err
	}
	res.From, res.Replica = o.From, replica
	dd, err := OpenDataDir(o.From)
	if err != nil {
		if errors.Is(err, ErrDataDirInUse) {
			return res, fmt.Errorf("%w; stop the broker first (keyhole stop)", err)
		}
		return res, err
	}
	defer dd.Close()
	src, err := openVault(dd.Path, o.Keys)
	if err != nil {
		return res, err
	}
	defer src.Close()
	dump, err := src.Dump()
	if err != nil {
		return res, err
	}
	defer func() {
		clear(dump.Root)
		for _, s := range dump.Secrets {
			clear(s.Value)
		}
	}()
	if err := pgvault.Create(ctx, db, o.Keys, dump.Root); err != nil {
		return res, err
	}
	dst, err := pgvault.Open(ctx, db, o.Keys)
	if err != nil {
		return res, err
	}
	defer dst.Close()
	if err := moveSecrets(dump, dst); err != nil {
		return res, err
	}
	res.Secrets = len(dump.Secrets)
	for name, data := range dump.Records {
		if name == audit.CheckpointName {
			continue // moved with the log, under its replica's name
		}
		if err := dst.PutRecord(name, data); err != nil {
			return res, err
		}
	}
	if res.Sessions, err = moveSessions(dd, src, db, dst); err != nil {
		return res, err
	}
	if err := moveAudit(&res, dd, dump, db, dst); err != nil {
		return res, err
	}
	if _, err := os.Stat(dd.File(AccessFile)); err == nil {
		if res.Access, err = access.CopyToPostgres(dd.File(AccessFile), db, res.Replica); err != nil {
			return res, err
		}
	}
	return res, nil
}

// moveSecrets imports every secret with its version and metadata, then
// reads each back.
func moveSecrets(dump *vault.Dump, dst *pgvault.Vault) error {
	for _, s := range dump.Secrets {
		if err := dst.Import(s.Meta.Name, s.Meta.Version, s.Value, s.Metadata); err != nil {
			return err
		}
	}
	for _, s := range dump.Secrets {
		got, err := dst.Get(s.Meta.Name)
		if err != nil {
			return fmt.Errorf("keyhole: verify the moved secret %s: %w", s.Meta.Name, err)
		}
		if !bytes.Equal(got.Bytes(), s.Value) {
			return fmt.Errorf("keyhole: verify the moved secret %s: its value differs", s.Meta.Name)
		}
		if m, err := dst.Meta(s.Meta.Name); err != nil || m.Version != s.Meta.Version {
			return fmt.Errorf("keyhole: verify the moved secret %s: version %d, want %d (%v)", s.Meta.Name, m.Version, s.Meta.Version, err)
		}
	}
	return nil
}

// moveSessions imports every session of the data dir (with the config
// snapshots they run) and checks each is there.
func moveSessions(dd *DataDir, src *vault.Vault, db *pgxpool.Pool, dst *pgvault.Vault) (int, error) {
	if _, err := os.Stat(dd.File(SessionsFile)); errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	from, err := sessions.Open(dd.File(SessionsFile), src.DeriveKey(sessions.KeyLabel))
	if err != nil {
		return 0, err
	}
	defer from.Close()
	to, err := sessions.OpenPostgres(db, dst.DeriveKey(sessions.KeyLabel))
	if err != nil {
		return 0, err
	}
	recs, err := from.List()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range recs {
		if r.Tampered {
			continue // its MAC failed there: it opens nothing anywhere
		}
		if r.ConfigSHA256 != "" {
			body, err := from.Config(r.ConfigSHA256)
			if err == nil {
				if err := to.PutConfig(r.ConfigSHA256, body); err != nil {
					return n, err
				}
			}
		}
		if err := to.Import(r); err != nil {
			return n, err
		}
		got, err := to.Get(r.ID)
		if err != nil || got.Tampered || got.TokenHash != r.TokenHash || got.State != r.State {
			return n, fmt.Errorf("keyhole: verify the moved session %s: %v", r.ID, err)
		}
		n++
	}
	return n, nil
}

// moveAudit copies the audit log into the chain of res.Replica with the
// checkpoint the vault held for it, and verifies the chain there.
func moveAudit(res *StoreMigrated, dd *DataDir, dump *vault.Dump, db *pgxpool.Pool, dst *pgvault.Vault) error {
	if _, err := os.Stat(dd.File(AuditFile)); errors.Is(err, os.ErrNotExist) {
		if _, lerr := os.Stat(dd.File(LegacyAuditFile)); lerr == nil {
			return fmt.Errorf("keyhole: the audit log in %s is still in the old format (%s): start a broker on it once (it migrates the log), stop it, then move it", dd.Path, LegacyAuditFile)
		}
		return nil
	}
	n, err := audit.CopyToPostgres(dd.File(AuditFile), db, res.Replica, "keyhole store migrate")
	if err != nil {
		return err
	}
	res.Audit = n
	if cp, ok := dump.Records[audit.CheckpointName]; ok {
		if err := dst.PutRecord(audit.CheckpointName+"."+res.Replica, cp); err != nil {
			return err
		}
	}
	l, err := audit.Open(audit.Options{Postgres: db, Replica: res.Replica, Key: dst.DeriveKey(auditKeyLabel), Checkpoint: dst, ReadOnly: true})
	if err != nil {
		return err
	}
	defer l.Close()
	rep, err := l.Verify()
	if err != nil {
		return err
	}
	res.Verified = rep
	if !rep.OK {
		return fmt.Errorf("keyhole: the moved audit log does not verify in the store (%d problems; the first: %v); the data dir is unchanged", len(rep.Problems), rep.Problems[0])
	}
	if uint64(n) > 0 && rep.Entries != uint64(n) {
		return fmt.Errorf("keyhole: the moved audit log has %d entries in the store, the file had %d", rep.Entries, n)
	}
	return nil
}
