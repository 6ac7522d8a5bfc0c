package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyhole-dev/keyhole/server"
	"github.com/keyhole-dev/keyhole/server/admin"
	"github.com/keyhole-dev/keyhole/server/terminal"
)

func (a *App) sessionCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "session",
		Short: "Create, list and revoke phantom-token sessions for remote agents",
	}
	c.AddCommand(a.sessionNewCmd(), a.sessionListCmd(), a.sessionShowCmd(), a.sessionRevokeCmd())
	return c
}

func (a *App) sessionNewCmd() *cobra.Command {
	var scope, label string
	var ttl time.Duration
	var asJSON bool
	c := &cobra.Command{
		Use:   "new --scope S [--ttl D] [--label L]",
		Short: "Start a session and print its phantom token (once)",
		Long: `new starts a session of scope S and prints its phantom token, a bearer token
(khs_…) that names the session, is useless outside keyhole and dies with the
session. It is shown once and stored only as a hash. Give it to the agent as
Authorization: Bearer <token> for keyhole serve --http.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := server.AbsConfig(a.configPath())
			if err != nil {
				return err
			}
			return a.withAdmin(func(ad admin.Admin) error {
				info, tok, err := ad.SessionNew(admin.SessionRequest{Scope: scope, TTL: ttl, Label: label, Config: cfg})
				if err != nil {
					return err
				}
				if info.Config != cfg {
					ad.SessionRevoke(info.ID, "", false)
					return fmt.Errorf("keyhole: the running broker cannot run the config %s (it would run %q instead); it is an older keyhole: run `keyhole stop` and try again", cfg, info.Config)
				}
				if asJSON {
					return json.NewEncoder(a.stdout).Encode(struct {
						admin.SessionInfo
						Token string `json:"token"`
					}{info, tok})
				}
				fmt.Fprintf(a.stderr, "session %s (scope %s of %s) expires %s; the token is shown once:\n", info.ID, info.Scope, info.Config, info.Expires.Local().Format(time.RFC3339))
				fmt.Fprintln(a.stdout, tok)
				return nil
			})
		},
	}
	c.Flags().StringVar(&scope, "scope", "", "scope of the session (required)")
	durationVar(c, &ttl, "ttl", 0, "session lifetime, e.g. 30m or 1d (default and maximum: the scope's ttl)")
	c.Flags().StringVar(&label, "label", "", "a note for session list (e.g. the agent or run)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the session and token as JSON")
	c.MarkFlagRequired("scope")
	c.RegisterFlagCompletionFunc("scope", a.completeScopes)
	return c
}

func (a *App) sessionListCmd() *cobra.Command {
	var all, asJSON bool
	c := &cobra.Command{
		Use:   "list [--all]",
		Short: "List sessions (never their tokens)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withAdmin(func(ad admin.Admin) error {
				list, err := ad.SessionList(all)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSONLines(a.stdout, list)
				}
				if len(list) == 0 {
					fmt.Fprintln(a.stdout, "no active sessions (--all shows ended ones)")
					return nil
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tSCOPE\tCONFIG\tLABEL\tCREATED\tEXPIRES\tSTATE\tCALLS\tLAST CALL")
				for _, s := range list {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", terminal.Escape(s.ID), terminal.Escape(s.Scope), terminal.Escape(shortConfig(s.Config)), orDash(terminal.Escape(s.Label)),
						s.Created.Local().Format("01-02 15:04"), s.Expires.Local().Format("01-02 15:04"), s.State, s.Calls, ago(s.LastCall))
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().BoolVar(&all, "all", false, "include expired, revoked and ended sessions")
	c.Flags().BoolVar(&asJSON, "json", false, "one JSON object per session")
	return c
}

func (a *App) sessionShowCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:               "show ID",
		Short:             "Show one session (never its token)",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeSessions,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withAdmin(func(ad admin.Admin) error {
				info, err := ad.SessionShow(args[0])
				if err != nil {
					return err
				}
				if asJSON {
					enc := json.NewEncoder(a.stdout)
					enc.SetIndent("", "  ")
					return enc.Encode(info)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, terminal.Escape(v)) }
				row("ID", info.ID)
				row("SCOPE", info.Scope)
				row("LABEL", orDash(info.Label))
				row("STATE", string(info.State))
				row("CREATED", info.Created.Local().Format(time.RFC3339))
				row("EXPIRES", info.Expires.Local().Format(time.RFC3339))
				row("CALLS", fmt.Sprint(info.Calls))
				row("DENIALS", fmt.Sprint(info.Denials))
				row("LAST CALL", ago(info.LastCall))
				for _, g := range info.Grants {
					row("GRANTED", g.String()+" (access request "+g.Request+")")
				}
				if why := info.DeadReason(); why != "" {
					row("WHY", why)
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the session as JSON")
	return c
}

func (a *App) sessionRevokeCmd() *cobra.Command {
	var scope string
	var all bool
	c := &cobra.Command{
		Use:               "revoke ID | --scope S | --all",
		Short:             "Revoke sessions; their next call gets nothing",
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: a.completeSessions,
		RunE: func(cmd *cobra.Command, args []string) error {
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			n := 0
			for _, set := range []bool{id != "", scope != "", all} {
				if set {
					n++
				}
			}
			if n != 1 {
				return &usageError{errors.New("give exactly one of ID, --scope S or --all")}
			}
			return a.withAdmin(func(ad admin.Admin) error {
				ids, err := ad.SessionRevoke(id, scope, all)
				if err != nil {
					return err
				}
				for _, id := range ids {
					fmt.Fprintf(a.stdout, "revoked %s\n", id)
				}
				if len(ids) == 0 {
					fmt.Fprintln(a.stdout, "no active session matched")
				}
				return nil
			})
		},
	}
	c.Flags().StringVar(&scope, "scope", "", "revoke every active session of this scope")
	c.Flags().BoolVar(&all, "all", false, "revoke every active session")
	c.RegisterFlagCompletionFunc("scope", a.completeScopes)
	return c
}
