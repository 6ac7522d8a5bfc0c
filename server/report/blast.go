package report

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/audit"
)

// BlastOptions say what a blast-radius report covers.
type BlastOptions struct {
	// Secret or Scope narrow the report to one secret or one scope.
	Secret, Scope string
	// Since is how far back use is counted; 0 is DefaultWindow.
	Since time.Duration
	// StaleAfter is how long unused makes a secret stale; 0 is 30 days.
	StaleAfter time.Duration
}

// Flags of a secret or a scope in a blast-radius report.
const (
	FlagWriteReach       = "write_reach"
	FlagDeleteReach      = "delete_reach"
	FlagBroadPattern     = "broad_pattern"
	FlagShared           = "shared"
	FlagStale            = "stale"
	FlagNotRotated90     = "not_rotated_90d"
	FlagGrantedNeverUsed = "granted_never_used"
	FlagNotInVault       = "not_in_vault"
)

// BlastReport is the blast radius of secrets and scopes: `keyhole report
// blast-radius --json` prints it as it is.
type BlastReport struct {
	Window  Window         `json:"window"`
	Secrets []SecretRadius `json:"secrets"`
	Scopes  []ScopeRadius  `json:"scopes"`
}

// SecretRadius is what one secret can reach and who used it.
type SecretRadius struct {
	Secret  string    `json:"secret"`
	InVault bool      `json:"in_vault"`
	Version int       `json:"version,omitempty"`
	Created time.Time `json:"created,omitzero"`
	// Rotated is when the current value was set; zero if never rotated.
	Rotated time.Time `json:"rotated,omitzero"`
	// LastUsed is the vault's record of its last use; LastCall the last
	// allowed call in the window.
	LastUsed time.Time `json:"last_used,omitzero"`
	LastCall time.Time `json:"last_call,omitzero"`
	AgeDays  int       `json:"age_days"`
	// UnusedDays is how long it has not been used (-1: never used).
	UnusedDays int       `json:"unused_days"`
	Tools      []ToolRef `json:"tools"`
	// Scopes are the scopes that reach it, with what they grant on its
	// tools and what was used of that in the window.
	Scopes []ScopeLines `json:"scopes"`
	// Sessions and Calls count the allowed use in the window.
	Sessions   int       `json:"sessions"`
	Calls      int       `json:"calls"`
	ScopesUsed []Counted `json:"scopes_used,omitempty"`
	Agents     []Counted `json:"agents,omitempty"`
	Flags      []string  `json:"flags"`
}

// ToolRef is a tool that injects a secret, and where it calls.
type ToolRef struct {
	Tool     string   `json:"tool"`
	Kind     string   `json:"kind"`
	Upstream string   `json:"upstream"`
	Kinds    []string `json:"credential_kinds"`
}

// ScopeLines are the lines one scope grants on a secret's tools.
type ScopeLines struct {
	Scope string    `json:"scope"`
	Lines []LineUse `json:"lines"`
}

// LineUse is one granted line and its use in the window.
type LineUse struct {
	Tool     string `json:"tool"`
	Secret   string `json:"secret"`
	Grant    int    `json:"grant"`
	Line     string `json:"line"`
	Writes   bool   `json:"writes"`
	Deletes  bool   `json:"deletes"`
	AnyDepth bool   `json:"any_depth"`
	Broad    bool   `json:"broad"`
	Calls    int    `json:"calls"`
	Sessions int    `json:"sessions"`
}

// ScopeRadius is what one scope can reach, through which secrets, and who
// used it.
type ScopeRadius struct {
	Scope       string    `json:"scope"`
	Description string    `json:"description,omitempty"`
	TTLSeconds  int64     `json:"ttl_seconds"`
	Secrets     []string  `json:"secrets"`
	Lines       []LineUse `json:"lines"`
	Sessions    int       `json:"sessions"`
	Calls       int       `json:"calls"`
	Denied      int       `json:"denied"`
	Agents      []Counted `json:"agents,omitempty"`
	// SharedSecrets are its secrets another scope reaches too.
	SharedSecrets []string `json:"shared_secrets,omitempty"`
	Flags         []string `json:"flags"`
}

// BlastRadius reports, per secret, what it reaches and who used it, and
// per scope the same the other way round. It reads the vault's metadata,
// never a value.
func BlastRadius(ctx context.Context, src *Sources, o BlastOptions) (*BlastReport, error) {
	if o.Since == 0 {
		o.Since = DefaultWindow
	}
	if o.StaleAfter == 0 {
		o.StaleAfter = 30 * 24 * time.Hour
	}
	w := newWorld(src)
	rep := &BlastReport{Window: Window{Since: src.Now.Add(-o.Since), Until: src.Now}, Secrets: []SecretRadius{}, Scopes: []ScopeRadius{}}
	secrets, scopes, err := w.selection(o)
	if err != nil {
		return nil, err
	}
	// Use in the window, by credential, scope, session and grant.
	type key struct{ secret, scope, grant string }
	calls := map[key]int{}
	sessions := map[key]map[string]bool{}
	secretSessions := map[string]map[string]string{} // secret → session → scope
	scopeSessions := map[string]map[string]bool{}
	scopeDenied := map[string]int{}
	last := map[string]time.Time{}
	clients := map[string]string{}
	filter := audit.UsageFilter{Credentials: secrets, Since: rep.Window.Since}
	err = src.Log.Usage(ctx, filter, func(u audit.Usage) error {
		if u.Client != "" {
			clients[u.Session] = u.Client
		}
		if scopeSessions[u.Scope] == nil {
			scopeSessions[u.Scope] = map[string]bool{}
		}
		scopeSessions[u.Scope][u.Session] = true
		if u.Grant == "" {
			scopeDenied[u.Scope] += u.Calls
			return nil
		}
		k := key{u.Credential, u.Scope, u.Grant}
		calls[k] += u.Calls
		if sessions[k] == nil {
			sessions[k] = map[string]bool{}
		}
		sessions[k][u.Session] = true
		if secretSessions[u.Credential] == nil {
			secretSessions[u.Credential] = map[string]string{}
		}
		secretSessions[u.Credential][u.Session] = u.Scope
		if u.Last.After(last[u.Credential]) {
			last[u.Credential] = u.Last
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	agents := w.agents(clients)
	lineUse := func(scope string, r ruleLineRef) LineUse {
		k := key{w.secretOf(r.rule.Tool), scope, r.rule.Texts[r.at]}
		return LineUse{Tool: r.rule.Tool, Secret: k.secret, Grant: r.rule.Grant, Line: ruleLine(r.rule, r.at), Writes: lineWrites(r.rule, r.at),
			Deletes: lineDeletes(r.rule, r.at), AnyDepth: r.rule.AnyDepth, Broad: r.rule.Broad, Calls: calls[k], Sessions: len(sessions[k])}
	}
	for _, name := range secrets {
		sr := SecretRadius{Secret: name, UnusedDays: -1}
		if m, ok := w.secrets[name]; ok {
			sr.InVault, sr.Version, sr.Created, sr.LastUsed = true, m.Version, m.Created, m.LastUsed
			set := m.Created
			if m.Version > 1 {
				sr.Rotated, set = m.Updated, m.Updated
			}
			sr.AgeDays = days(src.Now.Sub(m.Created))
			if src.Now.Sub(set) > 90*24*time.Hour {
				sr.Flags = append(sr.Flags, FlagNotRotated90)
			}
		} else {
			sr.Flags = append(sr.Flags, FlagNotInVault)
		}
		sr.LastCall = last[name]
		lastUse := sr.LastUsed
		if sr.LastCall.After(lastUse) {
			lastUse = sr.LastCall
		}
		if !lastUse.IsZero() {
			sr.UnusedDays = days(src.Now.Sub(lastUse))
		}
		if lastUse.IsZero() || src.Now.Sub(lastUse) > o.StaleAfter {
			sr.Flags = append(sr.Flags, FlagStale)
		}
		for _, t := range w.bySecret[name] {
			ti := w.tools[t]
			sr.Tools = append(sr.Tools, ToolRef{Tool: t, Kind: ti.Kind, Upstream: ti.Upstream, Kinds: ti.Kinds})
		}
		var write, del, broad, unused bool
		for _, sc := range w.scopes {
			var sl ScopeLines
			for _, r := range w.lines(sc, name) {
				lu := lineUse(sc, r)
				write, del = write || lu.Writes, del || lu.Deletes
				broad = broad || lu.Broad || lu.AnyDepth && r.rule.Kind == "http"
				unused = unused || lu.Calls == 0
				sl.Lines = append(sl.Lines, lu)
			}
			if len(sl.Lines) > 0 {
				sl.Scope = sc
				sr.Scopes = append(sr.Scopes, sl)
			}
		}
		scopesUsed, agentCount := map[string]int{}, map[string]int{}
		for s, sc := range secretSessions[name] {
			scopesUsed[sc]++
			agentCount[agents[s]]++
		}
		for k, n := range calls {
			if k.secret == name {
				sr.Calls += n
			}
		}
		sr.Sessions = len(secretSessions[name])
		sr.ScopesUsed, sr.Agents = countedOf(scopesUsed), countedOf(agentCount)
		sr.Flags = append(sr.Flags, flags(write, del, broad, len(sr.Scopes) > 1, unused)...)
		slices.Sort(sr.Flags)
		rep.Secrets = append(rep.Secrets, sr)
	}
	for _, sc := range scopes {
		compiled, _ := w.scope(sc)
		rad := ScopeRadius{Scope: sc, Description: compiled.Description(), TTLSeconds: int64(compiled.TTL() / time.Second),
			Secrets: w.secretsOf(sc), Sessions: len(scopeSessions[sc]), Denied: scopeDenied[sc]}
		var write, del, broad, unused bool
		for _, secret := range rad.Secrets {
			for _, r := range w.lines(sc, secret) {
				lu := lineUse(sc, r)
				write, del = write || lu.Writes, del || lu.Deletes
				broad = broad || lu.Broad || lu.AnyDepth && r.rule.Kind == "http"
				unused = unused || lu.Calls == 0
				rad.Calls += lu.Calls
				rad.Lines = append(rad.Lines, lu)
			}
			if len(w.scopesReaching(secret)) > 1 {
				rad.SharedSecrets = append(rad.SharedSecrets, secret)
			}
		}
		agentCount := map[string]int{}
		for s := range scopeSessions[sc] {
			agentCount[agents[s]]++
		}
		rad.Agents = countedOf(agentCount)
		rad.Flags = flags(write, del, broad, len(rad.SharedSecrets) > 0, unused)
		if rad.Sessions == 0 {
			rad.Flags = append(rad.Flags, FlagStale)
		}
		slices.Sort(rad.Flags)
		rep.Scopes = append(rep.Scopes, rad)
	}
	return rep, nil
}

func flags(write, del, broad, shared, unused bool) []string {
	var out []string
	for _, f := range []struct {
		on   bool
		flag string
	}{{write, FlagWriteReach}, {del, FlagDeleteReach}, {broad, FlagBroadPattern}, {shared, FlagShared}, {unused, FlagGrantedNeverUsed}} {
		if f.on {
			out = append(out, f.flag)
		}
	}
	return out
}

// selection returns the secrets and scopes a report covers.
func (w *world) selection(o BlastOptions) (secrets, scopes []string, err error) {
	all := map[string]bool{}
	for s := range w.bySecret {
		all[s] = true
	}
	for s := range w.secrets {
		all[s] = true
	}
	switch {
	case o.Secret != "":
		if !all[o.Secret] {
			return nil, nil, fmt.Errorf("report: no secret %q in the config or the vault (secrets: %s)", o.Secret, joinAnd(slices.Sorted(maps.Keys(all))))
		}
		secrets = []string{o.Secret}
		for _, sr := range w.scopesReaching(o.Secret) {
			scopes = append(scopes, sr.Scope)
		}
	case o.Scope != "":
		if _, ok := w.scope(o.Scope); !ok {
			return nil, nil, fmt.Errorf("report: no scope %q in the config (scopes: %s)", o.Scope, joinAnd(w.scopes))
		}
		scopes = []string{o.Scope}
		secrets = w.secretsOf(o.Scope)
	default:
		secrets = slices.Sorted(maps.Keys(all))
		scopes = w.scopes
	}
	return secrets, scopes, nil
}

// ruleLineRef is one line of a rule.
type ruleLineRef struct {
	rule policy.Rule
	at   int
}

// lines returns the lines a scope grants on the tools of secret.
func (w *world) lines(scope, secret string) []ruleLineRef {
	var out []ruleLineRef
	for _, r := range w.rules[scope] {
		if w.secretOf(r.Tool) != secret {
			continue
		}
		for j := range r.Texts {
			out = append(out, ruleLineRef{r, j})
		}
	}
	return out
}

// agents names the agent of each session from its record's label or its
// client.
func (w *world) agents(clients map[string]string) map[string]string {
	out := make(map[string]string, len(clients))
	for s, client := range clients {
		out[s] = agentOf(w.sessions[s].Label, client)
	}
	return out
}
