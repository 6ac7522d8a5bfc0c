package access

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"
)

// How requests read on a terminal (`keyhole access list | show | watch`).
// Everything an agent chose is escaped: a control character, a
// bidirectional override or a line break cannot forge or hide a line.

// TableHeader is the header line of WriteTable.
const TableHeader = "ID\tSTATE\tSESSION\tSCOPE\tCALL\tRISKS\tEXPIRES\tHELD"

// WriteTable writes one line per request, under a header.
func WriteTable(w io.Writer, reqs []Request, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, TableHeader)
	for i := range reqs {
		r := &reqs[i]
		risks := strings.Join(r.Risks, ",")
		if risks == "" {
			risks = "-"
		}
		expires := "-"
		if r.Live() {
			expires = "in " + until(now, r.Expires)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", r.ID, r.State, Printable(r.Session), Printable(r.Scope),
			Printable(r.Summary()), risks, expires, r.Waiting)
	}
	return tw.Flush()
}

// WriteText writes the whole request, one labelled line per part, as a
// person reads it before answering: exactly what would be sent, with
// what credential, why it waits and what answering does.
func WriteText(w io.Writer, r *Request, now time.Time) error {
	var b strings.Builder
	state := string(r.State)
	switch {
	case r.State == StateOpen:
		state += ", expires unanswered in " + until(now, r.Expires)
	case r.State == StateApproved:
		state += ", usable until " + r.Expires.Local().Format("15:04:05") + " (in " + until(now, r.Expires) + ")"
	case r.Ended != "":
		state += ": " + Printable(r.Ended)
	}
	fmt.Fprintf(&b, "access request %s — %s\n", r.ID, state)
	line := func(label, format string, args ...any) {
		fmt.Fprintf(&b, "  %-10s %s\n", label, fmt.Sprintf(format, args...))
	}
	sess := Printable(r.Session) + " (scope " + Printable(r.Scope)
	if r.Label != "" {
		sess += ", label " + strconv.Quote(Printable(r.Label))
	}
	if r.Client != "" {
		sess += ", client " + Printable(r.Client)
	}
	line("session", "%s)", sess)
	line("config", "%s (sha256 %s)", Printable(r.Config), short(r.ConfigSHA256))
	writeCall(&b, &r.Call, line)
	c := &r.Call
	if c.Credential != "" {
		line("credential", "%s (injected by keyhole; the agent never sees it)", Printable(c.Credential))
	}
	if r.Grant != "" {
		line("grant", "%s", Printable(r.Grant))
	} else {
		line("why", "outside the scope: %s", Printable(r.Denied))
	}
	if len(r.Risks) > 0 {
		line("risks", "%s", strings.Join(r.Risks, ", "))
	}
	line("request", "sha256 %s; asked %d time(s), %d call(s) held now", r.SHA256, r.Asks, r.Waiting)
	if d := r.Decision; d != nil {
		verb := "denied"
		if d.Approved {
			verb = "approved once"
			if d.ForSession {
				verb = "approved for the session (" + Printable(r.Exact.String()) + ")"
			}
		}
		note := ""
		if d.Note != "" {
			note = "; note: " + Printable(d.Note)
		}
		line("decision", "%s by %s at %s%s", verb, Printable(d.By), d.At.Local().Format(time.DateTime), note)
	}
	if !r.Used.IsZero() {
		line("used", "%s", r.Used.Local().Format(time.DateTime))
	}
	if r.State == StateOpen {
		line("approve", "keyhole access approve %s   (once: this exact request, within %s)", r.ID, r.TTL)
		line("", "keyhole access approve %s --for-session   (also: %s for the rest of session %s)", r.ID, Printable(r.Exact.String()), Printable(r.Session))
		line("deny", "keyhole access deny %s [--note TEXT]", r.ID)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeCall writes the lines of the canonical request.
func writeCall(b *strings.Builder, c *Call, line func(label, format string, args ...any)) {
	if c.Kind == "s3" {
		line("call", "%s: %s s3://%s/%s", Printable(c.Tool), c.Action, Printable(c.Bucket), Printable(c.Key))
		if c.Action == "list" {
			line("list", "delimiter %q, max_keys %d, continuation_token %q", Printable(c.Delimiter), c.MaxKeys, Printable(c.ContinuationToken))
		}
	} else {
		line("call", "%s: %s %s%s", Printable(c.Tool), c.Method, Printable(c.Host), Printable(c.Path))
		for _, q := range c.Query {
			line("query", "%s = %s", Printable(q.Name), Printable(q.Value))
		}
		for _, h := range c.Headers {
			line("header", "%s: %s", Printable(h.Name), Printable(h.Value))
		}
		if c.Body != nil {
			line("body", "%d bytes, sha256 %s%s", c.Body.Bytes, c.Body.SHA256, bodyNote(c.Body))
			for _, l := range strings.Split(c.Body.Preview, "\n") {
				fmt.Fprintf(b, "  %-10s | %s\n", "", Printable(l))
			}
		}
	}
}

// WriteEvent writes one step of a request as one line.
func WriteEvent(w io.Writer, ev Event) error {
	r := &ev.Request
	extra := ""
	switch ev.Type {
	case EventRequest:
		if len(r.Risks) > 0 {
			extra = "  risks: " + strings.Join(r.Risks, ", ")
		}
		extra += "  → keyhole access show " + r.ID
	case EventApprove, EventDeny:
		if r.Decision != nil {
			extra = "  by " + Printable(r.Decision.By)
			if r.Decision.ForSession {
				extra += " for the session"
			}
			if r.Decision.Note != "" {
				extra += "; note: " + Printable(r.Decision.Note)
			}
		}
	case EventExpire:
		extra = "  " + Printable(r.Ended)
	}
	_, err := fmt.Fprintf(w, "%s  %-7s  %s  %s  %s%s\n", ev.Time.Local().Format("15:04:05"), ev.Type, r.ID, Printable(r.Session), Printable(r.Summary()), extra)
	return err
}

func bodyNote(b *Body) string {
	var parts []string
	if b.Encoding != "" {
		parts = append(parts, "shown as "+b.Encoding)
	}
	if b.Truncated {
		parts = append(parts, fmt.Sprintf("first %d bytes shown", len(b.Preview)))
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// until is the time left to t, rounded for people.
func until(now, t time.Time) string {
	d := t.Sub(now)
	if d <= 0 {
		return "0s"
	}
	return d.Round(time.Second).String()
}

func short(sum string) string {
	if len(sum) > 12 {
		return sum[:12] + "…"
	}
	return sum
}

// Printable escapes what a terminal would act on: control characters
// (line breaks and escape sequences among them), bidirectional controls,
// line and paragraph separators and invalid UTF-8.
func Printable(s string) string {
	clean := true
	for _, r := range s {
		if needsEscape(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case needsEscape(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
		i += n
	}
	return b.String()
}

func needsEscape(r rune) bool {
	return r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == '\u2028' || r == '\u2029'
}
