package audit

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Filter selects records. Zero fields select everything.
type Filter struct {
	Session, Scope, Tool string
	// Credential selects the calls made with this vault secret.
	Credential string
	Decision   Decision
	// Since (inclusive) and Until (exclusive) bound the record's time.
	Since, Until time.Time
	// Limit keeps only the last Limit matching records; 0 keeps all.
	Limit int
	// AfterSeq keeps only records whose seq is greater (for tailing).
	AfterSeq uint64
	// BeforeSeq, if set, keeps only records whose seq is smaller (for
	// paging back from a record, with Limit).
	BeforeSeq uint64
}

func (f *Filter) match(r *Record) bool {
	return (f.Session == "" || r.Session == f.Session) &&
		(f.Scope == "" || r.Scope == f.Scope) &&
		(f.Tool == "" || r.Tool == f.Tool) &&
		(f.Credential == "" || r.Credential == f.Credential) &&
		(f.Decision == "" || r.Decision == f.Decision) &&
		(f.Since.IsZero() || !r.Time.Before(f.Since)) &&
		(f.Until.IsZero() || r.Time.Before(f.Until))
}

func (f *Filter) query() callQuery {
	return callQuery{
		Session: f.Session, Scope: f.Scope, Tool: f.Tool, Credential: f.Credential,
		Decision: f.Decision, Since: f.Since, Until: f.Until, After: f.AfterSeq, Before: f.BeforeSeq,
	}
}

// pageSize is how many calls a reader reads at a time: readers hold one
// page in memory and one short read transaction at a time.
const pageSize = 512

// Query returns the records that match f, one per call, in ascending seq.
// It reads the log a page at a time through the store's indexes; with a
// Limit it reads from the end and stops once it has Limit records.
func (l *Log) Query(f Filter) ([]Record, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	if f.Limit <= 0 {
		var recs []Record
		err := l.Stream(context.Background(), f, func(r Record) error {
			recs = append(recs, r)
			return nil
		})
		return recs, err
	}
	var recs []Record // descending
	q := f.query()
	q.Desc = true
	if ok, err := l.narrowToWindow(&q); err != nil || !ok {
		return nil, wrapQuery(err)
	}
	for len(recs) < f.Limit {
		q.Limit = min(pageSize, max(f.Limit-len(recs), 16))
		page, err := l.st.calls(q)
		if err != nil {
			return nil, fmt.Errorf("audit: query: %w", err)
		}
		for _, c := range page {
			r, ok, err := l.merge(c)
			if err != nil {
				return nil, fmt.Errorf("audit: query: %w", err)
			}
			if ok && f.match(&r) {
				recs = append(recs, r)
				if len(recs) == f.Limit {
					break
				}
			}
		}
		if len(page) < q.Limit {
			break
		}
		q.Before = page[len(page)-1].First.Seq
	}
	slices.Reverse(recs)
	return recs, nil
}

// Stream calls fn with every record that matches f, in ascending seq,
// reading the log a page at a time (so memory stays flat however long the
// log). It stops at the first error fn returns, and returns it. f.Limit,
// if set, keeps the last Limit records (which Stream reads first).
func (l *Log) Stream(ctx context.Context, f Filter, fn func(Record) error) error {
	if l.isClosed() {
		return ErrClosed
	}
	if f.Limit > 0 {
		recs, err := l.Query(f)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}
	q := f.query()
	q.Limit = pageSize
	if ok, err := l.narrowToWindow(&q); err != nil || !ok {
		return wrapQuery(err)
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		page, err := l.st.calls(q)
		if err != nil {
			return fmt.Errorf("audit: query: %w", err)
		}
		for _, c := range page {
			r, ok, err := l.merge(c)
			if err != nil {
				return fmt.Errorf("audit: query: %w", err)
			}
			if ok && f.match(&r) {
				if err := fn(r); err != nil {
					return err
				}
			}
		}
		if len(page) < q.Limit {
			return nil
		}
		q.After = page[len(page)-1].First.Seq
	}
}

// wrapQuery prefixes a reader's error (nil stays nil).
func wrapQuery(err error) error {
	if err != nil {
		return fmt.Errorf("audit: query: %w", err)
	}
	return nil
}

// merge decodes a call and its outcome into its Record. ok is false for a
// row that is not the first entry of a call.
func (l *Log) merge(c callRow) (Record, bool, error) {
	first, err := decode(c.First.Value)
	if err != nil {
		return Record{}, false, fmt.Errorf("entry %d: %w", c.First.Seq, err)
	}
	if first.Type == typeOutcome || first.Seq != c.First.Seq {
		return Record{}, false, nil
	}
	var out *entry
	if c.Outcome.Value != "" {
		if o, err := decode(c.Outcome.Value); err == nil && o.Type == typeOutcome && o.Of == first.Seq {
			out = o
		}
	}
	return record(first, out, out == nil && first.Type == typeIntent && l.isInflight(first.Seq)), true, nil
}

// Get returns the record of the call that seq belongs to: seq is the
// call's seq or the seq of its outcome entry. It returns ErrNotFound when
// the log holds no such entry.
func (l *Log) Get(seq uint64) (Record, error) {
	if l.isClosed() {
		return Record{}, ErrClosed
	}
	rec, err := l.get(seq)
	if errors.Is(err, ErrNotFound) {
		return Record{}, fmt.Errorf("audit: get %d: %w", seq, ErrNotFound)
	}
	if err != nil {
		return Record{}, fmt.Errorf("audit: get %d: %w", seq, err)
	}
	return rec, nil
}

func (l *Log) get(seq uint64) (Record, error) {
	e, err := l.entryAt(seq)
	if err != nil {
		return Record{}, err
	}
	first, out := e, (*entry)(nil)
	switch e.Type {
	case typeOutcome:
		if first, err = l.entryAt(e.Of); err != nil {
			return Record{}, err
		}
		if first.Type != typeIntent {
			return Record{}, ErrNotFound
		}
		// The first outcome of the intent completes it, as readers show.
		r, ok, err := l.st.outcome(first.Seq)
		if err != nil {
			return Record{}, err
		}
		out = e
		if ok && r.Seq != e.Seq {
			if o, err := decode(r.Value); err == nil && o.Type == typeOutcome && o.Of == first.Seq {
				out = o
			}
		}
	case typeIntent:
		r, ok, err := l.st.outcome(seq)
		if err != nil {
			return Record{}, err
		}
		if ok {
			if o, err := decode(r.Value); err == nil && o.Type == typeOutcome && o.Of == seq {
				out = o
			}
		}
	}
	return record(first, out, out == nil && first.Type == typeIntent && l.isInflight(first.Seq)), nil
}

// entryAt decodes the entry at seq, or returns ErrNotFound.
func (l *Log) entryAt(seq uint64) (*entry, error) {
	r, ok, err := l.st.get(seq)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrNotFound
	}
	e, err := decode(r.Value)
	if err != nil {
		return nil, fmt.Errorf("entry %d: %w", seq, err)
	}
	if e.Seq != seq {
		return nil, ErrNotFound // an entry moved from elsewhere: Verify's to report
	}
	return e, nil
}

// Export writes the records that match f to w as "jsonl" (one JSON record
// a line) or "csv" (a header row, then one row a record).
func (l *Log) Export(w io.Writer, format string, f Filter) error {
	if format != "jsonl" && format != "csv" {
		return fmt.Errorf("audit: export format %q: want jsonl or csv", format)
	}
	if format == "jsonl" {
		enc := json.NewEncoder(w)
		return l.Stream(context.Background(), f, func(r Record) error {
			if err := enc.Encode(&r); err != nil {
				return fmt.Errorf("audit: export: %w", err)
			}
			return nil
		})
	}
	cw := csv.NewWriter(w)
	cw.Write(csvHeader)
	err := l.Stream(context.Background(), f, func(r Record) error {
		cw.Write(csvRow(&r))
		return cw.Error()
	})
	cw.Flush()
	if err == nil {
		err = cw.Error()
	}
	if err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	return nil
}

var csvHeader = []string{
	"seq", "time", "session", "scope", "client", "tool", "kind", "method", "host", "path",
	"query_names", "bucket", "action", "key", "args", "args_sha256", "decision", "code", "reason",
	"grant", "credential", "credential_version", "status", "bytes_in", "bytes_out", "duration_ns",
	"scrubbed", "cut", "prev", "mac",
}

func csvRow(r *Record) []string {
	row := []string{
		strconv.FormatUint(r.Seq, 10), r.Time.Format(time.RFC3339Nano), r.Session, r.Scope, r.Client,
		r.Tool, r.Kind, r.Method, r.Host, r.Path, strings.Join(r.QueryNames, " "), r.Bucket,
		r.Action, r.Key, string(r.Args), r.ArgsSHA256, string(r.Decision), r.Code, r.Reason,
		r.Grant, r.Credential, strconv.Itoa(r.CredVersion), strconv.Itoa(r.Status),
		strconv.FormatInt(r.BytesIn, 10), strconv.FormatInt(r.BytesOut, 10),
		strconv.FormatInt(int64(r.Duration), 10), strconv.FormatBool(r.Scrubbed), cutCell(r.Cut), r.Prev, r.MAC,
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

// cutCell lists the cut fields as "field=sha256 …", sorted.
func cutCell(cut map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(cut)) {
		parts = append(parts, k+"="+cut[k])
	}
	return strings.Join(parts, " ")
}
