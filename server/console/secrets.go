package console

import (
	"net/http"
	"slices"
	"time"

	"github.com/keyhole-dev/keyhole/vault"
)

// Secrets: names, versions, age, last use and what uses them. The vault
// gives the console metadata only; no value is ever read here.

type secretRow struct {
	vault.Meta
	Age time.Duration
	// Tools name the secret in the config; Scopes grant those tools.
	Tools  []string
	Scopes []string
	Flags  []string
}

type secretsData struct {
	Secrets []secretRow
	Err     string
}

func (c *Console) secrets(w http.ResponseWriter, r *http.Request, s consoleSession) {
	rows, err := c.secretRows()
	d := secretsData{Secrets: rows}
	if err != nil {
		d.Err = err.Error()
	}
	c.render(w, http.StatusOK, s, "secrets", "Secrets", "secrets", d)
}

// secretRows lists the vault's secrets with what uses them and what
// needs attention.
func (c *Console) secretRows() ([]secretRow, error) {
	metas, err := c.o.Secrets()
	if err != nil {
		return nil, err
	}
	cfg := c.o.Config()
	now := c.o.Now()
	var rows []secretRow
	for _, m := range metas {
		row := secretRow{Meta: m, Age: now.Sub(m.Created), Flags: secretFlags(m, now)}
		for name, t := range cfg.Tools {
			if t.SecretName() == m.Name {
				row.Tools = append(row.Tools, name)
			}
		}
		slices.Sort(row.Tools)
		for _, sc := range cfg.Policy.ScopeNames() {
			scope, _ := cfg.Policy.Scope(sc)
			for _, t := range row.Tools {
				if scope.HasTool(t) {
					row.Scopes = append(row.Scopes, sc)
					break
				}
			}
		}
		if m.Status != "" {
			row.Flags = append([]string{m.Status}, row.Flags...)
		}
		rows = append(rows, row)
	}
	slices.SortFunc(rows, func(a, b secretRow) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return rows, nil
}

// Thresholds of the secrets' flags.
const (
	rotateAfter = 90 * 24 * time.Hour
	staleAfter  = 30 * 24 * time.Hour
)

// secretFlags says what needs attention in a secret's metadata: a value
// older than rotateAfter, or no use for staleAfter.
func secretFlags(m vault.Meta, now time.Time) []string {
	var out []string
	if now.Sub(m.Updated) >= rotateAfter {
		out = append(out, "not rotated in "+fmtDuration(now.Sub(m.Updated)))
	}
	switch {
	case m.LastUsed.IsZero() && now.Sub(m.Created) >= staleAfter:
		out = append(out, "never used in "+fmtDuration(now.Sub(m.Created)))
	case !m.LastUsed.IsZero() && now.Sub(m.LastUsed) >= staleAfter:
		out = append(out, "unused for "+fmtDuration(now.Sub(m.LastUsed)))
	}
	return out
}
