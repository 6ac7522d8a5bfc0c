package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/keyhole-dev/keyhole/server"
	"github.com/keyhole-dev/keyhole/server/access"
	"github.com/keyhole-dev/keyhole/server/admin"
)

func (a *App) accessCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "access",
		Short: "Answer access requests: calls that wait for your approval",
		Long: `A call that needs a person's approval — through a grant with approve: true, or
outside a scope with on_deny: request — is held by the broker as an access
request (acr_…) holding exactly the request it would send. Read it with
access show, then approve it (used once, by this exact request) or deny it.
Requests live in the running broker; these commands talk to it over its
socket.`,
	}
	c.AddCommand(a.accessListCmd(), a.accessShowCmd(), a.accessApproveCmd(), a.accessDenyCmd(), a.accessWatchCmd())
	return c
}

// withBroker runs fn against the running broker: access requests exist
// only there. With a shared store (--store) and no broker here, fn runs
// on the store: it lists every broker's requests, and an answer goes to
// the broker that holds the request.
func (a *App) withBroker(fn func(c admin.AccessOps) error) error {
	c, err := admin.Dial(a.dataDir())
	if err != nil {
		if a.store() != "" {
			ad, err := server.OpenAdmin(a.runtimeOptions())
			if err != nil {
				return err
			}
			defer ad.Close()
			ops, ok := ad.(admin.AccessOps)
			if !ok {
				return fmt.Errorf("%w for %s", admin.ErrNoBroker, a.dataDir())
			}
			return fn(ops)
		}
		return fmt.Errorf("%w for %s: access requests are held by the broker (keyhole serve, or the one keyhole stdio starts), so none is open", admin.ErrNoBroker, a.dataDir())
	}
	defer c.Close()
	return fn(c)
}

func (a *App) accessListCmd() *cobra.Command {
	var all, asJSON bool
	c := &cobra.Command{
		Use:   "list [--all] [--json]",
		Short: "List open and approved access requests",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withBroker(func(c admin.AccessOps) error {
				list, err := c.AccessList(all)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSONLines(a.stdout, list)
				}
				if len(list) == 0 {
					fmt.Fprintln(a.stdout, "no open access requests (--all shows answered and expired ones)")
					return nil
				}
				return access.WriteTable(a.stdout, list, time.Now())
			})
		},
	}
	c.Flags().BoolVar(&all, "all", false, "include used, denied and expired requests of the last day")
	c.Flags().BoolVar(&asJSON, "json", false, "one JSON object per request")
	return c
}

func (a *App) accessShowCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "show ID",
		Short: "Show the whole request: exactly what it would send, and why it waits",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withBroker(func(c admin.AccessOps) error {
				r, err := c.AccessShow(args[0])
				if err != nil {
					return err
				}
				if asJSON {
					enc := json.NewEncoder(a.stdout)
					enc.SetIndent("", "  ")
					return enc.Encode(r)
				}
				return access.WriteText(a.stdout, &r, time.Now())
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the request as JSON")
	return c
}

func (a *App) accessApproveCmd() *cobra.Command {
	var forSession, yes bool
	var note string
	c := &cobra.Command{
		Use:   "approve ID [--for-session] [--note TEXT]",
		Short: "Approve one access request: its exact request, once",
		Long: `approve lets the held call proceed (or its exact repeat, within the scope's
approval ttl), once. Another body, path, query or header needs its own
approval. --for-session also grants that method on that exact path (no
pattern) to the session for the rest of its life. On a terminal the request
is shown and must be confirmed (--yes skips that).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withBroker(func(c admin.AccessOps) error {
				if err := a.confirm(c, args[0], "approve", yes); err != nil {
					return err
				}
				r, err := c.AccessApprove(args[0], forSession, note)
				if err != nil {
					return err
				}
				how := "once"
				if forSession {
					how = "for session " + access.Printable(r.Session) + " (" + access.Printable(r.Exact.String()) + ")"
				}
				fmt.Fprintf(a.stdout, "approved %s %s, usable until %s: %s\n", r.ID, how, r.Expires.Local().Format(time.TimeOnly), access.Printable(r.Summary()))
				return nil
			})
		},
	}
	c.Flags().BoolVar(&forSession, "for-session", false, "also grant this exact method and path to the session for the rest of its life")
	c.Flags().StringVar(&note, "note", "", "why (kept in the audit log, shown to the agent)")
	c.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation on a terminal")
	return c
}

func (a *App) accessDenyCmd() *cobra.Command {
	var note string
	c := &cobra.Command{
		Use:   "deny ID [--note TEXT]",
		Short: "Deny one access request; the held call is told so",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withBroker(func(c admin.AccessOps) error {
				r, err := c.AccessDeny(args[0], note)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "denied %s: %s\n", r.ID, access.Printable(r.Summary()))
				return nil
			})
		},
	}
	c.Flags().StringVar(&note, "note", "", "why (kept in the audit log, shown to the agent)")
	return c
}

func (a *App) accessWatchCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "watch [--json]",
		Short: "Print access requests and their answers as they happen",
		Long: `watch prints the requests open now, then every new request, approval,
denial, expiry and use as it happens, for a terminal beside the editor. It
runs until interrupted or the broker stops.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withBroker(func(c admin.AccessOps) error {
				enc := json.NewEncoder(a.stdout)
				print := func(ev admin.AccessEvent) error {
					if asJSON {
						return enc.Encode(ev)
					}
					return access.WriteEvent(a.stdout, ev)
				}
				open, err := c.AccessList(false)
				if err != nil {
					return err
				}
				seen := map[string]bool{}
				for _, r := range open {
					seen[r.ID] = true
					if err := print(admin.AccessEvent{Type: access.EventRequest, Time: r.Created, Request: r}); err != nil {
						return err
					}
				}
				if !asJSON {
					fmt.Fprintln(a.stderr, "watching access requests (Ctrl-C to stop)")
				}
				return c.AccessWatch(cmd.Context(), func(ev admin.AccessEvent) error {
					if ev.Type == access.EventRequest && seen[ev.Request.ID] {
						return nil
					}
					return print(ev)
				})
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "one JSON event per line")
	return c
}

// confirm shows the request and asks the person at a terminal to confirm
// verb; without a terminal (a script), or with --yes, it does not ask.
func (a *App) confirm(c admin.AccessOps, id, verb string, yes bool) error {
	f, ok := a.stdin.(*os.File)
	if yes || !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	r, err := c.AccessShow(id)
	if err != nil {
		return err
	}
	if err := access.WriteText(a.stderr, &r, time.Now()); err != nil {
		return err
	}
	fmt.Fprintf(a.stderr, "%s %s? [y/N] ", verb, id)
	line, _ := bufio.NewReader(f).ReadString('\n')
	if ans := strings.ToLower(strings.TrimSpace(line)); ans != "y" && ans != "yes" {
		return errors.New("keyhole: not confirmed; nothing was " + verb + "d")
	}
	return nil
}
