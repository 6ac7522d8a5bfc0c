package audit

import (
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// Readers look for calls by seq. A time window is also a range of seqs,
// which the time index gives at the cost of the window alone; without it
// a window that holds few calls (the last hour of a quiet log, one day a
// month ago) would be looked for row by row through the whole table.

// narrowToWindow bounds q's seqs by the calls whose time is in q's window.
// ok is false when the window holds no call.
func (l *Log) narrowToWindow(q *callQuery) (ok bool, err error) {
	if q.Since.IsZero() && q.Until.IsZero() {
		return true, nil
	}
	lo, hi, ok, err := l.st.timeSpan(q.Since, q.Until)
	if err != nil || !ok {
		return false, err
	}
	if lo > 0 && lo-1 > q.After {
		q.After = lo - 1
	}
	if q.Before == 0 || hi+1 < q.Before {
		q.Before = hi + 1
	}
	return q.After+1 < q.Before, nil
}

// timeSpan returns the lowest and the highest seq of the calls whose time
// is in [since, until) (a zero time is no bound), from the time index
// alone; ok is false when there is none. min(+seq) keeps SQLite from
// walking the table by seq instead of the index by time; without the
// index (a damaged file) it still answers, by a scan.
func (s *sqliteStore) timeSpan(since, until time.Time) (lo, hi uint64, ok bool, err error) {
	s.caughtUp()
	where := []string{`type <> 'outcome'`}
	var args []any
	if !since.IsZero() {
		where, args = append(where, `time >= ?`), append(args, formatTime(since))
	}
	if !until.IsZero() {
		where, args = append(where, `time < ?`), append(args, formatTime(until))
	}
	var l, h sql.NullInt64
	q := `SELECT min(+seq), max(+seq) FROM entries WHERE ` + strings.Join(where, " AND ")
	if err := s.r.QueryRow(q, args...).Scan(&l, &h); err != nil {
		return 0, 0, false, fmt.Errorf("read %s: %w", s.path, err)
	}
	return uint64(l.Int64), uint64(h.Int64), l.Valid, nil
}
