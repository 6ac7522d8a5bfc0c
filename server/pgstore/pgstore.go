// Package pgstore opens keyhole's PostgreSQL store (`--store
// postgres://…`) and owns its schema: versioned migrations embedded in
// the binary, applied by `keyhole store migrate`, one transaction each,
// under an advisory lock so that brokers starting together cannot apply
// one twice. The tables themselves belong to the packages whose records
// they hold (server/audit, server/sessions, server/access, vault/pgvault);
// this package only connects and migrates.
package pgstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrations embed.FS

// ErrNotMigrated says the database lacks keyhole's schema, or has an
// older version of it than this keyhole needs.
var ErrNotMigrated = errors.New("pgstore: the database does not have this keyhole's schema")

// ErrNewer says the database was migrated by a newer keyhole.
var ErrNewer = errors.New("pgstore: the database was migrated by a newer keyhole")

// migrateLock is the advisory lock key under which migrations run.
const migrateLock = 0x6b6579686f6c65 // "keyhole"

// Migration is one schema version.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations returns the embedded migrations in order.
func Migrations() ([]Migration, error) {
	ents, err := fs.ReadDir(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range ents {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("pgstore: migration %s is not named NNNN_name.sql", e.Name())
		}
		b, err := migrations.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: e.Name(), SQL: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i, m := range out {
		if m.Version != i+1 {
			return nil, fmt.Errorf("pgstore: migration %s: want version %d", m.Name, i+1)
		}
	}
	return out, nil
}

// Latest is the schema version this keyhole needs.
func Latest() int {
	ms, err := Migrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].Version
}

// IsURL reports whether s names a PostgreSQL store.
func IsURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// Redact returns the URL with its password replaced, for messages.
func Redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable store URL)"
	}
	return u.Redacted()
}

// Open connects to the store at rawURL. Every connection commits
// synchronously (synchronous_commit on, whatever the server's default):
// an audit intent is durable when its INSERT commits. The pool is not
// checked for the schema; see Check.
func Open(ctx context.Context, rawURL string) (*pgxpool.Pool, error) {
	if !IsURL(rawURL) {
		return nil, fmt.Errorf("pgstore: --store %q: want postgres://user@host/database", Redact(rawURL))
	}
	cfg, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		return nil, fmt.Errorf("pgstore: --store %s: %w", Redact(rawURL), err)
	}
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	cfg.ConnConfig.RuntimeParams["application_name"] = "keyhole"
	cfg.ConnConfig.Tracer = &roundTrips{}
	if cfg.MaxConns < 8 {
		cfg.MaxConns = 8
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: connect to %s: %w", Redact(rawURL), err)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgstore: connect to %s: %w", Redact(rawURL), err)
	}
	return pool, nil
}

// Version returns the schema version of the database (0: none).
func Version(ctx context.Context, db *pgxpool.Pool) (int, error) {
	var exists bool
	if err := db.QueryRow(ctx, `SELECT to_regclass('keyhole_schema') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, fmt.Errorf("pgstore: read schema version: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var v int
	if err := db.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM keyhole_schema`).Scan(&v); err != nil {
		return 0, fmt.Errorf("pgstore: read schema version: %w", err)
	}
	return v, nil
}

// Check refuses a database whose schema is not the one this keyhole
// needs, saying what to run.
func Check(ctx context.Context, db *pgxpool.Pool) error {
	v, err := Version(ctx, db)
	if err != nil {
		return err
	}
	switch latest := Latest(); {
	case v < latest:
		return fmt.Errorf("%w (it has version %d, this keyhole needs %d): run `keyhole store migrate --store URL`", ErrNotMigrated, v, latest)
	case v > latest:
		return fmt.Errorf("%w (version %d; this keyhole knows %d): upgrade this keyhole", ErrNewer, v, latest)
	}
	return nil
}

// Migrate applies every migration the database lacks, each in its own
// transaction, and returns the versions it applied.
func Migrate(ctx context.Context, db *pgxpool.Pool) ([]int, error) {
	ms, err := Migrations()
	if err != nil {
		return nil, err
	}
	conn, err := db.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("pgstore: migrate: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(migrateLock)); err != nil {
		return nil, fmt.Errorf("pgstore: migrate: lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, int64(migrateLock))
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS keyhole_schema (version int PRIMARY KEY, name text NOT NULL, applied timestamptz NOT NULL DEFAULT now())`); err != nil {
		return nil, fmt.Errorf("pgstore: migrate: %w", err)
	}
	var have int
	if err := conn.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM keyhole_schema`).Scan(&have); err != nil {
		return nil, fmt.Errorf("pgstore: migrate: %w", err)
	}
	if have > len(ms) {
		return nil, fmt.Errorf("%w (version %d; this keyhole knows %d)", ErrNewer, have, len(ms))
	}
	var applied []int
	for _, m := range ms[have:] {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO keyhole_schema(version, name) VALUES ($1, $2)`, m.Version, m.Name)
			return err
		})
		if err != nil {
			return applied, fmt.Errorf("pgstore: migration %s: %w", m.Name, err)
		}
		applied = append(applied, m.Version)
	}
	return applied, nil
}
