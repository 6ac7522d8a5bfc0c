package main

import (
	"github.com/spf13/cobra"

	"github.com/keyhole-dev/keyhole/server"
)

func (a *App) stdioCmd() *cobra.Command {
	var scope string
	c := &cobra.Command{
		Use:   "stdio --scope S",
		Short: "Serve one MCP client over stdio as one session of scope S",
		Long: `stdio is what an MCP client (Claude Code, Claude Desktop, Cursor, VS Code)
launches. The process is one session of the scope: it starts now, ends when the
client disconnects, and expires at the scope's ttl. stdout carries only the MCP
protocol; logs go to stderr.`,
		Example: `  claude mcp add keyhole -- keyhole stdio --scope triage`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rt, err := server.Open(server.RuntimeOptions{
				DataDir:    a.dataDir(),
				ConfigPath: a.configPath(),
				Keys:       a.keySource(),
				Logger:     a.log,
			})
			if err != nil {
				return err
			}
			defer rt.Close()
			return rt.Broker.ServeStdio(cmd.Context(), scope, a.stdin, a.stdout)
		},
	}
	c.Flags().StringVar(&scope, "scope", "", "the scope this session runs under (required)")
	c.MarkFlagRequired("scope")
	return c
}
