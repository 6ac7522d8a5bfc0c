package audit

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"
)

// TableHeader is the header line of WriteTable's table.
const TableHeader = "SEQ\tTIME\tSESSION\tTOOL\tMETHOD\tPATH\tDECISION\tSTATUS\tDURATION"

// WriteTable writes records as the table people read (`keyhole audit
// tail`): one line per call, each line prefixed by indent. header writes
// the column names first; color paints decisions with ANSI colours.
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
		fmt.Fprintf(tw, "%s%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			indent, r.Seq, r.Time.Local().Format("15:04:05.000"), r.Session, r.Tool,
			orDash(what), orDash(where), paint(r.Decision, color), status, r.Duration.Round(time.Microsecond))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func paint(d Decision, color bool) string {
	if !color {
		return string(d)
	}
	switch d {
	case Allow:
		return "\x1b[32m" + string(d) + "\x1b[0m"
	case Deny:
		return "\x1b[31m" + string(d) + "\x1b[0m"
	default:
		return "\x1b[33m" + string(d) + "\x1b[0m"
	}
}
