package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyhole-dev/keyhole/server"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/server/report"
)

func (a *App) reportCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "report",
		Short: "Answer the post-mortem of an agent incident from the audit log",
		Long: `report answers, from what keyhole recorded, the questions a post-mortem of an
agent incident asks of every credential the agent held: which it held, whether
it needed them, how long they had been active, whether a session-scoped token
would have expired first, whether its scope fit its task, and who else shares
them. It reads the audit log without the data dir's lock, beside a running
broker, and never reads a secret's value.`,
	}
	c.AddCommand(a.reportSessionCmd(), a.reportBlastCmd())
	return c
}

// withReport opens what reports read, with the config at --config: the
// data dir's audit log and what is beside it, or with --store every chain
// of the store's audit (only --replica's when it is given) and what the
// store holds. getReplica names the chain of the records a report looks
// up by seq (an incident).
func (a *App) withReport(getReplica string, fn func(src *report.Sources) error) error {
	cfg, err := config.Load(a.configPath(), config.ToolEnv{})
	if err != nil {
		return err
	}
	return a.withSources(cfg, getReplica, fn)
}

// withSources is withReport with cfg as the config.
func (a *App) withSources(cfg *config.Loaded, getReplica string, fn func(src *report.Sources) error) error {
	if a.store() != "" {
		return a.withSharedAudit(func(s *server.SharedAudit) error {
			src, err := s.ReportSources(cfg, time.Now(), getReplica)
			if err != nil {
				return err
			}
			return fn(src)
		})
	}
	return a.withAudit(func(l *server.AuditReader) error {
		src, err := l.ReportSources(cfg, time.Now())
		if err != nil {
			return err
		}
		return fn(src)
	})
}

// incident parses --incident: SEQ, or REPLICA:SEQ for a record of one
// chain of a store.
func (a *App) incident(s string) (replica string, seq uint64, err error) {
	replica, num, named := strings.Cut(s, ":")
	if !named {
		replica, num = "", s
	}
	seq, perr := strconv.ParseUint(num, 10, 64)
	if perr != nil || seq == 0 || named && replica == "" {
		return "", 0, &usageError{fmt.Errorf("--incident %q is not a record number, SEQ or REPLICA:SEQ (keyhole audit tail shows them)", s)}
	}
	switch {
	case named && a.store() == "":
		return "", 0, &usageError{fmt.Errorf("--incident %q names a record of a store's chain; a data dir has one chain: give its SEQ, or --store", s)}
	case named && a.replicaFlag != "" && replica != a.replicaFlag:
		return "", 0, &usageError{fmt.Errorf("--incident %q is a record of replica %s, but --replica %s reads only that chain", s, replica, a.replicaFlag)}
	case !named && a.store() != "" && a.replicaFlag != "":
		replica = a.replicaFlag
	}
	return replica, seq, nil
}

// outputFlags are the output formats of a report.
type outputFlags struct {
	json, markdown bool
	format         string
}

func (o *outputFlags) register(c *cobra.Command, graphs bool) {
	c.Flags().BoolVar(&o.json, "json", false, "print the report as JSON")
	c.Flags().BoolVar(&o.markdown, "markdown", false, "print the report as Markdown, to paste into an incident document")
	if graphs {
		c.Flags().StringVar(&o.format, "format", "", "draw it instead: mermaid or dot")
	}
	c.MarkFlagsMutuallyExclusive("json", "markdown")
}

func (o *outputFlags) check() error {
	switch o.format {
	case "", "mermaid", "dot":
	default:
		return &usageError{fmt.Errorf("--format %q: want mermaid or dot", o.format)}
	}
	if o.format != "" && (o.json || o.markdown) {
		return &usageError{errors.New("--format draws the report; it goes with neither --json nor --markdown")}
	}
	return nil
}

// window parses a --since duration such as 30d or 12h.
func window(flag, s string) (time.Duration, error) {
	d, err := config.ParseRetention(s)
	if err != nil || d <= 0 {
		return 0, &usageError{fmt.Errorf("--%s %q: want a duration such as 7d, 30d or 12h", flag, s)}
	}
	return d, nil
}

func (a *App) reportSessionCmd() *cobra.Command {
	var out outputFlags
	var incident, at string
	c := &cobra.Command{
		Use:   "session ID [--incident SEQ | --at TIME] [--json | --markdown]",
		Short: "The six post-mortem questions of one session, answered with numbers, and its timeline",
		Example: `  keyhole report session ses_4kq2m7 --markdown > incident.md
  keyhole report session ses_4kq2m7 --incident 1842 --json | jq '.questions[] | {id, answer}'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var o report.SessionOptions
			if incident != "" && at != "" {
				return &usageError{errors.New("--incident and --at both name the incident; give one")}
			}
			if incident != "" {
				var err error
				if o.IncidentReplica, o.Incident, err = a.incident(incident); err != nil {
					return err
				}
			}
			if at != "" {
				t, err := parseWhen(at)
				if err != nil {
					return &usageError{fmt.Errorf("--at: %w", err)}
				}
				o.At = t
			}
			return a.orEmpty(a.withReport(o.IncidentReplica, func(src *report.Sources) error {
				if o.Incident != 0 && o.IncidentReplica == "" {
					// A store's log reads a bare seq only when it has one chain.
					if _, err := src.Log.Get(o.Incident); errors.Is(err, server.ErrAmbiguousSeq) {
						return &usageError{fmt.Errorf("--incident %s: %s, or read one chain with --replica", incident, trimPrefix(err.Error()))}
					}
				}
				rep, err := report.Session(cmd.Context(), src, args[0], o)
				if err != nil {
					return err
				}
				switch {
				case out.json:
					return writeJSON(a.stdout, rep)
				case out.markdown:
					return rep.WriteMarkdown(a.stdout)
				}
				return rep.WriteText(a.stdout)
			}), "no calls recorded yet")
		},
	}
	c.Flags().StringVar(&incident, "incident", "", "the record (SEQ, or REPLICA:SEQ with --store) of the incident; default the session's last call")
	c.Flags().StringVar(&at, "at", "", "the time of the incident (RFC 3339, or a duration ago such as 2h)")
	out.register(c, false)
	return c
}

func (a *App) reportBlastCmd() *cobra.Command {
	var out outputFlags
	var o report.BlastOptions
	var since string
	c := &cobra.Command{
		Use:   "blast-radius [--secret NAME | --scope S] [--since 30d] [--json | --markdown | --format mermaid|dot]",
		Short: "What each credential and scope can reach, who used it, and what to worry about",
		Example: `  keyhole report blast-radius --secret github_token
  keyhole report blast-radius --format mermaid > blast.mmd`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			d, err := window("since", since)
			if err != nil {
				return err
			}
			o.Since = d
			err = a.withReport("", func(src *report.Sources) error {
				rep, err := report.BlastRadius(cmd.Context(), src, o)
				if err != nil {
					return err
				}
				return a.writeBlast(rep, out)
			})
			if errors.Is(err, errNoRecords) {
				// No call recorded: the reach is still worth showing.
				return a.blastWithoutLog(cmd, o, out)
			}
			return err
		},
	}
	c.Flags().StringVar(&o.Secret, "secret", "", "only this secret")
	c.Flags().StringVar(&o.Scope, "scope", "", "only this scope")
	c.Flags().StringVar(&since, "since", "30d", "count use this far back")
	c.MarkFlagsMutuallyExclusive("secret", "scope")
	out.register(c, true)
	return c
}

func (a *App) writeBlast(rep *report.BlastReport, out outputFlags) error {
	switch {
	case out.json:
		return writeJSON(a.stdout, rep)
	case out.markdown:
		return rep.WriteMarkdown(a.stdout)
	case out.format != "":
		return rep.WriteGraph(a.stdout, out.format)
	}
	return rep.WriteText(a.stdout)
}

// blastWithoutLog reports the reach of a data dir or store where no call
// was ever recorded: every grant unused.
func (a *App) blastWithoutLog(cmd *cobra.Command, o report.BlastOptions, out outputFlags) error {
	cfg, err := config.Load(a.configPath(), config.ToolEnv{})
	if err != nil {
		return err
	}
	var src *report.Sources
	if a.store() != "" {
		src, err = server.StoreReportSourcesWithoutLog(cmd.Context(), a.store(), a.keySource(), cfg, time.Now())
	} else {
		src, err = server.ReportSourcesWithoutLog(a.dataDir(), a.keySource(), cfg, time.Now())
	}
	if err != nil {
		return err
	}
	rep, err := report.BlastRadius(cmd.Context(), src, o)
	if err != nil {
		return err
	}
	return a.writeBlast(rep, out)
}

func (a *App) scopeCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "scope",
		Short: "Least privilege from what ran",
	}
	c.AddCommand(a.scopeSuggestCmd())
	return c
}

func (a *App) scopeSuggestCmd() *cobra.Command {
	var o report.SuggestOptions
	var since string
	var asJSON bool
	c := &cobra.Command{
		Use:   "suggest --scope S [--session ID] [--since 7d] [--json]",
		Short: "The smallest grants that would have allowed what a scope's sessions did, as YAML to paste",
		Long: `suggest learns from the calls a scope already allowed (or one session's) the
smallest grants that would have allowed them: methods per path pattern, a
segment made "*" only where two or more identifier-like values were seen,
never "**" on its own initiative. It compares them with the current scope
(grants to narrow, grants never used) and lists the requests the scope
denied apart: they are never turned into grants.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := window("since", since)
			if err != nil {
				return err
			}
			o.Since = d
			return a.orEmpty(a.withReport("", func(src *report.Sources) error {
				s, err := report.Suggest(cmd.Context(), src, o)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(a.stdout, s)
				}
				return s.WriteText(a.stdout)
			}), "no calls recorded yet: nothing to learn from")
		},
	}
	c.Flags().StringVar(&o.Scope, "scope", "", "the scope to suggest for (required)")
	c.Flags().StringVar(&o.Session, "session", "", "learn from this session's calls only")
	c.Flags().StringVar(&since, "since", "7d", "learn from calls this far back")
	c.Flags().BoolVar(&asJSON, "json", false, "print the suggestion as JSON")
	c.MarkFlagRequired("scope")
	return c
}

func (a *App) policyCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "policy",
		Short: "Check a config change against what agents did",
	}
	c.AddCommand(a.policyTestCmd())
	return c
}

func (a *App) policyTestCmd() *cobra.Command {
	var since string
	var asJSON bool
	c := &cobra.Command{
		Use:   "test --config NEW.yaml [--since 30d] [--json]",
		Short: "Replay every recorded call against NEW.yaml's scopes; exit 1 when a decision flips",
		Long: `test replays every recorded call of the window (its canonical request, scope
and tool) against the scopes of NEW.yaml and prints what would flip: denied
calls that would be allowed (the change widens) and allowed calls that would
be denied (what would break). It exits 0 when nothing flips, 1 when something
does (as diff does), and 2 on an error, so a config change can be checked in
CI before it is reloaded.`,
		Example: `  keyhole policy test --config keyhole.new.yaml --since 30d`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if a.configFlag == "" {
				return &usageError{errors.New("--config NEW.yaml is required: the config to replay the log against")}
			}
			d, err := window("since", since)
			if err != nil {
				return err
			}
			var rep *report.ReplayReport
			err = func() error {
				next, err := config.Load(a.configFlag, config.ToolEnv{})
				if err != nil {
					return err
				}
				err = a.withSources(next, "", func(src *report.Sources) (err error) {
					rep, err = report.Replay(cmd.Context(), src, next, report.ReplayOptions{Since: d})
					return err
				})
				if errors.Is(err, errNoRecords) {
					rep = &report.ReplayReport{Config: next.Path, Widened: []report.Flip{}, Narrowed: []report.Flip{}}
					return nil
				}
				return err
			}()
			if err != nil {
				// Exit 2, not 1: 1 means "something flips".
				fmt.Fprintln(a.stderr, "keyhole:", trimPrefix(err.Error()))
				return &silentError{code: 2}
			}
			if asJSON {
				err = writeJSON(a.stdout, rep)
			} else {
				err = rep.WriteText(a.stdout)
			}
			if err != nil {
				fmt.Fprintln(a.stderr, "keyhole:", err)
				return &silentError{code: 2}
			}
			if rep.Flips() > 0 {
				return &silentError{code: 1}
			}
			return nil
		},
	}
	c.Flags().StringVar(&since, "since", "30d", "replay calls this far back")
	c.Flags().BoolVar(&asJSON, "json", false, "print the replay as JSON")
	return c
}

// writeJSON writes v as indented JSON.
func writeJSON(w interface{ Write([]byte) (int, error) }, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
