package audit

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/buntdb"
)

// Filter selects records. Zero fields select everything.
type Filter struct {
	Session, Scope, Tool string
	Decision             Decision
	// Since (inclusive) and Until (exclusive) bound the record's time.
	Since, Until time.Time
	// Limit keeps only the last Limit matching records; 0 keeps all.
	Limit int
	// AfterSeq keeps only records whose seq is greater (for tailing).
	AfterSeq uint64
}

func (f *Filter) match(r *Record) bool {
	return (f.Session == "" || r.Session == f.Session) &&
		(f.Scope == "" || r.Scope == f.Scope) &&
		(f.Tool == "" || r.Tool == f.Tool) &&
		(f.Decision == "" || r.Decision == f.Decision) &&
		(f.Since.IsZero() || !r.Time.Before(f.Since)) &&
		(f.Until.IsZero() || r.Time.Before(f.Until))
}

// Query returns the records that match f, one per call, in ascending seq.
// A session or tool filter reads only that session's or tool's entries
// (through an index); otherwise a time bound reads only that time range;
// otherwise the log is read from its end, stopping at Limit or AfterSeq.
func (l *Log) Query(f Filter) ([]Record, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	c := &collector{l: l, f: f, outcomes: make(map[uint64]*entry)}
	err := l.db.View(func(tx *buntdb.Tx) error {
		switch {
		case f.Session != "":
			return tx.DescendEqual(idxSession, pivot("session", f.Session), c.visit)
		case f.Tool != "":
			return tx.DescendEqual(idxTool, pivot("tool", f.Tool), c.visit)
		case !f.Since.IsZero() || !f.Until.IsZero():
			return c.timeRange(tx)
		default:
			return tx.DescendRange("", entryEnd, entryPrefix, c.visit)
		}
	})
	if err == nil {
		err = c.err
	}
	if err != nil {
		return nil, fmt.Errorf("audit: query: %w", err)
	}
	slices.Reverse(c.recs)
	return c.recs, nil
}

// pivot is a JSON document for an index lookup on one string field.
func pivot(field, value string) string {
	b, _ := json.Marshal(map[string]string{field: value})
	return string(b)
}

// collector turns entries, visited in descending seq, into records.
type collector struct {
	l        *Log
	f        Filter
	outcomes map[uint64]*entry // outcomes whose call's first entry is not yet seen
	recs     []Record          // descending
	err      error
}

func (c *collector) visit(_, v string) bool {
	e, err := decode(v)
	if err != nil {
		c.err = err
		return false
	}
	return c.add(e)
}

func (c *collector) add(e *entry) bool {
	if e.Type == typeOutcome {
		c.outcomes[e.Of] = e
		return true
	}
	if c.f.AfterSeq > 0 && e.Seq <= c.f.AfterSeq {
		return false
	}
	out := c.outcomes[e.Seq]
	delete(c.outcomes, e.Seq)
	r := record(e, out, out == nil && e.Type == typeIntent && c.l.isInflight(e.Seq))
	if !c.f.match(&r) {
		return true
	}
	c.recs = append(c.recs, r)
	return c.f.Limit <= 0 || len(c.recs) < c.f.Limit
}

// timeRange reads the entries in [Since, Until) through the time index.
// The index orders by time, not seq, so the range is read whole and then
// visited in descending seq.
func (c *collector) timeRange(tx *buntdb.Tx) error {
	var entries []*entry
	collect := func(_, v string) bool {
		e, err := decode(v)
		if err != nil {
			c.err = err
			return false
		}
		entries = append(entries, e)
		return true
	}
	since, until := pivot("time", formatTime(c.f.Since)), pivot("time", formatTime(c.f.Until))
	var err error
	switch {
	case c.f.Until.IsZero():
		err = tx.AscendGreaterOrEqual(idxTime, since, collect)
	case c.f.Since.IsZero():
		err = tx.AscendLessThan(idxTime, until, collect)
	default:
		err = tx.AscendRange(idxTime, since, until, collect)
	}
	if err != nil || c.err != nil {
		return err
	}
	slices.SortFunc(entries, func(a, b *entry) int {
		switch {
		case a.Seq > b.Seq:
			return -1
		case a.Seq < b.Seq:
			return 1
		}
		return 0
	})
	for _, e := range entries {
		if !c.add(e) {
			break
		}
	}
	return nil
}

// Get returns the record of the call that seq belongs to: seq is the
// call's seq or the seq of its outcome entry. It returns ErrNotFound when
// the log holds no such entry.
func (l *Log) Get(seq uint64) (Record, error) {
	if l.isClosed() {
		return Record{}, ErrClosed
	}
	var rec Record
	err := l.db.View(func(tx *buntdb.Tx) error {
		e, err := getEntry(tx, seq)
		if err != nil {
			return err
		}
		first, out := e, (*entry)(nil)
		switch e.Type {
		case typeOutcome:
			if first, err = getEntry(tx, e.Of); err != nil {
				return err
			}
			out = e
		case typeIntent:
			if out, err = outcomeFor(tx, seq); err != nil {
				return err
			}
		}
		rec = record(first, out, out == nil && first.Type == typeIntent && l.isInflight(first.Seq))
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return Record{}, fmt.Errorf("audit: get %d: %w", seq, ErrNotFound)
	}
	if err != nil {
		return Record{}, fmt.Errorf("audit: get %d: %w", seq, err)
	}
	return rec, nil
}

func getEntry(tx *buntdb.Tx, seq uint64) (*entry, error) {
	v, err := tx.Get(entryKey(seq))
	if errors.Is(err, buntdb.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return decode(v)
}

// outcomeFor finds the outcome of intent seq through the "of" index, or nil.
func outcomeFor(tx *buntdb.Tx, seq uint64) (*entry, error) {
	var out *entry
	var derr error
	err := tx.AscendEqual(idxOf, `{"of":`+strconv.FormatUint(seq, 10)+`}`, func(_, v string) bool {
		out, derr = decode(v)
		return false
	})
	if err == nil {
		err = derr
	}
	return out, err
}

// Export writes the records that match f to w as "jsonl" (one JSON record
// a line) or "csv" (a header row, then one row a record).
func (l *Log) Export(w io.Writer, format string, f Filter) error {
	if format != "jsonl" && format != "csv" {
		return fmt.Errorf("audit: export format %q: want jsonl or csv", format)
	}
	recs, err := l.Query(f)
	if err != nil {
		return err
	}
	if format == "jsonl" {
		enc := json.NewEncoder(w)
		for i := range recs {
			if err := enc.Encode(&recs[i]); err != nil {
				return fmt.Errorf("audit: export: %w", err)
			}
		}
		return nil
	}
	cw := csv.NewWriter(w)
	cw.Write(csvHeader)
	for i := range recs {
		cw.Write(csvRow(&recs[i]))
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	return nil
}

var csvHeader = []string{
	"seq", "time", "session", "scope", "client", "tool", "kind", "method", "host", "path",
	"query_names", "bucket", "action", "key", "args", "args_sha256", "decision", "code", "reason",
	"grant", "credential", "credential_version", "status", "bytes_in", "bytes_out", "duration_ns",
	"scrubbed", "prev", "mac",
}

func csvRow(r *Record) []string {
	row := []string{
		strconv.FormatUint(r.Seq, 10), r.Time.Format(time.RFC3339Nano), r.Session, r.Scope, r.Client,
		r.Tool, r.Kind, r.Method, r.Host, r.Path, strings.Join(r.QueryNames, " "), r.Bucket,
		r.Action, r.Key, string(r.Args), r.ArgsSHA256, string(r.Decision), r.Code, r.Reason,
		r.Grant, r.Credential, strconv.Itoa(r.CredVersion), strconv.Itoa(r.Status),
		strconv.FormatInt(r.BytesIn, 10), strconv.FormatInt(r.BytesOut, 10),
		strconv.FormatInt(int64(r.Duration), 10), strconv.FormatBool(r.Scrubbed), r.Prev, r.MAC,
	}
	for i, v := range row {
		row[i] = defuse(v)
	}
	return row
}

// defuse keeps a spreadsheet from reading an agent-chosen cell (a path, a
// reason) as a formula: such cells get a leading apostrophe.
func defuse(v string) string {
	if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
		return "'" + v
	}
	return v
}
