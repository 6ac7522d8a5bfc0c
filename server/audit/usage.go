package audit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"
)

// ErrIndexMismatch is returned by Usage when the file's index says what
// its entries do not: the index was edited or damaged beside the chain.
// `PRAGMA integrity_check` in sqlite3 shows where.
var ErrIndexMismatch = errors.New("audit: the log's index does not match its entries")

// UsageFilter selects the calls Usage groups. Zero fields select
// everything.
type UsageFilter struct {
	// Credentials keeps the calls made with one of these vault secrets.
	Credentials []string
	// Scope keeps the calls of one scope.
	Scope string
	// Since (inclusive) and Until (exclusive) bound the call's time.
	Since, Until time.Time
}

// Usage is a group of calls (first entries, not outcomes) that share a
// credential, a scope, a session and the grant that allowed them.
type Usage struct {
	// Credential is the vault secret of the called tool; "" for a call of
	// a tool the session's config did not know.
	Credential string `json:"credential,omitempty"`
	Scope      string `json:"scope"`
	Session    string `json:"session"`
	// Grant is the grant that allowed the calls ("github: GET /repos/*"),
	// "" for calls no grant allowed: denied, or refused before policy.
	Grant string `json:"grant,omitempty"`
	// Calls counts the group's calls; First and Last are the times of its
	// earliest and latest.
	Calls       int       `json:"calls"`
	First, Last time.Time `json:"-"`
	// Seq is the group's first call. Usage reads its entry and checks that
	// it says what the group's key says; Client and Config are what it
	// names.
	Seq    uint64 `json:"seq"`
	Client string `json:"client,omitempty"`
	Config string `json:"config,omitempty"`
}

// Usage calls fn with every group of calls that match f, grouped by
// credential, scope, session and grant, ordered by those. It reads the
// index alone (entries_usage), so it costs a fraction of reading the
// entries; what it reports beyond each group's first call (the counts
// and times) comes from the index, which `keyhole audit verify` does not
// cover: for each group, the entry of its first call is read and must
// agree with the group's key, or Usage returns ErrIndexMismatch. A file of
// schema version 1 (before the index) is read through its entries,
// slowly.
func (l *Log) Usage(ctx context.Context, f UsageFilter, fn func(Usage) error) error {
	if l.isClosed() {
		return ErrClosed
	}
	page := make([]Usage, 0, pageSize)
	flush := func() error {
		if err := l.confirm(page); err != nil {
			return err
		}
		for _, u := range page {
			if err := fn(u); err != nil {
				return err
			}
		}
		page = page[:0]
		return nil
	}
	err := l.st.usage(ctx, f, func(u Usage) error {
		page = append(page, u)
		if len(page) == cap(page) {
			return flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}

// confirm checks each group against the entry of its first call.
func (l *Log) confirm(groups []Usage) error {
	if len(groups) == 0 {
		return nil
	}
	seqs := make([]int64, len(groups))
	for i, g := range groups {
		seqs[i] = int64(g.Seq)
	}
	got, err := l.st.values(seqs)
	if err != nil {
		return err
	}
	for i := range groups {
		g := &groups[i]
		c, ok := decodeCall(g.Seq, got[g.Seq])
		if !ok || c.Credential != g.Credential || c.Scope != g.Scope || c.Session != g.Session || c.Grant != g.Grant {
			return fmt.Errorf("%w: the index groups seq %d under credential %q, scope %q, session %q, grant %q", ErrIndexMismatch, g.Seq, g.Credential, g.Scope, g.Session, g.Grant)
		}
		g.Client, g.Config = c.Client, c.Config
	}
	return nil
}

// usage runs the grouping query and calls fn with each group.
func (s *sqliteStore) usage(ctx context.Context, f UsageFilter, fn func(Usage) error) error {
	s.caughtUp()
	scope, grant := `scope`, `"grant"`
	if s.version < 2 {
		scope, grant = `json_extract(entry, '$.scope')`, `json_extract(entry, '$.grant')`
	}
	where := []string{`type <> 'outcome'`}
	var args []any
	if len(f.Credentials) > 0 {
		where = append(where, `credential IN (?`+strings.Repeat(`, ?`, len(f.Credentials)-1)+`)`)
		for _, c := range f.Credentials {
			args = append(args, c)
		}
	}
	if f.Scope != "" {
		where = append(where, scope+` = ?`)
		args = append(args, f.Scope)
	}
	if !f.Since.IsZero() {
		where = append(where, `time >= ?`)
		args = append(args, formatTime(f.Since))
	}
	if !f.Until.IsZero() {
		where = append(where, `time < ?`)
		args = append(args, formatTime(f.Until))
	}
	q := `SELECT coalesce(credential, ''), coalesce(` + scope + `, ''), coalesce(session, ''), coalesce(` + grant + `, ''),
		count(*), min(time), max(time), min(seq)
		FROM entries WHERE ` + strings.Join(where, " AND ") + `
		GROUP BY credential, ` + scope + `, session, ` + grant + `
		ORDER BY credential, ` + scope + `, session, ` + grant
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("audit: read %s: %w", s.path, err)
	}
	defer rows.Close()
	for rows.Next() {
		var u Usage
		var first, last string
		var seq int64
		if err := rows.Scan(&u.Credential, &u.Scope, &u.Session, &u.Grant, &u.Calls, &first, &last, &seq); err != nil {
			return fmt.Errorf("audit: read %s: %w", s.path, err)
		}
		u.First, u.Last, u.Seq = parseOptTime(first), parseOptTime(last), uint64(seq)
		if err := fn(u); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("audit: read %s: %w", s.path, err)
	}
	return nil
}

// values returns the stored entries at seqs, by seq.
func (s *sqliteStore) values(seqs []int64) (map[uint64]string, error) {
	s.caughtUp()
	q := `SELECT seq, entry FROM entries WHERE seq IN (?` + strings.Repeat(`, ?`, len(seqs)-1) + `)`
	args := make([]any, len(seqs))
	for i, v := range seqs {
		args[i] = v
	}
	rs, err := s.rows(q, args...)
	if err != nil {
		return nil, err
	}
	out := make(map[uint64]string, len(rs))
	for _, r := range rs {
		out[r.Seq] = r.Value
	}
	return out, nil
}

// Call is one call as reports replay it: its canonical request and what
// policy made of it, read from its first entry (no arguments, no outcome).
type Call struct {
	Seq     uint64
	Time    time.Time
	Session string
	Scope   string
	// Config is the config file the session ran, when the record names it.
	Config string
	Client string
	Tool   string
	Kind   string
	// Method and Path (http), Action and Key (s3) are the canonical
	// request as recorded.
	Method, Path string
	Action, Key  string
	// Decision is the first entry's: an allowed call that went upstream
	// reads allow whatever its outcome.
	Decision   Decision
	Code       string
	Grant      string
	Credential string
	CredKind   string // the credential kind the intent named, if any
	// Cut is set when the path or key was longer than MaxField and cut.
	Cut bool
}

// CallFilter selects the calls Calls reads. Zero fields select every
// call.
type CallFilter struct {
	// Session keeps one session's calls (read through its index).
	Session string
	// Scope keeps one scope's calls.
	Scope string
	// Since (inclusive) and Until (exclusive) bound the call's time.
	Since, Until time.Time
	// Allowed keeps only the calls a grant allowed.
	Allowed bool
}

// callsPage is how many entries Calls reads at a time (a variable for
// tests).
var callsPage = 2048

// Calls calls fn with every call that matches f, in ascending seq. It
// reads the entries a page at a time in the table's order (so memory stays
// flat however long the log, and the file is read front to back), finds
// where a time window starts and ends in the time index, and decodes only
// the fields a Call has, which makes it several times faster than Stream.
func (l *Log) Calls(ctx context.Context, f CallFilter, fn func(Call) error) error {
	if l.isClosed() {
		return ErrClosed
	}
	// Outcomes are left out as they are decoded: asking the store to leave
	// them out would parse every entry's JSON once more. A session's calls
	// are read through its index, which holds no outcome.
	var after, through int64 = 0, -1
	if f.Session == "" && (!f.Since.IsZero() || !f.Until.IsZero()) {
		// The first and last call of the window, from the time index
		// alone; the calls between are read in seq order and their times
		// checked below (a clock that went back puts a few out of order).
		lo, hi, ok, err := l.st.timeSpan(f.Since, f.Until)
		if err != nil || !ok {
			return err
		}
		after, through = int64(lo)-1, int64(hi)
	}
	// One goroutine reads pages of entries while this one decodes them
	// and calls fn: the two halves of the work overlap. At most two pages
	// wait in between.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pages := make(chan []row, 2)
	read := make(chan error, 1)
	go func() {
		defer close(pages)
		lastSeq := after
		for {
			page, err := l.st.firstEntries(ctx, f.Session, lastSeq, through, callsPage)
			if err != nil {
				read <- err
				return
			}
			if len(page) > 0 {
				lastSeq = int64(page[len(page)-1].Seq)
				select {
				case pages <- page:
				case <-ctx.Done():
					read <- ctx.Err()
					return
				}
			}
			if len(page) < callsPage {
				read <- nil
				return
			}
		}
	}()
	for page := range pages {
		for _, r := range page {
			c, ok := decodeCall(r.Seq, r.Value)
			if !ok || f.Scope != "" && c.Scope != f.Scope || f.Allowed && c.Grant == "" || c.Session != f.Session && f.Session != "" {
				continue
			}
			if !f.Since.IsZero() && c.Time.Before(f.Since) || !f.Until.IsZero() && !c.Time.Before(f.Until) {
				continue
			}
			if err := fn(c); err != nil {
				cancel()
				for range pages {
				}
				return err
			}
		}
	}
	return <-read
}

// firstEntries reads one page of first entries for Calls.
func (s *sqliteStore) firstEntries(ctx context.Context, session string, after, through int64, limit int) ([]row, error) {
	s.caughtUp()
	where, args := []string{`type <> 'outcome'`, `seq > ?`}, []any{after}
	if session != "" {
		where, args = append(where, `session = ?`), append(args, session)
	}
	if through >= 0 {
		where, args = append(where, `seq <= ?`), append(args, through)
	}
	q := `SELECT seq, '', entry FROM entries WHERE ` + strings.Join(where, " AND ") + ` ORDER BY seq LIMIT ` + strconv.Itoa(limit)
	page := make([]row, 0, limit)
	_, err := s.scan(ctx, q, args, func(seq int64, _, value string) error {
		page = append(page, row{Seq: uint64(seq), Value: value})
		return nil
	})
	return page, err
}

// scan runs q and calls fn with each row's seq, time and entry; it returns
// the number of rows.
func (s *sqliteStore) scan(ctx context.Context, q string, args []any, fn func(seq int64, t, value string) error) (int, error) {
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("audit: read %s: %w", s.path, err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var seq int64
		var t, v string
		if err := rows.Scan(&seq, &t, &v); err != nil {
			return n, fmt.Errorf("audit: read %s: %w", s.path, err)
		}
		n++
		if err := fn(seq, t, v); err != nil {
			return n, err
		}
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("audit: read %s: %w", s.path, err)
	}
	return n, nil
}

// decodeCall reads a Call from a stored entry in one pass over its
// top-level keys; ok is false for an outcome or an entry stored under
// another seq.
func decodeCall(seq uint64, value string) (Call, bool) {
	// An entry is canonical JSON, seq first and type second: an outcome
	// is known without parsing the rest.
	if i := strings.Index(value, `,"type":"`); i > 0 && i < 32 && strings.HasPrefix(value[i+len(`,"type":"`):], typeOutcome+`"`) {
		return Call{}, false
	}
	c := Call{}
	var typ string
	var eseq uint64
	gjson.Parse(value).ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "prev":
			return false // only prev and mac follow
		case "seq":
			eseq = v.Uint()
		case "type":
			typ = v.Str
		case "time":
			c.Time = parseTimeFast(v.Str)
		case "session":
			c.Session = v.Str
		case "scope":
			c.Scope = v.Str
		case "config":
			c.Config = v.Str
		case "client":
			c.Client = v.Str
		case "tool":
			c.Tool = v.Str
		case "kind":
			c.Kind = v.Str
		case "method":
			c.Method = v.Str
		case "path":
			c.Path = v.Str
		case "action":
			c.Action = v.Str
		case "key":
			c.Key = v.Str
		case "decision":
			c.Decision = Decision(v.Str)
		case "code":
			c.Code = v.Str
		case "grant":
			c.Grant = v.Str
		case "credential":
			c.Credential = v.Str
		case "credential_kind":
			c.CredKind = v.Str
		case "cut":
			c.Cut = v.Get("path").Exists() || v.Get("key").Exists()
		}
		return true
	})
	if eseq != seq || typ == typeOutcome || typ == "" {
		return Call{}, false
	}
	c.Seq = seq
	return c, true
}

// parseTimeFast parses a time in timeLayout ("2006-01-02T15:04:05.000000000Z",
// as formatTime writes every time of the log) without time.Parse's
// generality; anything else goes to parseOptTime.
func parseTimeFast(s string) time.Time {
	if len(s) != len(timeLayout) || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[19] != '.' || s[29] != 'Z' {
		return parseOptTime(s)
	}
	num := func(from, to int) (int, bool) {
		n := 0
		for i := from; i < to; i++ {
			c := s[i]
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	y, ok1 := num(0, 4)
	mo, ok2 := num(5, 7)
	d, ok3 := num(8, 10)
	h, ok4 := num(11, 13)
	mi, ok5 := num(14, 16)
	sec, ok6 := num(17, 19)
	ns, ok7 := num(20, 29)
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && ok7) || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 59 {
		return parseOptTime(s)
	}
	t := time.Date(y, time.Month(mo), d, h, mi, sec, ns, time.UTC)
	if t.Day() != d {
		return parseOptTime(s) // February 30th and the like: what time.Parse says
	}
	return t
}
