package main

import (
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/keyhole-dev/keyhole/server/demo"
)

func (a *App) demoCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Show keyhole end to end on an embedded API: no config, no network, nothing left behind",
		Long: `demo starts an issue-tracker API on loopback, a temporary vault holding a fake
token and a triage scope, and drives a scripted agent through keyhole's real
MCP path: allowed and denied calls, a traversal attempt, and an endpoint that
echoes its key back, scrubbed. It prints the transcript, the audit table and
the audit log's verification, then removes everything it made.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			color := false
			if f, ok := a.stdout.(*os.File); ok {
				color = term.IsTerminal(int(f.Fd())) && a.getenv("NO_COLOR") == ""
			}
			return demo.Run(cmd.Context(), a.stdout, demo.Options{Color: color})
		},
	}
}
