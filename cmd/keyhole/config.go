package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/keyhole-dev/keyhole/server"
	"github.com/keyhole-dev/keyhole/server/config"

	"github.com/spf13/cobra"
)

func (a *App) configCmd() *cobra.Command {
	c := &cobra.Command{Use: "config", Short: "Check keyhole.yaml or print its JSON Schema"}
	c.AddCommand(a.configCheckCmd(), a.configSchemaCmd())
	return c
}

// scopeSummary is one line of `config check` per scope.
type scopeSummary struct {
	Scope    string `json:"scope"`
	TTL      string `json:"ttl"`
	MaxCalls int    `json:"max_calls,omitempty"`
	Rate     string `json:"rate,omitempty"`
	// Requests says a call the scope denies becomes an access request.
	Requests bool                `json:"on_deny_request,omitempty"`
	Tools    map[string][]string `json:"tools"`
}

func summarize(cfg *config.Loaded) []scopeSummary {
	var out []scopeSummary
	for _, name := range cfg.Policy.ScopeNames() {
		sc, _ := cfg.Policy.Scope(name)
		raw := cfg.Config.Scopes[name]
		s := scopeSummary{Scope: name, TTL: sc.TTL().String(), MaxCalls: raw.MaxCalls, Rate: raw.Rate, Requests: sc.Approval().OnDenyRequest, Tools: map[string][]string{}}
		for _, t := range sc.Tools() {
			s.Tools[t] = sc.Summary(t)
		}
		out = append(out, s)
	}
	return out
}

func (a *App) configCheckCmd() *cobra.Command {
	var asJSON, strict bool
	c := &cobra.Command{
		Use:   "check",
		Short: "Validate keyhole.yaml and summarize what each scope allows",
		Long: `check validates keyhole.yaml and prints what each scope allows. It also
warns about every tool whose secret is not in the vault (every call to it
would fail), naming the command that stores it; with --strict a warning
makes it exit 1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := a.configPath()
			cfg, err := config.Load(path, config.ToolEnv{})
			if err != nil {
				if ce, ok := err.(*config.Error); ok {
					fmt.Fprintln(a.stderr, ce.Error())
					fmt.Fprintf(a.stderr, "%s: %d problem(s)\n", path, len(ce.Problems))
					return &silentError{code: 1}
				}
				return err
			}
			sums := summarize(cfg)
			warnings := a.secretWarnings(cfg)
			defer func() {
				for _, w := range warnings {
					fmt.Fprintln(a.stderr, "warning: "+w)
				}
			}()
			if asJSON {
				if err := writeJSONLines(a.stdout, sums); err != nil {
					return err
				}
				return a.strictly(strict, warnings)
			}
			fmt.Fprintf(a.stdout, "%s: ok (%d tools, %d scopes)\n", path, len(cfg.Tools), len(sums))
			for _, s := range sums {
				var parts []string
				names := make([]string, 0, len(s.Tools))
				for t := range s.Tools {
					names = append(names, t)
				}
				sort.Strings(names)
				for _, t := range names {
					parts = append(parts, fmt.Sprintf("%s: %s", t, strings.Join(s.Tools[t], ", ")))
				}
				limits := "ttl " + s.TTL
				if s.MaxCalls > 0 {
					limits += fmt.Sprintf(", max %d calls", s.MaxCalls)
				}
				if s.Rate != "" {
					limits += ", rate " + s.Rate
				}
				if s.Requests {
					limits += ", anything else becomes an access request"
				}
				fmt.Fprintf(a.stdout, "  %s (%s): %s\n", s.Scope, limits, strings.Join(parts, "; "))
			}
			return a.strictly(strict, warnings)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "one JSON object per scope")
	c.Flags().BoolVar(&strict, "strict", false, "exit 1 on any warning (a tool's secret missing from the vault)")
	return c
}

// strictly ends config check with exit 1 when --strict and there were
// warnings (printed on the way out).
func (a *App) strictly(strict bool, warnings []string) error {
	if strict && len(warnings) > 0 {
		return &silentError{code: 1}
	}
	return nil
}

// secretWarnings names every tool whose secret the vault lacks, or says
// why the vault could not be read. It never prompts for a passphrase.
func (a *App) secretWarnings(cfg *config.Loaded) []string {
	opts := a.runtimeOptions()
	opts.Keys = a.keySourceNoPrompt()
	if _, err := os.Stat(opts.DataDir); err != nil {
		return []string{fmt.Sprintf("no data dir at %s, so the tools' secrets could not be checked: run `keyhole init`", opts.DataDir)}
	}
	ad, err := server.OpenAdmin(opts)
	if err != nil {
		return []string{"could not check that the tools' secrets are in the vault: " + trimPrefix(err.Error())}
	}
	defer ad.Close()
	have, err := ad.SecretList()
	if err != nil {
		return []string{"could not check that the tools' secrets are in the vault: " + trimPrefix(err.Error())}
	}
	var out []string
	for _, m := range server.MissingSecrets(cfg, have) {
		out = append(out, fmt.Sprintf("secret %s, used by %s, is not in the vault; every call to %s fails until you run: printf %%s \"$VALUE\" | keyhole secret set %s",
			m.Secret, plural("tool", m.Tools), strings.Join(m.Tools, ", "), m.Secret))
	}
	return out
}

func plural(word string, names []string) string {
	if len(names) == 1 {
		return word + " " + names[0]
	}
	return word + "s " + strings.Join(names, ", ")
}

func (a *App) configSchemaCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of keyhole.yaml (for editors via yaml-language-server)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var v any
			if err := json.Unmarshal(config.Schema, &v); err != nil {
				return err
			}
			enc := json.NewEncoder(a.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(v)
		},
	}
}
