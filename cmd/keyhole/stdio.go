package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/keyhole-dev/keyhole/server"
	"github.com/keyhole-dev/keyhole/server/relay"
)

func (a *App) stdioCmd() *cobra.Command {
	var scope string
	var standalone bool
	c := &cobra.Command{
		Use:   "stdio --scope S",
		Short: "Serve one MCP client over stdio as one session of scope S",
		Long: `stdio is what an MCP client (Claude Code, Claude Desktop, Cursor, VS Code)
launches. The process is one session of the scope: it starts now, ends when the
client disconnects, and expires at the scope's ttl. stdout carries only the MCP
protocol; logs go to stderr.

By default it joins the broker that owns the data dir over its unix socket,
starting one in the background (keyhole serve --idle-exit 10m, logging to
broker.log in the data dir) when none runs, so several clients share one vault
and one audit log. The session runs the scope of the config this command
resolves (--config, KEYHOLE_CONFIG, ./keyhole.yaml, …), whichever config the
broker started with. A background broker of an older keyhole is replaced when
it serves no other client; otherwise a warning names both versions.
--standalone serves in-process instead (one client only; the only mode on
Windows).`,
		Example: `  claude mcp add keyhole -- keyhole stdio --scope triage`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if standalone {
				rt, err := server.Open(a.runtimeOptions())
				if err != nil {
					return err
				}
				defer rt.Close()
				return rt.Broker.ServeStdio(cmd.Context(), scope, a.stdin, a.stdout)
			}
			if err := server.SharedBrokerSupported(); err != nil {
				return err
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			cfg, err := server.AbsConfig(a.configPath())
			if err != nil {
				return err
			}
			start := relay.StartOptions{DataDir: a.dataDir(), ConfigPath: cfg, Exe: exe, Logger: a.log, Store: a.store(), Replica: a.replica()}
			if err := relay.EnsureBroker(cmd.Context(), start); err != nil {
				return err
			}
			return relay.Serve(cmd.Context(), a.dataDir(), cfg, scope, a.stdin, a.stdout, a.log)
		},
	}
	c.Flags().StringVar(&scope, "scope", "", "the scope this session runs under (required)")
	c.Flags().BoolVar(&standalone, "standalone", false, "serve in-process instead of through the shared broker")
	c.MarkFlagRequired("scope")
	c.RegisterFlagCompletionFunc("scope", a.completeScopes)
	return c
}
