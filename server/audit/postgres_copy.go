package audit

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// CopyToPostgres copies the log file at path into the chain of replica in
// PostgreSQL, which must hold none yet: every entry exactly as it was
// sealed (same seqs, same MACs, no replica in the entries written before
// the move), the prune anchor and the copy of the last checkpoint. The
// chain goes on from the file's head; nothing is sealed again. It
// returns how many entries it copied. The caller copies the checkpoint
// itself (it lives in the vault) and verifies the result.
func CopyToPostgres(path string, db *pgxpool.Pool, replica, holder string) (int, error) {
	src, err := openSQLite(path, true)
	if err != nil {
		return 0, err
	}
	defer src.close()
	dst, err := openPostgres(Options{Postgres: db, Replica: replica, Holder: holder}, false)
	if err != nil {
		return 0, err
	}
	defer dst.close()
	if _, ok, err := dst.last(); err != nil {
		return 0, err
	} else if ok {
		return 0, fmt.Errorf("audit: the store already holds a chain named %s; pick another --replica for the moved log", replica)
	}
	if _, ok, err := dst.meta(metaAnchor); err != nil || ok {
		return 0, fmt.Errorf("audit: the store already holds a chain named %s (%v)", replica, err)
	}
	n := 0
	var after uint64
	for {
		rows, err := src.entries(after, 1000)
		if err != nil {
			return n, err
		}
		if len(rows) == 0 {
			break
		}
		if err := dst.appendBatch(rows, nil); err != nil {
			return n, err
		}
		n += len(rows)
		after = rows[len(rows)-1].Seq
	}
	meta := map[string]string{}
	for _, name := range []string{metaAnchor, metaCheckpoint} {
		v, ok, err := src.meta(name)
		if err != nil {
			return n, err
		}
		if ok {
			meta[name] = v
		}
	}
	if len(meta) > 0 {
		if err := dst.appendBatch(nil, meta); err != nil {
			return n, err
		}
	}
	return n, nil
}
