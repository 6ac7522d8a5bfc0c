package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/keyhole-dev/keyhole/server"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/config"
)

func (a *App) auditCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "audit",
		Short: "Review, verify and export the per-call audit log",
	}
	c.AddCommand(a.auditTailCmd(), a.auditShowCmd(), a.auditVerifyCmd(), a.auditExportCmd(), a.auditArchiveCmd())
	return c
}

// errNoRecords says no call was ever recorded in the data dir; listing
// commands print nothing and succeed.
var errNoRecords = errors.New("no calls recorded yet")

// orEmpty turns errNoRecords into success, with a note on stderr.
func (a *App) orEmpty(err error, note string) error {
	if errors.Is(err, errNoRecords) {
		fmt.Fprintln(a.stderr, note)
		return nil
	}
	return err
}

// withAudit opens the audit log of the data dir read-only. It needs no
// lock: reading is safe while a keyhole process serves calls.
func (a *App) withAudit(fn func(l *server.AuditReader) error) error {
	r, err := server.OpenAuditReader(a.dataDir(), a.keySource())
	if errors.Is(err, server.ErrNoAuditLog) {
		return errNoRecords
	}
	if err != nil {
		return err
	}
	defer r.Close()
	return fn(r)
}

type filterFlags struct {
	session, scope, tool, decision string
	since, until                   string
}

func (a *App) registerFilters(f *filterFlags, c *cobra.Command, until bool) {
	f.register(c, until)
	c.RegisterFlagCompletionFunc("session", a.completeSessions)
	c.RegisterFlagCompletionFunc("scope", a.completeScopes)
	c.RegisterFlagCompletionFunc("decision", cobra.FixedCompletions([]string{"allow", "deny", "error", "interrupted", "running"}, cobra.ShellCompDirectiveNoFileComp))
}

func (f *filterFlags) register(c *cobra.Command, until bool) {
	c.Flags().StringVar(&f.session, "session", "", "only this session id")
	c.Flags().StringVar(&f.scope, "scope", "", "only this scope")
	c.Flags().StringVar(&f.tool, "tool", "", "only this tool")
	c.Flags().StringVar(&f.decision, "decision", "", "only this decision: allow, deny, error, interrupted, running")
	c.Flags().StringVar(&f.since, "since", "", "only records newer than this (duration like 1h, or RFC 3339 time)")
	if until {
		c.Flags().StringVar(&f.until, "until", "", "only records older than this (duration or RFC 3339 time)")
	}
}

func (f *filterFlags) filter() (audit.Filter, error) {
	flt := audit.Filter{Session: f.session, Scope: f.scope, Tool: f.tool, Decision: audit.Decision(f.decision)}
	switch f.decision {
	case "", "allow", "deny", "error", "interrupted", "running":
	default:
		return flt, &usageError{fmt.Errorf("--decision %q: want allow, deny, error, interrupted or running", f.decision)}
	}
	var err error
	if flt.Since, err = parseWhen(f.since); err != nil {
		return flt, &usageError{fmt.Errorf("--since: %w", err)}
	}
	if flt.Until, err = parseWhen(f.until); err != nil {
		return flt, &usageError{fmt.Errorf("--until: %w", err)}
	}
	return flt, nil
}

// parseWhen reads "1h" as one hour ago, or an RFC 3339 time.
func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := config.ParseRetention(s); err == nil {
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration (1h, 7d) nor an RFC 3339 time", s)
	}
	return t, nil
}

func (a *App) auditTailCmd() *cobra.Command {
	var ff filterFlags
	var n int
	var follow, asJSON bool
	c := &cobra.Command{
		Use:   "tail",
		Short: "Show the latest audit records (a table, or --json lines)",
		Example: `  keyhole audit tail --session ses_abc --decision deny
  keyhole audit tail -n 100 --tool github --since 1h --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			flt, err := ff.filter()
			if err != nil {
				return err
			}
			if n < 0 {
				return &usageError{fmt.Errorf("-n %d: want a number of records, or 0 for all", n)}
			}
			pr := a.recordPrinter(asJSON)
			if a.store() != "" {
				return a.orEmpty(a.withSharedAudit(func(s *server.SharedAudit) error {
					if follow {
						flt.Limit = n
						return s.Follow(cmd.Context(), flt, pr.print)
					}
					return tailShared(a, s, flt, n, pr)
				}), "no calls recorded yet")
			}
			err = a.withAudit(func(l *server.AuditReader) error {
				if follow {
					flt.Limit = n
					return l.Follow(cmd.Context(), flt, pr.print)
				}
				// One more than asked says whether -n cut anything.
				if n > 0 {
					flt.Limit = n + 1
				}
				recs, err := l.Query(flt)
				if err != nil {
					return err
				}
				if n > 0 && len(recs) > n {
					recs = recs[len(recs)-n:]
					fmt.Fprintf(a.stderr, "showing the last %d matching records; older ones exist (-n 0 shows all, or narrow with --since, --session, --tool)\n", n)
				}
				return pr.print(recs)
			})
			return a.orEmpty(err, "no calls recorded yet")
		},
	}
	a.registerFilters(&ff, c, false)
	c.Flags().IntVarP(&n, "lines", "n", 20, "how many of the latest records (0: all)")
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new records")
	c.Flags().BoolVar(&asJSON, "json", false, "one JSON object per line")
	return c
}

// recordPrinter prints records as a table for people or JSON lines.
type recordPrinter struct {
	w      io.Writer
	asJSON bool
	color  bool
	header bool
}

func (a *App) recordPrinter(asJSON bool) *recordPrinter {
	color := false
	if f, ok := a.stdout.(*os.File); ok {
		color = term.IsTerminal(int(f.Fd()))
	}
	return &recordPrinter{w: a.stdout, asJSON: asJSON, color: color}
}

func (p *recordPrinter) print(recs []audit.Record) error {
	if p.asJSON {
		return writeJSONLines(p.w, recs)
	}
	err := audit.WriteTable(p.w, recs, "", !p.header, p.color)
	p.header = true
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (a *App) auditShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show SEQ",
		Short: "Show one whole audit record",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if a.store() != "" {
				return a.withSharedAudit(func(s *server.SharedAudit) error {
					r, err := s.Get(args[0])
					if err != nil {
						return err
					}
					enc := json.NewEncoder(a.stdout)
					enc.SetIndent("", "  ")
					return enc.Encode(r)
				})
			}
			seq, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil {
				return &usageError{fmt.Errorf("SEQ %q is not a record number", args[0])}
			}
			return a.withAudit(func(l *server.AuditReader) error {
				r, err := l.Get(seq)
				if err != nil {
					return err
				}
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			})
		},
	}
}

func (a *App) auditVerifyCmd() *cobra.Command {
	var asJSON bool
	var archive string
	var from uint64
	var anchor string
	c := &cobra.Command{
		Use:   "verify [--archive DIR]",
		Short: "Check the audit log's hash chain; exit 1 on any edit, deletion, reordering or truncation",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Verify streams the log through pages it drops at once: a
			// tighter GC keeps the process near its live heap (the log's
			// size does not change it) at little cost in speed.
			debug.SetGCPercent(25)
			var rep audit.Report
			opts := audit.VerifyOptions{From: from, Anchor: anchor}
			if f, ok := a.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) && !asJSON {
				opts.Progress = func(seq, head uint64) {
					fmt.Fprintf(f, "\rverifying: entry %d of %d", seq, head)
				}
				defer fmt.Fprint(f, "\r\x1b[K")
			}
			verify := func(l *server.AuditReader) (err error) {
				rep, err = l.VerifyWith(cmd.Context(), opts)
				return err
			}
			if a.store() != "" {
				return a.verifyShared(cmd, opts, asJSON)
			}
			var err error
			if archive != "" {
				var r *server.AuditReader
				if r, err = server.OpenArchivedAudit(a.dataDir(), archive, a.keySource()); err == nil {
					err = verify(r)
					r.Close()
				}
			} else {
				err = a.withAudit(verify)
			}
			if errors.Is(err, errNoRecords) {
				rep, err = audit.Report{OK: true}, nil // nothing recorded, nothing to doubt
			}
			if err != nil {
				return err
			}
			if asJSON {
				if err := json.NewEncoder(a.stdout).Encode(rep); err != nil {
					return err
				}
			} else if rep.OK {
				fmt.Fprintf(a.stdout, "audit log ok: %d entries, head %d, chain intact\n", rep.Entries, rep.Head)
			} else {
				fmt.Fprintf(a.stdout, "audit log TAMPERED: %d problem(s)\n", len(rep.Problems))
				for _, p := range rep.Problems {
					fmt.Fprintf(a.stdout, "  seq %d: %s: %s\n", p.Seq, p.Kind, p.Detail)
				}
			}
			if !rep.OK {
				return &silentError{code: 1}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	c.Flags().StringVar(&archive, "archive", "", "verify a log `keyhole audit archive` moved into this directory")
	c.Flags().Uint64Var(&from, "from", 0, "check the chain from this seq on (its link to the entry before included)")
	c.Flags().StringVar(&anchor, "anchor", "", "also check against this anchor file (audit.anchor): detects a data dir restored from an older copy")
	return c
}

func (a *App) auditExportCmd() *cobra.Command {
	var ff filterFlags
	var format string
	c := &cobra.Command{
		Use:   "export",
		Short: "Export audit records for a SIEM (jsonl or csv)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "jsonl" && format != "csv" {
				return &usageError{fmt.Errorf("--format %q: want jsonl or csv", format)}
			}
			flt, err := ff.filter()
			if err != nil {
				return err
			}
			if a.store() != "" {
				return a.orEmpty(a.withSharedAudit(func(s *server.SharedAudit) error { return s.Export(a.stdout, format, flt) }), "no calls recorded yet")
			}
			return a.orEmpty(a.withAudit(func(l *server.AuditReader) error { return l.Export(a.stdout, format, flt) }), "no calls recorded yet")
		},
	}
	a.registerFilters(&ff, c, true)
	c.Flags().StringVar(&format, "format", "jsonl", "jsonl or csv")
	return c
}
