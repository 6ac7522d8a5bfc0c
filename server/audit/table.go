package audit

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/keyhole-dev/keyhole/server/terminal"
)

// TableHeader is the header line of WriteTable's table.
const TableHeader = "SEQ\tTIME\tSESSION\tTOOL\tMETHOD\tPATH\tDECISION\tSTATUS\tCREDENTIAL\tSCRUBBED\tDURATION\tREASON"

// How many characters of a path (or key) and of a reason the table
// shows; `audit show SEQ` shows all of them.
const (
	tablePath   = 80
	tableReason = 60
)

// WriteTable writes records as the table people read (`keyhole audit
// tail`): one line per call, each line prefixed by indent. header writes
// the column names first; color paints decisions with ANSI colours. An
// agent chose the tool name, path, key and reason, so each is printed
// through terminal.Escape: a newline or an escape sequence in them shows
// as `\n` or `\x1b` and cannot forge, hide or erase a row.
func WriteTable(w io.Writer, recs []Record, indent string, header, color bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if header {
		fmt.Fprintln(tw, indent+TableHeader)
	}
	for _, r := range recs {
		what, where := r.Method, r.Path
		if r.Action != "" {
			what, where = r.Action, r.Key
		}
		status := "-"
		if r.Status != 0 {
			status = strconv.Itoa(r.Status)
		}
		cred := r.Credential
		if cred != "" && r.CredVersion > 0 {
			cred += " v" + strconv.Itoa(r.CredVersion)
		}
		scrubbed := "-"
		if r.Scrubbed {
			scrubbed = "yes"
		}
		fmt.Fprintf(tw, "%s%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			indent, r.Seq, r.Time.Local().Format("15:04:05.000"), cell(r.Session), cell(r.Tool),
			cell(what), orDash(terminal.EscapeShort(where, tablePath)), paint(r.Decision, color), status, cell(cred), scrubbed,
			r.Duration.Round(time.Microsecond), orDash(terminal.EscapeShort(r.Reason, tableReason)))
	}
	return tw.Flush()
}

// cell is one field of the table, escaped for the terminal.
func cell(s string) string { return orDash(terminal.Escape(s)) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func paint(d Decision, color bool) string {
	s := terminal.Escape(string(d))
	if !color {
		return s
	}
	switch d {
	case Allow:
		return "\x1b[32m" + s + "\x1b[0m"
	case Deny:
		return "\x1b[31m" + s + "\x1b[0m"
	default:
		return "\x1b[33m" + s + "\x1b[0m"
	}
}
