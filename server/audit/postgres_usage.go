package audit

import (
	"context"
	"fmt"
	"strings"
)

// What reports read of one chain in PostgreSQL (Usage, Calls), as the
// SQLite store answers it.

// usage groups the chain's calls as the SQLite store does. Groups are
// ordered bytewise ("C"), whatever the database's collation, so every
// chain gives them in one order.
func (s *pgStore) usage(ctx context.Context, f UsageFilter, fn func(Usage) error) error {
	const scope, grant = `coalesce(entry::jsonb ->> 'scope', '')`, `coalesce(entry::jsonb ->> 'grant', '')`
	where := []string{`replica = $1`, `type <> 'outcome'`}
	args := []any{s.replica}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if len(f.Credentials) > 0 {
		add(`credential = ANY($%d)`, f.Credentials)
	}
	if f.Scope != "" {
		add(scope+` = $%d`, f.Scope)
	}
	if !f.Since.IsZero() {
		add(`time >= $%d`, formatTime(f.Since))
	}
	if !f.Until.IsZero() {
		add(`time < $%d`, formatTime(f.Until))
	}
	q := `SELECT credential, scope, session, "grant", n, first, last, seq FROM (
		SELECT coalesce(credential, '') AS credential, ` + scope + ` AS scope, coalesce(session, '') AS session, ` + grant + ` AS "grant",
			count(*) AS n, min(time) AS first, max(time) AS last, min(seq) AS seq
		FROM keyhole_audit WHERE ` + strings.Join(where, " AND ") + `
		GROUP BY 1, 2, 3, 4) g
		ORDER BY credential COLLATE "C", scope COLLATE "C", session COLLATE "C", "grant" COLLATE "C"`
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return s.dbError("read", err)
	}
	defer rows.Close()
	for rows.Next() {
		var u Usage
		var first, last *string
		var n, seq int64
		if err := rows.Scan(&u.Credential, &u.Scope, &u.Session, &u.Grant, &n, &first, &last, &seq); err != nil {
			return s.dbError("read", err)
		}
		u.Calls, u.Seq = int(n), uint64(seq)
		if first != nil {
			u.First = parseOptTime(*first)
		}
		if last != nil {
			u.Last = parseOptTime(*last)
		}
		if err := fn(u); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return s.dbError("read", err)
	}
	return nil
}

func (s *pgStore) values(seqs []int64) (map[uint64]string, error) {
	rs, err := s.rows(`SELECT seq, entry FROM keyhole_audit WHERE replica = $1 AND seq = ANY($2)`, s.replica, seqs)
	if err != nil {
		return nil, err
	}
	out := make(map[uint64]string, len(rs))
	for _, r := range rs {
		out[r.Seq] = r.Value
	}
	return out, nil
}

func (s *pgStore) firstEntries(ctx context.Context, session string, after, through int64, limit int) ([]row, error) {
	where, args := []string{`replica = $1`, `type <> 'outcome'`, `seq > $2`}, []any{s.replica, after}
	if session != "" {
		args = append(args, session)
		where = append(where, fmt.Sprintf(`session = $%d`, len(args)))
	}
	if through >= 0 {
		args = append(args, through)
		where = append(where, fmt.Sprintf(`seq <= $%d`, len(args)))
	}
	args = append(args, limit)
	q := `SELECT seq, entry FROM keyhole_audit WHERE ` + strings.Join(where, " AND ") + fmt.Sprintf(` ORDER BY seq LIMIT $%d`, len(args))
	rs, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, s.dbError("read", err)
	}
	defer rs.Close()
	page := make([]row, 0, limit)
	for rs.Next() {
		var seq int64
		var v string
		if err := rs.Scan(&seq, &v); err != nil {
			return nil, s.dbError("read", err)
		}
		page = append(page, row{Seq: uint64(seq), Value: v})
	}
	if err := rs.Err(); err != nil {
		return nil, s.dbError("read", err)
	}
	return page, nil
}
