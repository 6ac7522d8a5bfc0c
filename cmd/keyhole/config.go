package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

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
	var asJSON bool
	c := &cobra.Command{
		Use:   "check",
		Short: "Validate keyhole.yaml and summarize what each scope allows",
		Args:  cobra.NoArgs,
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
			if asJSON {
				return writeJSONLines(a.stdout, sums)
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
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "one JSON object per scope")
	return c
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
