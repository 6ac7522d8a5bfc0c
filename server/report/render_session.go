package report

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// WriteText writes the session report as people read it in a terminal.
// Agent-chosen text (paths, tool names, labels) is escaped.
func (r *SessionReport) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	h := &r.Session
	desc := ""
	if h.ScopeDescription != "" {
		desc = fmt.Sprintf(" (%q)", clean(h.ScopeDescription))
	}
	if !h.ScopeInConfig {
		desc = " (not in the config any more)"
	}
	ew.printf("Session %s · scope %s%s\n", clean(h.ID), clean(h.Scope), desc)
	for _, line := range headerLines(h) {
		ew.printf("  %s\n", line)
	}
	for i, q := range r.Questions {
		ew.printf("\n%d. %s [%s]\n   %s\n", i+1, q.Question, q.ID, q.Answer)
	}
	ew.printf("\nCredentials\n")
	for _, c := range r.Credentials {
		ew.printf("  %s\n", credentialLine(&c))
		tw := tabwriter.NewWriter(ew, 0, 4, 2, ' ', 0)
		for _, g := range c.Grants {
			fmt.Fprintf(tw, "    %s: %s\t%s\t%s\n", clean(g.Tool), clean(g.Line), grantFlags(g), grantUse(g))
		}
		tw.Flush()
		for _, d := range c.Denied {
			ew.printf("    denied: %s ×%d\n", clean(d.Value), d.Count)
		}
		for _, ru := range c.Responses {
			ew.printf("    %s\n", responseLine(ru))
		}
	}
	ew.printf("\nTimeline")
	if r.TimelineOmitted > 0 {
		ew.printf(" (%d calls left out)", r.TimelineOmitted)
	}
	ew.printf("\n")
	tw := tabwriter.NewWriter(ew, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  SEQ\tTIME\tTOOL\tREQUEST\tDECISION\tSTATUS\t")
	when := clock
	if n := len(r.Timeline); n > 0 && r.Timeline[0].Time.UTC().YearDay() != r.Timeline[n-1].Time.UTC().YearDay() {
		when = stamp // a session over midnight: the date too
	}
	for _, e := range r.Timeline {
		mark, note := " ", ""
		if e.Incident {
			mark, note = "▶", "← incident"
		}
		status := "-"
		if e.Status != 0 {
			status = strconv.Itoa(e.Status)
		}
		decision := e.Decision
		if e.Code != "" {
			decision += " (" + e.Code + ")"
		}
		fmt.Fprintf(tw, "%s %s\t%s\t%s\t%s\t%s\t%s\t%s\n", mark, recordName(e.Replica, e.Seq), when(e.Time), clean(e.Tool), clean(e.Request), decision, status, note)
	}
	tw.Flush()
	return ew.err
}

// WriteMarkdown writes the session report to paste into an incident
// document.
func (r *SessionReport) WriteMarkdown(w io.Writer) error {
	ew := &errWriter{w: w}
	h := &r.Session
	ew.printf("## Session `%s` (scope `%s`)\n\n", md(h.ID), md(h.Scope))
	if h.ScopeDescription != "" {
		ew.printf("> %s\n\n", md(h.ScopeDescription))
	}
	for _, line := range headerLines(h) {
		ew.printf("- %s\n", md(line))
	}
	ew.printf("\n### The six questions\n\n")
	for i, q := range r.Questions {
		ew.printf("%d. **%s** (`%s`)  \n   %s\n", i+1, q.Question, q.ID, md(q.Answer))
	}
	ew.printf("\n### Credentials\n\n")
	for _, c := range r.Credentials {
		ew.printf("#### `%s`\n\n%s\n\n", md(c.Secret), md(credentialLine(&c)))
		ew.printf("| tool | granted | reach | used |\n| --- | --- | --- | --- |\n")
		for _, g := range c.Grants {
			ew.printf("| `%s` | `%s` | %s | %s |\n", md(g.Tool), md(g.Line), md(grantFlags(g)), md(grantUse(g)))
		}
		ew.printf("\n")
		for _, d := range c.Denied {
			ew.printf("- denied: `%s` ×%d\n", md(d.Value), d.Count)
		}
		for _, ru := range c.Responses {
			ew.printf("- %s\n", md(responseLine(ru)))
		}
		if len(c.Denied)+len(c.Responses) > 0 {
			ew.printf("\n")
		}
	}
	ew.printf("### Timeline\n\n")
	if r.TimelineOmitted > 0 {
		ew.printf("(%d calls left out)\n\n", r.TimelineOmitted)
	}
	ew.printf("| seq | time (UTC) | tool | request | decision | status |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, e := range r.Timeline {
		seq := recordName(e.Replica, e.Seq)
		if e.Incident {
			seq = "**" + seq + " ◀ incident**"
		}
		status := "-"
		if e.Status != 0 {
			status = strconv.Itoa(e.Status)
		}
		decision := e.Decision
		if e.Code != "" {
			decision += " (" + e.Code + ")"
		}
		ew.printf("| %s | %s | `%s` | `%s` | %s | %s |\n", seq, clock(e.Time), md(e.Tool), md(e.Request), decision, status)
	}
	return ew.err
}

// headerLines are the session's facts, one per line.
func headerLines(h *SessionHeader) []string {
	var out []string
	who := []string{}
	if h.Label != "" {
		who = append(who, "label "+clean(h.Label))
	}
	if len(h.Clients) > 0 {
		who = append(who, "client "+clean(strings.Join(h.Clients, ", ")))
	}
	if len(h.Configs) > 0 {
		who = append(who, "config "+clean(strings.Join(h.Configs, ", ")))
	}
	if len(who) > 0 {
		out = append(out, strings.Join(who, " · "))
	}
	state := h.State
	if h.EndReason != "" {
		state += ": " + clean(h.EndReason)
	}
	line := "started " + stamp(h.Started) + " · " + state
	if !h.Ended.IsZero() {
		line += " (last call " + stamp(h.Ended) + ")"
	}
	if !h.Expires.IsZero() {
		line += " · expires " + stamp(h.Expires)
	}
	out = append(out, line, "state from: "+h.Record)
	c := h.Calls
	calls := fmt.Sprintf("calls %d: %d allowed, %d denied, %d errors, %d interrupted", c.Total, c.Allowed, c.Denied, c.Errors, c.Interrupted)
	if c.Running > 0 {
		calls += fmt.Sprintf(", %d running", c.Running)
	}
	if h.Tripwire {
		calls += " · tripwire: ended by too many denials"
	} else {
		calls += " · tripwire: not tripped"
	}
	out = append(out, calls)
	inc := h.Incident
	switch {
	case inc.Seq != 0:
		out = append(out, fmt.Sprintf("incident: seq %s at %s (%s): %s %s → %s", recordName(inc.Replica, inc.Seq), stamp(inc.Time), inc.By, clean(inc.Tool), clean(inc.Request), inc.Decision))
	default:
		out = append(out, fmt.Sprintf("incident: %s (%s), no call of the session at or before it", stamp(inc.Time), inc.By))
	}
	out = append(out, fmt.Sprintf("other sessions counted from %s to %s", stamp(h.Window.Since), stamp(h.Window.Until)))
	return out
}

func credentialLine(c *Credential) string {
	parts := []string{c.Secret}
	if c.VersionNow > 0 {
		parts[0] += fmt.Sprintf(" v%d", c.VersionNow)
	}
	parts = append(parts, strings.Join(c.Kinds, "/"), "tools "+clean(strings.Join(c.Tools, ", ")))
	if c.InVault {
		parts = append(parts, "created "+stamp(c.Created))
		if !c.Rotated.IsZero() {
			parts = append(parts, "rotated "+stamp(c.Rotated))
		} else {
			parts = append(parts, "never rotated")
		}
		if !c.LastUsed.IsZero() {
			parts = append(parts, "last used "+stamp(c.LastUsed))
		}
	} else {
		parts = append(parts, "not in the vault")
	}
	parts = append(parts, fmt.Sprintf("%d allowed, %d denied", c.Calls.Allowed, c.Calls.Denied))
	return strings.Join(parts, " · ")
}

func grantFlags(g GrantUse) string {
	var f []string
	if g.Deletes {
		f = append(f, "delete")
	} else if g.Writes {
		f = append(f, "write")
	}
	if g.Broad {
		f = append(f, "broad")
	} else if g.AnyDepth {
		f = append(f, "any depth")
	}
	if len(f) == 0 {
		return "read"
	}
	return strings.Join(f, ", ")
}

func grantUse(g GrantUse) string {
	if g.Calls == 0 {
		return fmt.Sprintf("unused (scope: %s in the window)", plural(g.ScopeCalls, "call"))
	}
	return fmt.Sprintf("%s, %s: %s", plural(g.Calls, "call"), plural(g.Distinct, "distinct request"), clean(strings.Join(g.Examples, ", ")))
}

func responseLine(ru ResponseUse) string {
	s := fmt.Sprintf("%s returned %d bytes a call (%s)", clean(ru.Tool), ru.AvgBytes, plural(ru.Calls, "call"))
	if len(ru.Fields) > 0 {
		s += ", projected to " + clean(strings.Join(ru.Fields, ", "))
	} else {
		s += ", the whole response"
	}
	if len(ru.Passed) > 0 {
		s += "; fields passed on: " + clean(strings.Join(ru.Passed, ", "))
	}
	if len(ru.Proposed) > 0 {
		s += "; proposed response.fields: [" + clean(strings.Join(ru.Proposed, ", ")) + "]"
	}
	return s
}

// md makes text safe inside Markdown: clean, and the characters that
// would end a code span or a table cell escaped.
func md(s string) string {
	s = clean(s)
	return strings.NewReplacer("|", `\|`, "`", "'", "\n", " ").Replace(s)
}

// errWriter keeps the first write error.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func (e *errWriter) printf(format string, args ...any) { fmt.Fprintf(e, format, args...) }
