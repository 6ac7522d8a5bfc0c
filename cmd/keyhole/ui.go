package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyhole-dev/keyhole/server/admin"
)

func (a *App) uiCmd() *cobra.Command {
	var open bool
	c := &cobra.Command{
		Use:   "ui [--open]",
		Short: "Print a one-time login link to the browser console (keyhole serve --ui)",
		Long: `ui asks the running broker for a login link to its browser console: it works
once, for two minutes, and signs the browser in for a console session that
ends after 30 minutes without use, or at sign-out. Only the broker's own OS
user can ask (the link comes through the broker's socket). The broker must
serve the console: keyhole serve --ui 127.0.0.1:7778.`,
		Example: `  keyhole serve --ui 127.0.0.1:7778 &
  keyhole ui --open`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ad, err := admin.Dial(a.dataDir())
			if err != nil {
				return fmt.Errorf("%w for %s: the console is served by the broker (keyhole serve --ui 127.0.0.1:7778)", admin.ErrNoBroker, a.dataDir())
			}
			defer ad.Close()
			link, err := ad.ConsoleLogin()
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, link.URL)
			fmt.Fprintf(a.stderr, "this link signs in once, until %s\n", link.Expires.Local().Format(time.TimeOnly))
			if open {
				if err := openBrowser(link.URL); err != nil {
					fmt.Fprintf(a.stderr, "could not open a browser (%v); open the link above\n", err)
				}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&open, "open", false, "open the link in the desktop browser (xdg-open, open)")
	return c
}
