package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keyhole-dev/keyhole/server/audit"
)

// The audit: filters, pages by seq (newest first), one record's full
// view. The live tail is in events.go.

// Page sizes of the audit list.
const (
	defaultPageSize = 50
	maxPageSize     = 200
	// maxFilterLen caps a filter value.
	maxFilterLen = 256
)

// auditForm is the audit page's filters as the form holds them.
type auditForm struct {
	Session, Scope, Tool, Credential, Decision string
	Since, Until                               string
	N                                          int
}

type auditListData struct {
	Form      auditForm
	Decisions []string
	Records   []audit.Record // newest first
	// Older and Newer are the links to the next pages; "" when there is
	// none.
	Older, Newer string
	// First says the page holds the newest records: the live tail may
	// add to it.
	First bool
	// Stopped is the seq where a page of a filter no index serves stopped
	// looking (it looks through at most Console.window seqs); 0 if it did not.
	Stopped uint64
	// After is the newest seq shown, where the live tail starts.
	After  uint64
	Stream string // the query of the live tail
	Err    string
}

var decisions = []string{string(audit.Allow), string(audit.Deny), string(audit.Error), string(audit.Interrupted), string(audit.Running)}

// parseAuditFilter reads the filters of the query q; a problem is said
// in words and leaves its filter out.
func parseAuditFilter(q url.Values, now time.Time) (audit.Filter, auditForm, []string) {
	val := func(k string) string {
		v := strings.TrimSpace(q.Get(k))
		if len(v) > maxFilterLen {
			v = v[:maxFilterLen]
		}
		return v
	}
	form := auditForm{Session: val("session"), Scope: val("scope"), Tool: val("tool"), Credential: val("credential"),
		Decision: val("decision"), Since: val("since"), Until: val("until"), N: defaultPageSize}
	f := audit.Filter{Session: form.Session, Scope: form.Scope, Tool: form.Tool, Credential: form.Credential}
	var problems []string
	if form.Decision != "" {
		if slices.Contains(decisions, form.Decision) {
			f.Decision = audit.Decision(form.Decision)
		} else {
			problems = append(problems, "decision must be one of "+strings.Join(decisions, ", "))
			form.Decision = ""
		}
	}
	var err error
	if f.Since, err = parseWhen(form.Since, now); err != nil {
		problems = append(problems, "since: "+err.Error())
	}
	if f.Until, err = parseWhen(form.Until, now); err != nil {
		problems = append(problems, "until: "+err.Error())
	}
	if n, err := strconv.Atoi(val("n")); err == nil && n > 0 {
		form.N = min(n, maxPageSize)
	}
	return f, form, problems
}

// parseWhen reads a time: a duration back from now (90m, 2h, 7d), a
// local date and time (2026-03-01T12:00, as a datetime-local field sends
// it) or RFC 3339.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	for _, layout := range []string{"2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, errors.New("want a duration back from now (90m, 2h, 7d), a date and time (2026-03-01T12:00) or RFC 3339")
}

// scanWindow is how many seqs a page of a filter no index serves (scope,
// decision) looks through (Console.window): however rare the match, a
// page costs at most that many entries read.
const scanWindow = 10000

// headSeq is the seq of the newest call (0 for an empty log).
func (c *Console) headSeq() uint64 {
	last, err := c.o.Audit.Query(audit.Filter{Limit: 1})
	if err != nil || len(last) == 0 {
		return 0
	}
	return last[0].Seq
}

// errEnough stops a Stream once a page is full.
var errEnough = errors.New("enough")

func (c *Console) auditList(w http.ResponseWriter, r *http.Request, s consoleSession) {
	q := r.URL.Query()
	f, form, problems := parseAuditFilter(q, c.o.Now())
	d := auditListData{Form: form, Decisions: decisions, Err: strings.Join(problems, "; ")}
	before, _ := strconv.ParseUint(q.Get("before"), 10, 64)
	after, _ := strconv.ParseUint(q.Get("after"), 10, 64)
	n := form.N

	// A filter no index serves (scope, decision) reads the log back entry
	// by entry: a page then looks through at most scanWindow seqs, and
	// its link goes on from where it stopped.
	windowed := (form.Scope != "" || form.Decision != "") && form.Session == "" && form.Tool == "" && form.Credential == ""
	var recs []audit.Record // ascending
	var more bool           // records beyond the page, in the direction read
	var stopped uint64      // where a windowed page stopped looking (0: it did not)
	var err error
	if after > 0 && before == 0 {
		// A newer page: the first n+1 records after the seq, ascending.
		g := f
		g.AfterSeq = after
		if windowed {
			g.BeforeSeq = after + c.window + 1
		}
		err = c.o.Audit.Stream(r.Context(), g, func(rec audit.Record) error {
			recs = append(recs, rec)
			if len(recs) > n {
				return errEnough
			}
			return nil
		})
		if errors.Is(err, errEnough) {
			err = nil
		}
		if len(recs) > n {
			recs, more = recs[:n], true
		} else if windowed && err == nil && c.headSeq() > after+c.window {
			stopped = after + c.window
		}
	} else {
		g := f
		g.BeforeSeq, g.Limit = before, n+1
		if windowed {
			from := before
			if from == 0 {
				from = c.headSeq() + 1
			}
			if from > c.window+1 {
				g.AfterSeq = from - c.window - 1
			}
		}
		recs, err = c.o.Audit.Query(g)
		if len(recs) > n {
			recs, more = recs[1:], true
		} else if g.AfterSeq > 0 && err == nil {
			stopped = g.AfterSeq + 1
		}
	}
	if err != nil {
		d.Err = strings.TrimPrefix(d.Err+"; ", "; ") + err.Error()
	}
	base := form.query()
	if stopped > 0 {
		d.Stopped = stopped
	}
	if len(recs) > 0 {
		oldest, newest := recs[0].Seq, recs[len(recs)-1].Seq
		hasOlder := more
		hasNewer := before > 0
		if after > 0 && before == 0 {
			hasOlder, hasNewer = true, more
		}
		if hasOlder {
			d.Older = withSeq(base, "before", oldest)
		}
		if hasNewer {
			d.Newer = withSeq(base, "after", newest)
		}
		d.After = newest
	} else if before > 0 || after > 0 {
		d.Newer = "?" + base.Encode()
	}
	// A windowed page that stopped short goes on from where it stopped.
	if stopped > 0 && after > 0 && before == 0 {
		d.Newer = withSeq(base, "after", stopped)
	} else if stopped > 0 {
		d.Older = withSeq(base, "before", stopped)
	}
	d.First = before == 0 && (after == 0 || !more) && !(stopped > 0 && after > 0)
	slices.Reverse(recs)
	d.Records = recs
	// The tail starts after the newest record shown, or before the
	// oldest one shown running, so that its outcome replaces it.
	from := d.After
	if len(recs) == 0 {
		from = c.headSeq() // nothing shown matches: the tail starts at the head
	}
	for _, rec := range recs {
		if rec.Decision == audit.Running {
			from = min(from, rec.Seq-1)
		}
	}
	stream := form.query()
	stream.Set("after", strconv.FormatUint(from, 10))
	if f.Since.IsZero() && f.Until.IsZero() {
		d.Stream = stream.Encode()
	}
	c.render(w, http.StatusOK, s, "audit", "Audit", "audit", d)
}

// query is the form as the query of a link (empty fields left out).
func (f auditForm) query() url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"session": f.Session, "scope": f.Scope, "tool": f.Tool, "credential": f.Credential,
		"decision": f.Decision, "since": f.Since, "until": f.Until} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if f.N != defaultPageSize {
		v.Set("n", strconv.Itoa(f.N))
	}
	return v
}

func withSeq(v url.Values, k string, seq uint64) string {
	out := url.Values{}
	for key, vals := range v {
		out[key] = vals
	}
	out.Set(k, strconv.FormatUint(seq, 10))
	return "?" + out.Encode()
}

type recordData struct {
	Rec audit.Record
	// Args is the arguments as indented JSON.
	Args string
	// Request is the access request a keyhole.access.* record is about.
	Request string
}

func (c *Console) auditRecord(w http.ResponseWriter, r *http.Request, s consoleSession) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		c.fail(w, r, http.StatusNotFound, "An audit record is named by its seq, a number.")
		return
	}
	rec, err := c.o.Audit.Get(seq)
	if errors.Is(err, audit.ErrNotFound) {
		c.fail(w, r, http.StatusNotFound, "The audit log holds no record "+strconv.FormatUint(seq, 10)+".")
		return
	}
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, err.Error())
		return
	}
	d := recordData{Rec: rec}
	if len(rec.Args) > 0 {
		var buf bytes.Buffer
		if json.Indent(&buf, rec.Args, "", "  ") == nil {
			d.Args = buf.String()
		} else {
			d.Args = string(rec.Args)
		}
	}
	if strings.HasPrefix(rec.Tool, "keyhole.access.") {
		if id, _, ok := strings.Cut(rec.Reason, ":"); ok && strings.HasPrefix(id, "acr_") {
			d.Request = id
		}
	}
	c.render(w, http.StatusOK, s, "record", "Audit record "+strconv.FormatUint(rec.Seq, 10), "audit", d)
}

// auditEvent is one record as the live tail sends it: what a row shows.
type auditEvent struct {
	Seq      uint64 `json:"seq"`
	Time     string `json:"time"`
	Session  string `json:"session"`
	Scope    string `json:"scope"`
	Tool     string `json:"tool"`
	Request  string `json:"request"`
	Decision string `json:"decision"`
	Status   string `json:"status"`
	Duration string `json:"duration"`
	Reason   string `json:"reason,omitempty"`
}

// target is what a call touched, as one line: method and path, or S3
// action, bucket and key.
func target(r audit.Record) string {
	switch {
	case r.Action != "":
		return r.Action + " s3://" + r.Bucket + "/" + r.Key
	case r.Method != "" || r.Path != "":
		return strings.TrimSpace(r.Method + " " + r.Path)
	}
	return ""
}

func eventOf(r audit.Record) auditEvent {
	ev := auditEvent{Seq: r.Seq, Time: fmtTime(r.Time), Session: visible(r.Session), Scope: visible(r.Scope), Tool: visible(r.Tool),
		Request: visible(target(r)), Decision: string(r.Decision), Status: "—", Duration: fmtDuration(r.Duration)}
	if r.Status != 0 {
		ev.Status = strconv.Itoa(r.Status)
	}
	if r.Decision != audit.Allow {
		ev.Reason = visible(r.Reason)
	}
	return ev
}

// followAudit runs Follow in its own goroutine and hands its batches to
// the caller's loop, which alone writes to the client.
func (c *Console) followAudit(ctx context.Context, f audit.Filter) (<-chan []audit.Record, <-chan error) {
	batches := make(chan []audit.Record)
	errc := make(chan error, 1)
	go func() {
		errc <- c.o.Audit.Follow(ctx, f, func(recs []audit.Record) error {
			select {
			case batches <- recs:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	return batches, errc
}
