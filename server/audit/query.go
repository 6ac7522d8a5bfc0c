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
// A session or tool filter reads only that session's or tool's calls
// (through their index keys); otherwise a time bound reads only that time
// range; otherwise the log is read from its end, stopping at Limit or
// AfterSeq.
func (l *Log) Query(f Filter) ([]Record, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	c := &collector{l: l, f: f, outcomes: make(map[uint64]*entry)}
	err := l.db.View(func(tx *buntdb.Tx) error {
		switch {
		case f.Session != "":
			return c.valueRange(tx, ixSession, f.Session)
		case f.Tool != "":
			return c.valueRange(tx, ixTool, f.Tool)
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

// visitCall adds the call whose first entry is seq, with its outcome. An
// index key whose entry is gone (tampering) is skipped.
func (c *collector) visitCall(tx *buntdb.Tx, seq uint64) bool {
	e, err := getEntry(tx, seq)
	if errors.Is(err, ErrNotFound) {
		return true
	}
	if err == nil && e.Type == typeIntent {
		var out *entry
		if out, err = outcomeFor(tx, seq); out != nil {
			c.outcomes[seq] = out
		}
	}
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

// valueRange reads the calls of one session or tool, in descending seq.
func (c *collector) valueRange(tx *buntdb.Tx, prefix, value string) error {
	lo, hi := valueRange(prefix, value)
	return tx.DescendRange("", hi, lo, func(k, _ string) bool {
		seq, ok := indexSeq(k)
		return !ok || c.visitCall(tx, seq)
	})
}

// timeRange reads the calls in [Since, Until) through the time keys. They
// order by time, not seq, so the range's seqs are read whole, then their
// calls are visited in descending seq.
func (c *collector) timeRange(tx *buntdb.Tx) error {
	lo, hi := ixTime, ixTimeEnd
	if !c.f.Since.IsZero() {
		lo = ixTime + formatTime(c.f.Since)
	}
	if !c.f.Until.IsZero() {
		hi = ixTime + formatTime(c.f.Until)
	}
	var calls []uint64
	err := tx.AscendRange("", lo, hi, func(k, _ string) bool {
		if seq, ok := indexSeq(k); ok {
			calls = append(calls, seq)
		}
		return true
	})
	if err != nil {
		return err
	}
	slices.Sort(calls)
	for _, seq := range slices.Backward(calls) {
		if !c.visitCall(tx, seq) {
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
