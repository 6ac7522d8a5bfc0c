package audit

import (
	"fmt"
	"time"
)

// Minute is the calls that began in one minute (UTC) and how many of
// them were denied.
type Minute struct {
	Start  time.Time `json:"start"`
	Calls  int       `json:"calls"`
	Denied int       `json:"denied"`
}

// Activity returns, for every minute at or after since in which calls
// began, how many began and how many of those were denied at once
// (keyhole.* records included), oldest first. It reads the time index
// from since on, never the whole log, so it costs what the window holds.
// The counts are statistics from the stored columns: Verify, not
// Activity, says whether the entries are genuine.
func (l *Log) Activity(since time.Time) ([]Minute, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	out, err := l.st.activity(formatTime(since))
	if err != nil {
		return nil, fmt.Errorf("audit: activity: %w", err)
	}
	return out, nil
}

func (s *sqliteStore) activity(since string) ([]Minute, error) {
	s.caughtUp()
	// substr(time, 1, 16) is the minute: times are fixed-width UTC.
	rows, err := s.r.Query(`SELECT substr(time, 1, 16) AS minute, count(*), sum(decision = 'deny')
FROM entries WHERE type <> 'outcome' AND time >= ? GROUP BY minute ORDER BY minute`, since)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", s.path, err)
	}
	defer rows.Close()
	var out []Minute
	for rows.Next() {
		var minute string
		var m Minute
		if err := rows.Scan(&minute, &m.Calls, &m.Denied); err != nil {
			return nil, fmt.Errorf("read %s: %w", s.path, err)
		}
		if m.Start, err = time.Parse("2006-01-02T15:04", minute); err != nil {
			return nil, fmt.Errorf("read %s: a time of %q: %w", s.path, minute, err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", s.path, err)
	}
	return out, nil
}
