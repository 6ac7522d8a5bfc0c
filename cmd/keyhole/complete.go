package main

import (
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keyhole-dev/keyhole/server"
	"github.com/keyhole-dev/keyhole/server/admin"
	"github.com/keyhole-dev/keyhole/server/config"
)

// Shell completion of the names an operator types: scopes (from
// keyhole.yaml), sessions and secrets (from the broker, or the data dir
// when none runs). Completion never prompts: without a key it offers
// nothing rather than asking for a passphrase.

func (a *App) completeScopes(cmd *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
	cfg, err := config.Load(a.configPath(), config.ToolEnv{})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return withPrefix(cfg.Policy.ScopeNames(), prefix), cobra.ShellCompDirectiveNoFileComp
}

func (a *App) completeSessions(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	a.quietAdmin(func(ad admin.Admin) {
		list, err := ad.SessionList(false)
		if err != nil {
			return
		}
		for _, s := range list {
			desc := s.Scope
			if s.Label != "" {
				desc += ", " + s.Label
			}
			names = append(names, s.ID+"\t"+desc)
		}
	})
	return withPrefix(names, prefix), cobra.ShellCompDirectiveNoFileComp
}

func (a *App) completeSecrets(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	a.quietAdmin(func(ad admin.Admin) {
		metas, err := ad.SecretList()
		if err != nil {
			return
		}
		for _, m := range metas {
			names = append(names, m.Name)
		}
	})
	return withPrefix(names, prefix), cobra.ShellCompDirectiveNoFileComp
}

// quietAdmin runs fn against the data dir without prompting; if it cannot
// be opened, fn does not run.
func (a *App) quietAdmin(fn func(admin.Admin)) {
	opts := a.runtimeOptions()
	opts.Keys = a.keySourceNoPrompt()
	if _, err := os.Stat(opts.DataDir); err != nil {
		return // nothing to complete, and nothing to create
	}
	ad, err := server.OpenAdmin(opts)
	if err != nil {
		return
	}
	defer ad.Close()
	fn(ad)
}

func withPrefix(names []string, prefix string) []string {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}
