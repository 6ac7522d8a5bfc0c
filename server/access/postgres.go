package access

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// pgBackend keeps one broker's request records in a PostgreSQL store
// shared by several brokers (keyhole_access, under the broker's replica
// name), so they survive the broker without a data dir of their own. A
// request is held, and answered, by the broker that opened it: a held
// call waits in that broker's memory.
type pgBackend struct {
	db      *pgxpool.Pool
	replica string
}

func (p pgBackend) set(id, value string) error {
	_, err := p.db.Exec(context.Background(), `INSERT INTO keyhole_access(replica, id, record) VALUES ($1, $2, $3)
		ON CONFLICT (replica, id) DO UPDATE SET record = excluded.record`, p.replica, id, value)
	if err != nil {
		return fmt.Errorf("access: store %s: %w", id, err)
	}
	return nil
}

func (p pgBackend) del(id string) error {
	if _, err := p.db.Exec(context.Background(), `DELETE FROM keyhole_access WHERE replica = $1 AND id = $2`, p.replica, id); err != nil {
		return fmt.Errorf("access: remove %s: %w", id, err)
	}
	return nil
}

func (p pgBackend) each(fn func(id, value string)) error {
	rows, err := p.db.Query(context.Background(), `SELECT id, record FROM keyhole_access WHERE replica = $1 ORDER BY id`, p.replica)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id, v string
		if err := rows.Scan(&id, &v); err != nil {
			return err
		}
		fn(id, v)
	}
	return rows.Err()
}

func (p pgBackend) close() error { return nil }

// openPGStore is the store of a broker's records in PostgreSQL.
func openPGStore(db *pgxpool.Pool, replica string, k keys) (*store, error) {
	if replica == "" {
		return nil, errors.New("access: no replica name for the requests in PostgreSQL")
	}
	var ok bool
	if err := db.QueryRow(context.Background(), `SELECT to_regclass('keyhole_access') IS NOT NULL`).Scan(&ok); err != nil {
		return nil, fmt.Errorf("access: read the store's schema: %w", err)
	}
	if !ok {
		return nil, errors.New("access: the store has no keyhole_access table: run keyhole store migrate")
	}
	return &store{b: pgBackend{db: db, replica: replica}, keys: k}, nil
}

// CopyToPostgres copies the request records of the file at path (a data
// dir's access.db) into the store under replica, exactly as they are
// (their MACs are keyed from the vault's root key, which moves with
// them). It returns how many it copied.
func CopyToPostgres(path string, db *pgxpool.Pool, replica string) (int, error) {
	src, err := openStore(path, keys{})
	if err != nil {
		return 0, err
	}
	defer src.close()
	dst := pgBackend{db: db, replica: replica}
	n := 0
	var errs []error
	err = src.b.each(func(id, value string) {
		if err := dst.set(id, value); err != nil {
			errs = append(errs, err)
			return
		}
		n++
	})
	return n, errors.Join(append(errs, err)...)
}
