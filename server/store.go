package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/pgstore"
	"github.com/keyhole-dev/keyhole/server/sessions"
	"github.com/keyhole-dev/keyhole/vault"
	"github.com/keyhole-dev/keyhole/vault/pgvault"
)

// Where a broker keeps what it must not lose: the embedded store (the
// vault file, sessions.db and audit.sqlite in the data dir, owned by one
// process), or a PostgreSQL store shared by several brokers (`--store
// postgres://…`), each broker a replica with its own name and its own
// audit chain. The interfaces below are what the broker needs of each
// part; the file and PostgreSQL implementations both satisfy them.

// SecretStore is what a broker and its admin commands need from a secret
// store: *vault.Vault (the vault file) and *pgvault.Vault are ones.
type SecretStore interface {
	Secrets
	audit.Checkpointer
	Get(name string) (vault.Secret, error)
	Set(name string, value []byte, description string) error
	Rotate(name string, value []byte) (vault.Meta, error)
	List() ([]vault.Meta, error)
	Delete(name string) error
	DeriveKey(label string) []byte
	Close() error
}

var (
	_ SecretStore = (*vault.Vault)(nil)
	_ SecretStore = (*pgvault.Vault)(nil)
)

// SessionStore is what LiveSessions need from a session store:
// *sessions.Store (a file in the data dir) and *sessions.PGStore are ones.
type SessionStore interface {
	Create(rec sessions.Record) (string, error)
	Lookup(tok string) (sessions.Record, error)
	Save(infos ...policy.SessionInfo) error
	Quarantine(id, reason string) error
	Get(id string) (sessions.Record, error)
	List() ([]sessions.Record, error)
	PutConfig(sha string, body []byte) error
	Config(sha string) ([]byte, error)
	Close() error
}

// SharedCounter is what a session store shared by several brokers adds:
// calls and denials counted by the store, so that max_calls and the
// tripwire hold across brokers and a revocation through any of them is
// seen at every other's next call.
type SharedCounter interface {
	CountCall(id string, now time.Time) (policy.Shared, error)
	CountDenial(id string) (policy.Shared, error)
}

var (
	_ SessionStore  = (*sessions.Store)(nil)
	_ SessionStore  = (*sessions.PGStore)(nil)
	_ SharedCounter = (*sessions.PGStore)(nil)
)

// EnvStore is the environment variable of --store.
const EnvStore = "KEYHOLE_STORE"

// shared is an open PostgreSQL store: the pool and the broker's replica
// name.
type shared struct {
	db      *pgxpool.Pool
	replica string
	holder  string
	// leaseTTL is the lease of this broker's audit chain (0: the default).
	leaseTTL time.Duration
}

// lease is the lease of the audit chains this broker holds.
func (sh *shared) lease() time.Duration {
	if sh.leaseTTL > 0 {
		return sh.leaseTTL
	}
	return audit.DefaultLeaseTTL
}

// openShared connects to the store at url and checks its schema.
func openShared(ctx context.Context, url, replica, dataDir string) (*shared, error) {
	if replica == "" {
		var err error
		if replica, err = DefaultReplica(); err != nil {
			return nil, err
		}
	}
	if err := audit.CheckReplica(replica); err != nil {
		return nil, fmt.Errorf("keyhole: --replica: %w", err)
	}
	db, err := pgstore.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	if err := pgstore.Check(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	host, _ := os.Hostname()
	dir, _ := filepath.Abs(dataDir)
	return &shared{db: db, replica: replica, holder: host + ":" + dir}, nil
}

// DefaultReplica is a broker's replica name when --replica is not given:
// the host name, cut to what a replica name allows.
func DefaultReplica() (string, error) {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "", errors.New("keyhole: no host name to name this broker's replica: pass --replica")
	}
	b := []byte(h)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			b[i] = '-'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	return string(b), nil
}

// openSecrets opens the secret store: the vault of the shared store, or
// the vault file of the data dir.
func openSecrets(sh *shared, dir string, keys vault.KeySource) (SecretStore, error) {
	if sh != nil {
		v, err := pgvault.Open(context.Background(), sh.db, keys)
		if err != nil {
			return nil, err
		}
		return v, nil
	}
	v, err := openVault(dir, keys)
	if err != nil {
		return nil, err
	}
	return v, nil
}

// openSessionStore opens the session store: the shared store's, or the
// file in the data dir.
func openSessionStore(sh *shared, dd *DataDir, v SecretStore) (SessionStore, error) {
	key := v.DeriveKey(sessions.KeyLabel)
	if sh != nil {
		return sessions.OpenPostgres(sh.db, key)
	}
	s, err := sessions.Open(dd.File(SessionsFile), key)
	if err != nil {
		return nil, err
	}
	return s, nil
}
