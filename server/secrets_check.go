package server

import (
	"maps"
	"slices"

	"github.com/keyhole-dev/keyhole/server/admin"
	"github.com/keyhole-dev/keyhole/server/config"
)

// MissingSecret is a secret a config's tools use that the vault lacks.
type MissingSecret struct {
	Secret string   `json:"secret"`
	Tools  []string `json:"tools"`
}

// MissingSecrets lists, by secret name, the secrets cfg's tools inject
// that are not among have: every call to those tools would fail.
func MissingSecrets(cfg *config.Loaded, have []admin.SecretMeta) []MissingSecret {
	stored := map[string]bool{}
	for _, m := range have {
		stored[m.Name] = true
	}
	bySecret := map[string][]string{}
	for _, name := range slices.Sorted(maps.Keys(cfg.Tools)) {
		if s := cfg.Tools[name].SecretName(); s != "" && !stored[s] {
			bySecret[s] = append(bySecret[s], name)
		}
	}
	var out []MissingSecret
	for _, s := range slices.Sorted(maps.Keys(bySecret)) {
		out = append(out, MissingSecret{Secret: s, Tools: bySecret[s]})
	}
	return out
}

// ToolsUsingSecret lists the tools of cfg that inject the secret name.
func ToolsUsingSecret(cfg *config.Loaded, name string) []string {
	var out []string
	for _, t := range slices.Sorted(maps.Keys(cfg.Tools)) {
		if cfg.Tools[t].SecretName() == name {
			out = append(out, t)
		}
	}
	return out
}
