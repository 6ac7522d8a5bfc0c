// Package report answers the post-mortem of an agent incident from what
// keyhole recorded: the six questions of one session (Session), the blast
// radius of every credential and scope (BlastRadius), the smallest scope
// that would have allowed what a scope's sessions did (Suggest), and what
// a new config would have decided about every recorded call (Replay).
//
// Reports are read-only computations over the audit log's queries, the
// config and the vault's metadata. They never see a secret's value: the
// vault reaches them as []vault.Meta. They write nothing.
//
// Where the numbers come from: a session's own calls, the timeline and
// every request a report names are read from the log's entries. Counts
// across sessions (how many sessions of a scope, or with a credential, in
// a window) come from the log's index (audit.Log.Usage), which checks each
// group's first entry against the index; `keyhole audit verify` checks the
// entries, not the index.
package report

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/server/terminal"
	"github.com/keyhole-dev/keyhole/tools"
	"github.com/keyhole-dev/keyhole/vault"
)

// Log is what reports read of the audit log; *audit.Log satisfies it.
type Log interface {
	Stream(ctx context.Context, f audit.Filter, fn func(audit.Record) error) error
	Get(seq uint64) (audit.Record, error)
	Usage(ctx context.Context, f audit.UsageFilter, fn func(audit.Usage) error) error
	Calls(ctx context.Context, f audit.CallFilter, fn func(audit.Call) error) error
}

var _ Log = (*audit.Log)(nil)

// Sources are what a report reads. None of it holds a secret's value.
type Sources struct {
	Log Log
	// Config is the config the report judges scopes and tools by.
	Config *config.Loaded
	// Secrets is the metadata of every secret in the vault.
	Secrets []vault.Meta
	// Sessions are the stored session records (labels, states, why a
	// session ended), when they could be read; SessionsNote says why not.
	Sessions     []policy.SessionInfo
	SessionsNote string
	// Now is the time of the report.
	Now time.Time
}

// DefaultWindow is how far back a report looks for other sessions.
const DefaultWindow = 30 * 24 * time.Hour

// internal reports whether a record is keyhole's own (an admin change, an
// access request, a new chain), not an agent's call.
func internal(tool string) bool { return strings.HasPrefix(tool, "keyhole.") }

// toolInfo is what reports know of a configured tool.
type toolInfo struct {
	Name   string
	Kind   string
	Secret string
	// Upstream is the host (http) or s3://bucket (s3) the tool calls.
	Upstream string
	// Kinds are the credential kinds the tool can send (tools.CredentialKinds).
	Kinds []string
	// Fields is response.fields; nil when the whole response reaches the agent.
	Fields []string
	// Templated tools fix their method and path.
	Templated bool
}

// world is the config as reports read it: tools, their secrets, and the
// rules of every scope.
type world struct {
	cfg     *config.Loaded
	tools   map[string]toolInfo
	scopes  []string
	rules   map[string][]policy.Rule
	secrets map[string]vault.Meta
	// bySecret lists the tools that use each secret, sorted.
	bySecret map[string][]string
	// sessions are the stored session records by id.
	sessions map[string]policy.SessionInfo
}

func newWorld(src *Sources) *world {
	w := &world{cfg: src.Config, tools: map[string]toolInfo{}, rules: map[string][]policy.Rule{},
		secrets: map[string]vault.Meta{}, bySecret: map[string][]string{}, sessions: map[string]policy.SessionInfo{}}
	for _, m := range src.Secrets {
		w.secrets[m.Name] = m
	}
	for _, s := range src.Sessions {
		w.sessions[s.ID] = s
	}
	if src.Config == nil {
		return w
	}
	for name, t := range src.Config.Tools {
		raw := src.Config.Config.Tools[name]
		info := toolInfo{Name: name, Kind: t.Kind(), Secret: t.SecretName(), Kinds: tools.CredentialKinds(t.Kind(), raw.Credential),
			Fields: raw.Response.Fields, Templated: t.Info().Method != ""}
		if pi := t.Info(); pi.Bucket != "" {
			info.Upstream = "s3://" + pi.Bucket
		} else {
			info.Upstream = pi.Host
		}
		w.tools[name] = info
		w.bySecret[info.Secret] = append(w.bySecret[info.Secret], name)
	}
	for _, tl := range w.bySecret {
		slices.Sort(tl)
	}
	w.scopes = src.Config.Policy.ScopeNames()
	for _, name := range w.scopes {
		sc, _ := src.Config.Policy.Scope(name)
		w.rules[name] = sc.Rules()
	}
	return w
}

// scope returns the compiled scope, if the config has it.
func (w *world) scope(name string) (*policy.Scope, bool) {
	if w.cfg == nil {
		return nil, false
	}
	return w.cfg.Policy.Scope(name)
}

// secretOf returns the secret of a configured tool, or "".
func (w *world) secretOf(tool string) string { return w.tools[tool].Secret }

// secretsOf returns the secrets a scope's tools use, sorted.
func (w *world) secretsOf(scope string) []string {
	set := map[string]bool{}
	for _, r := range w.rules[scope] {
		if s := w.secretOf(r.Tool); s != "" {
			set[s] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// scopesReaching returns the scopes that grant a tool of secret, and
// through which tools.
func (w *world) scopesReaching(secret string) []ScopeReach {
	var out []ScopeReach
	for _, sc := range w.scopes {
		set := map[string]bool{}
		for _, r := range w.rules[sc] {
			if w.secretOf(r.Tool) == secret {
				set[r.Tool] = true
			}
		}
		if len(set) > 0 {
			out = append(out, ScopeReach{Scope: sc, Tools: slices.Sorted(maps.Keys(set))})
		}
	}
	return out
}

// ScopeReach is a scope that reaches a secret, and through which tools.
type ScopeReach struct {
	Scope string   `json:"scope"`
	Tools []string `json:"tools"`
}

// textIndex maps each grant text of a scope's rules to the rule and the
// method or action it names. Two rules with one text: the first (as
// Decide picks it).
type ruleRef struct{ rule, at int }

func textIndex(rules []policy.Rule) map[string]ruleRef {
	out := map[string]ruleRef{}
	for i, r := range rules {
		for j, t := range r.Texts {
			if _, ok := out[t]; !ok {
				out[t] = ruleRef{i, j}
			}
		}
	}
	return out
}

// ruleLine is one method or action of a rule: "GET /repos/*".
func ruleLine(r policy.Rule, at int) string {
	if r.Kind == "s3" {
		return r.Actions[at] + " " + prefixText(r.Prefix)
	}
	return r.Methods[at] + " " + r.Pattern
}

func prefixText(p policy.S3Prefix) string {
	if p.Whole() {
		return `"" (the whole bucket)`
	}
	return p.Text
}

// lineWrites reports whether the method or action at changes something.
func lineWrites(r policy.Rule, at int) bool {
	return r.Kind == "http" && policy.IsWriteMethod(r.Methods[at])
}

func lineDeletes(r policy.Rule, at int) bool {
	return r.Kind == "http" && r.Methods[at] == "DELETE"
}

// requestText describes a recorded call's request: "GET /repos/acme/api",
// "list reports/2026/", or the tool alone when none was recorded.
func requestText(method, path, action, key string) string {
	switch {
	case action != "":
		if key == "" {
			return action + ` ""`
		}
		return action + " " + key
	case method != "":
		return method + " " + path
	}
	return "-"
}

// agentOf names the agent of a session for counting distinct agents: its
// label when a person gave it one, else its client's name. keyhole labels
// the sessions of `keyhole stdio` itself ("stdio", "stdio pid 942"): those
// labels name a process, not an agent.
func agentOf(label, client string) string {
	if label != "" && label != "stdio" && !strings.HasPrefix(label, "stdio pid ") {
		return label
	}
	name, _, _ := strings.Cut(client, "/")
	if name == "" {
		return "(unnamed client)"
	}
	return name
}

// Counted is a value and how often it was seen.
type Counted struct {
	Value string `json:"value"`
	Count int    `json:"count"`
}

// countedOf lists a count map, most frequent first, then by value.
func countedOf(m map[string]int) []Counted {
	out := make([]Counted, 0, len(m))
	for v, n := range m {
		out = append(out, Counted{v, n})
	}
	slices.SortFunc(out, func(a, b Counted) int {
		if a.Count != b.Count {
			return b.Count - a.Count
		}
		return strings.Compare(a.Value, b.Value)
	})
	return out
}

// listCounted writes "a ×3, b ×1", at most max of them.
func listCounted(cs []Counted, max int) string {
	var parts []string
	for i, c := range cs {
		if i == max {
			parts = append(parts, fmt.Sprintf("%d more", len(cs)-max))
			break
		}
		if c.Count > 1 {
			parts = append(parts, fmt.Sprintf("%s ×%d", c.Value, c.Count))
		} else {
			parts = append(parts, c.Value)
		}
	}
	return strings.Join(parts, ", ")
}

// clean makes agent-chosen text safe for a terminal or a document
// (terminal.Escape); JSON output keeps the text exact.
func clean(s string) string { return terminal.Escape(s) }

// plural writes "1 call", "2 calls".
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}

// human writes a duration as a person reads it: "42 minutes", "3 days".
func human(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	switch {
	case d < time.Minute:
		return plural(int(d.Round(time.Second)/time.Second), "second")
	case d < 2*time.Hour:
		return plural(int(d.Round(time.Minute)/time.Minute), "minute")
	case d < 48*time.Hour:
		return plural(int(d.Round(time.Hour)/time.Hour), "hour")
	}
	return plural(int(d.Round(24*time.Hour)/(24*time.Hour)), "day")
}

// stamp writes a time for text output: UTC, to the second.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// days is a duration in whole days, for facts; never negative (a time a
// moment after the report's is 0 days ago).
func days(d time.Duration) int { return max(0, int(d/(24*time.Hour))) }

// joinAnd writes "a", "a and b", "a, b and c".
func joinAnd(items []string) string {
	switch len(items) {
	case 0:
		return ""
	case 1:
		return items[0]
	}
	return strings.Join(items[:len(items)-1], ", ") + " and " + items[len(items)-1]
}

// NoCalls is a Log in which no call was ever recorded: for the reach of a
// config before anything ran.
var NoCalls Log = noCalls{}

type noCalls struct{}

func (noCalls) Stream(context.Context, audit.Filter, func(audit.Record) error) error { return nil }
func (noCalls) Get(uint64) (audit.Record, error)                                     { return audit.Record{}, audit.ErrNotFound }
func (noCalls) Usage(context.Context, audit.UsageFilter, func(audit.Usage) error) error {
	return nil
}
func (noCalls) Calls(context.Context, audit.CallFilter, func(audit.Call) error) error { return nil }
